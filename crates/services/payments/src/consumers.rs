//! Payments' event handler: `order-events`, `inventory-events` and `shipment-events` into the use
//! cases of [`crate::app`].

use async_trait::async_trait;
use emporium_events::{Envelope, Event};
use emporium_platform::{
    bus::consumer::{EventHandler, HandlerError},
    storage::Tx,
};

use crate::app::{self, Authorizer};

/// Handles every event payments consumes; ignores the rest of those topics.
pub struct PaymentsHandler {
    pub authorizer: Authorizer,
}

#[async_trait]
impl EventHandler for PaymentsHandler {
    async fn handle(&self, tx: &mut Tx, envelope: &Envelope) -> Result<(), HandlerError> {
        match &envelope.event {
            Event::OrderCreated(e) => app::order_created(tx, &self.authorizer, e).await?,
            Event::InventoryReserved(e) => app::inventory_reserved(tx, &self.authorizer, e).await?,
            Event::OrderCancelled(e) => app::order_cancelled(tx, e).await?,
            Event::ShipmentDispatched(e) => app::shipment_dispatched(tx, e).await?,
            _ => {}
        }
        Ok(())
    }
}
