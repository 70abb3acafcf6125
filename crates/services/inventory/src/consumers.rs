//! Inventory's event handler: `product-events` and `order-events` into the use cases of
//! [`crate::app`].

use async_trait::async_trait;
use emporium_events::{Envelope, Event};
use emporium_platform::{
    bus::consumer::{EventHandler, HandlerError},
    storage::Tx,
};

use crate::app::{self, Error};

/// Handles every event inventory consumes; ignores the rest of those topics.
pub struct InventoryHandler;

#[async_trait]
impl EventHandler for InventoryHandler {
    async fn handle(&self, tx: &mut Tx, envelope: &Envelope) -> Result<(), HandlerError> {
        let result = match &envelope.event {
            Event::ProductCreated(e) => app::product_created(tx, e).await,
            Event::ProductDeleted(e) => app::product_deleted(tx, e).await,
            Event::OrderCreated(e) => app::order_created(tx, e).await,
            Event::OrderCancelled(e) => app::order_cancelled(tx, e).await,
            Event::OrderShipped(e) => app::order_shipped(tx, e).await,
            _ => Ok(()),
        };
        result.map_err(|e| match e {
            Error::Storage(e) => e.into(),
            // An unknown product (retried until its ProductCreated arrives) and a bad event alike:
            // retried, then dead-lettered.
            other => HandlerError::Failed(other.to_string()),
        })
    }
}
