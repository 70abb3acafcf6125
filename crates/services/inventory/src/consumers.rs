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

/// The event types [`InventoryHandler`] handles: exactly those its `handle` matches (the consumer
/// passes over the rest of its topics' events without decoding them).
pub const EVENT_TYPES: &[&str] = &[
    "ProductCreated",
    "ProductDeleted",
    "OrderCreated",
    "OrderCancelled",
    "OrderShipped",
];

#[async_trait]
impl EventHandler for InventoryHandler {
    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(EVENT_TYPES)
    }

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

#[cfg(test)]
mod tests {
    use emporium_events::Topic;
    use emporium_platform::bus::consumer::foreign_event_types;

    use super::EVENT_TYPES;

    #[test]
    fn every_event_type_handled_is_an_event_of_a_topic_consumed() {
        let topics = [Topic::Product, Topic::Order];
        assert_eq!(
            foreign_event_types(EVENT_TYPES, &topics),
            Vec::<&str>::new()
        );
    }
}
