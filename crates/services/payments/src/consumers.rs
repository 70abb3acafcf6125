//! Payments' event handler: `order-events` and `inventory-events` into the use cases of
//! [`crate::app`].

use async_trait::async_trait;
use emporium_events::{Envelope, Event};
use emporium_platform::{
    bus::consumer::{EventHandler, HandlerError},
    storage::Tx,
};

use crate::app::{self, Authorizer, Error};

/// Handles every event payments consumes; ignores the rest of those topics.
pub struct PaymentsHandler {
    pub authorizer: Authorizer,
}

#[async_trait]
impl EventHandler for PaymentsHandler {
    async fn handle(&self, tx: &mut Tx, envelope: &Envelope) -> Result<(), HandlerError> {
        let result = match &envelope.event {
            Event::OrderCreated(e) => app::order_created(tx, &self.authorizer, e).await,
            Event::InventoryReserved(e) => app::inventory_reserved(tx, &self.authorizer, e).await,
            Event::OrderCancelled(e) => Ok(app::order_cancelled(tx, e).await?),
            Event::OrderShipped(e) => Ok(app::order_shipped(tx, e).await?),
            _ => Ok(()),
        };
        result.map_err(|e| match e {
            // Not the event's fault and not for the dead-letter topic: the consumer pauses the
            // partition and delivers the event again, by which time the breaker may have closed.
            Error::Deferred => HandlerError::Infra(e.to_string()),
            Error::Storage(e) => e.into(),
        })
    }
}
