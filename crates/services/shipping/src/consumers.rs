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

/// The event types [`ShippingHandler`] handles: exactly those its `handle` matches (the consumer
/// passes over the rest of its topics' events without decoding them).
pub const EVENT_TYPES: &[&str] = &["ShipmentRequested", "OrderCancelled"];

#[async_trait]
impl EventHandler for ShippingHandler {
    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(EVENT_TYPES)
    }

    async fn handle(&self, tx: &mut Tx, envelope: &Envelope) -> Result<(), HandlerError> {
        match &envelope.event {
            Event::ShipmentRequested(e) => app::shipment_requested(tx, e).await?,
            Event::OrderCancelled(e) => app::order_cancelled(tx, e).await?,
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use emporium_events::Topic;
    use emporium_platform::bus::consumer::foreign_event_types;

    use super::EVENT_TYPES;

    #[test]
    fn every_event_type_handled_is_an_event_of_a_topic_consumed() {
        let topics = [Topic::ShippingRequest, Topic::Order];
        assert_eq!(
            foreign_event_types(EVENT_TYPES, &topics),
            Vec::<&str>::new()
        );
    }
}
