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

/// The event types [`PaymentsHandler`] handles: exactly those its `handle` matches (the consumer
/// passes over the rest of its topics' events without decoding them).
pub const EVENT_TYPES: &[&str] = &[
    "OrderCreated",
    "InventoryReserved",
    "OrderCancelled",
    "OrderShipped",
];

#[async_trait]
impl EventHandler for PaymentsHandler {
    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(EVENT_TYPES)
    }

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

#[cfg(test)]
mod tests {
    use emporium_events::Topic;
    use emporium_platform::bus::consumer::foreign_event_types;

    use super::EVENT_TYPES;

    #[test]
    fn every_event_type_handled_is_an_event_of_a_topic_consumed() {
        let topics = [Topic::Order, Topic::Inventory];
        assert_eq!(
            foreign_event_types(EVENT_TYPES, &topics),
            Vec::<&str>::new()
        );
    }
}
