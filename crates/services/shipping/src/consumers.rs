//! Shipping's event handler: `shipping-requests` and `order-events` into the use cases of
//! [`crate::app`].

use async_trait::async_trait;
use emporium_events::{Envelope, Event};
use emporium_platform::{
    bus::consumer::{EventHandler, HandlerError},
    storage::Tx,
};

use crate::app;

/// Handles every event shipping consumes; ignores the rest of those topics.
pub struct ShippingHandler;

#[async_trait]
impl EventHandler for ShippingHandler {
    async fn handle(&self, tx: &mut Tx, envelope: &Envelope) -> Result<(), HandlerError> {
        match &envelope.event {
            Event::ShipmentRequested(e) => app::shipment_requested(tx, e).await?,
            Event::OrderCancelled(e) => app::order_cancelled(tx, e).await?,
            _ => {}
        }
        Ok(())
    }
}
