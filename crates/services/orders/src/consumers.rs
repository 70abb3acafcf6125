//! The one consumer of the orders service: the catalog read model from `product-events`, and the
//! saga's progress from `inventory-events`, `payment-events` and `shipment-events`.

use async_trait::async_trait;
use chrono::Utc;
use emporium_events::{Envelope, Event, Topic};
use emporium_platform::{
    bus::consumer::{EventHandler, HandlerError},
    storage::Tx,
};
use uuid::Uuid;

use crate::{
    app::{self, Observation},
    domain::{Input, PaymentStatus, ShipmentStatus},
    store::{self, PaymentSummary, ShipmentSummary},
};

/// The topics [`OrdersConsumer`] reads.
pub const TOPICS: &[Topic] = &[
    Topic::Product,
    Topic::Inventory,
    Topic::Payment,
    Topic::Shipment,
];

pub struct OrdersConsumer;

/// The event types [`OrdersConsumer`] handles: exactly those its `handle` matches (the consumer
/// passes over the rest of its topics' events without decoding them).
pub const EVENT_TYPES: &[&str] = &[
    "ProductCreated",
    "ProductUpdated",
    "ProductDeleted",
    "InventoryReserved",
    "InventoryRejected",
    "InventoryReleased",
    "InventoryCommitted",
    "PaymentAuthorized",
    "PaymentFailed",
    "PaymentCaptured",
    "PaymentVoided",
    "ShipmentCreated",
    "ShipmentDispatched",
    "ShipmentDelivered",
    "ShipmentCancelled",
];

#[async_trait]
impl EventHandler for OrdersConsumer {
    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(EVENT_TYPES)
    }

    async fn handle(&self, tx: &mut Tx, envelope: &Envelope) -> Result<(), HandlerError> {
        let now = Utc::now().timestamp_millis();
        match &envelope.event {
            Event::ProductCreated(e) => {
                store::upsert_product(tx.conn(), e.product_id, &e.name, &e.price, now).await?;
            }
            Event::ProductUpdated(e) => {
                store::upsert_product(tx.conn(), e.product_id, &e.name, &e.price, now).await?;
            }
            Event::ProductDeleted(e) => {
                store::delete_product(tx.conn(), e.product_id, now).await?;
            }
            event => {
                if let Some(seen) = observation(envelope, event) {
                    app::observe(tx, seen).await?;
                }
            }
        }
        Ok(())
    }
}

/// What a saga event means to its order; `None` for events that are not about an order.
fn observation(envelope: &Envelope, event: &Event) -> Option<Observation> {
    let payment = |id: Uuid, status| Some(PaymentSummary { id, status });
    let shipment = |id: Uuid, status, tracking: Option<&String>| {
        Some(ShipmentSummary {
            id,
            status,
            tracking_number: tracking.cloned(),
        })
    };
    let (order_id, input, payment, shipment) = match event {
        Event::InventoryReserved(e) => (e.order_id, Some(Input::InventoryReserved), None, None),
        Event::InventoryRejected(e) => (e.order_id, Some(Input::InventoryRejected), None, None),
        Event::InventoryReleased(e) => (e.order_id, None, None, None),
        Event::InventoryCommitted(e) => (e.order_id, None, None, None),
        Event::PaymentAuthorized(e) => (
            e.order_id,
            Some(Input::PaymentAuthorized),
            payment(e.payment_id, PaymentStatus::Authorized),
            None,
        ),
        Event::PaymentFailed(e) => (
            e.order_id,
            Some(Input::PaymentFailed),
            payment(e.payment_id, PaymentStatus::Declined),
            None,
        ),
        Event::PaymentCaptured(e) => (
            e.order_id,
            None,
            payment(e.payment_id, PaymentStatus::Captured),
            None,
        ),
        Event::PaymentVoided(e) => (
            e.order_id,
            None,
            payment(e.payment_id, PaymentStatus::Voided),
            None,
        ),
        Event::ShipmentCreated(e) => (
            e.order_id,
            Some(Input::ShipmentCreated),
            None,
            shipment(
                e.shipment_id,
                ShipmentStatus::Ready,
                Some(&e.tracking_number),
            ),
        ),
        Event::ShipmentDispatched(e) => (
            e.order_id,
            Some(Input::ShipmentDispatched),
            None,
            shipment(
                e.shipment_id,
                ShipmentStatus::Dispatched,
                Some(&e.tracking_number),
            ),
        ),
        Event::ShipmentDelivered(e) => (
            e.order_id,
            Some(Input::ShipmentDelivered),
            None,
            shipment(e.shipment_id, ShipmentStatus::Delivered, None),
        ),
        Event::ShipmentCancelled(e) => (
            e.order_id,
            Some(Input::ShipmentCancelled),
            None,
            shipment(e.shipment_id, ShipmentStatus::Cancelled, None),
        ),
        // Stock levels (keyed by product) and everything on other topics.
        _ => return None,
    };
    let rejected_product = match event {
        Event::InventoryRejected(e) => Some(e.product_id),
        _ => None,
    };
    Some(Observation {
        order_id,
        event: event.event_type(),
        occurred_at: envelope.occurred_at.timestamp_millis(),
        input,
        rejected_product,
        payment,
        shipment,
    })
}

#[cfg(test)]
mod tests {
    use emporium_platform::bus::consumer::foreign_event_types;

    use super::{EVENT_TYPES, TOPICS};

    #[test]
    fn every_event_type_handled_is_an_event_of_a_topic_consumed() {
        let topics = TOPICS;
        assert_eq!(foreign_event_types(EVENT_TYPES, topics), Vec::<&str>::new());
    }
}
