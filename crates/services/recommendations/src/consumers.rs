//! The recommendations event handler: `product-events`, `inventory-events` and `order-events`
//! into the use cases of [`crate::app`]. Each event is applied once (the consumer's inbox).

use std::time::Duration;

use async_trait::async_trait;
use emporium_events::{Envelope, Event, ProductCreated, ProductUpdated};
use emporium_platform::{
    bus::consumer::{EventHandler, HandlerError},
    storage::Tx,
};

use crate::{
    app,
    store::{ProductChange, now_millis},
};

/// Handles every event recommendations consumes; ignores the rest of those topics.
pub struct RecommendationsHandler {
    /// A user gets the recommendations email at most once per this period.
    pub email_period: Duration,
}

/// The event types [`RecommendationsHandler`] handles: exactly those its `handle` matches (the consumer
/// passes over the rest of its topics' events without decoding them).
pub const EVENT_TYPES: &[&str] = &[
    "ProductCreated",
    "ProductUpdated",
    "ProductDeleted",
    "StockAdjusted",
    "LowStock",
    "InventoryRejected",
    "OrderCreated",
    "OrderConfirmed",
    "OrderCancelled",
];

#[async_trait]
impl EventHandler for RecommendationsHandler {
    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(EVENT_TYPES)
    }

    async fn handle(&self, tx: &mut Tx, envelope: &Envelope) -> Result<(), HandlerError> {
        // When the producer says it happened: product timestamps, and the order of stock
        // announcements that travel on different partitions.
        let at = envelope.occurred_at.timestamp_millis();
        match &envelope.event {
            Event::ProductCreated(ProductCreated {
                product_id,
                name,
                description,
                category,
                price,
                ..
            })
            | Event::ProductUpdated(ProductUpdated {
                product_id,
                name,
                description,
                category,
                price,
            }) => {
                let change = ProductChange {
                    id: *product_id,
                    name,
                    description: description.as_deref(),
                    category,
                    price,
                    at,
                };
                app::product_described(tx, &change).await?
            }
            Event::ProductDeleted(e) => app::product_deleted(tx, e, at).await?,
            Event::StockAdjusted(e) => {
                app::stock_announced(tx, e.product_id, e.available, at).await?
            }
            Event::LowStock(e) => app::stock_announced(tx, e.product_id, e.available, at).await?,
            Event::InventoryRejected(e) => {
                app::stock_announced(tx, e.product_id, e.available, at).await?
            }
            Event::OrderCreated(e) => app::order_created(tx, e, now_millis()).await?,
            Event::OrderConfirmed(e) => {
                app::order_confirmed(tx, e, now_millis(), self.email_period).await?
            }
            Event::OrderCancelled(e) => app::order_cancelled(tx, e, now_millis()).await?,
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
        let topics = [Topic::Product, Topic::Inventory, Topic::Order];
        assert_eq!(
            foreign_event_types(EVENT_TYPES, &topics),
            Vec::<&str>::new()
        );
    }
}
