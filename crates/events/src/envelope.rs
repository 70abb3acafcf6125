//! [`Envelope`]: the JSON object every bus carries, with the metadata around an [`Event`].

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::Event;

/// An event with its metadata, as published on every bus (CONTRACT §4). `eventType` and
/// `payload` together select the event; a consumer rejects an unknown `eventType` or a `version`
/// other than the one it knows for that type.
// Deserializing through any serde path (`from_json`, `serde_json::from_slice`, axum's `Json`)
// performs those checks, so a consumer never acts on a payload it would misread; such envelopes
// belong in the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Unique per event (UUIDv7); consumers deduplicate on it.
    pub event_id: Uuid,
    /// Payload schema version of this event type.
    pub version: u32,
    pub occurred_at: DateTime<Utc>,
    /// The emitting service, e.g. `orders`.
    pub source: String,
    /// Partition key: the order id for every saga event (order, inventory reservation, payment,
    /// shipment), else the product, user, promotion or notification id.
    pub aggregate_id: String,
    /// The `X-Correlation-Id` of the request that started the chain.
    pub correlation_id: String,
    /// The `eventId` this event is a reaction to; null when an API call or a timer caused it.
    pub causation_id: Option<Uuid>,
    /// `eventType` and `payload`.
    #[serde(flatten)]
    pub event: Event,
}

impl Envelope {
    /// Wraps an event caused by an API call or a timer (`causation_id` `None`) or by another event.
    /// The version and aggregate id come from the event, so they cannot disagree with it.
    pub fn new(
        source: &str,
        correlation_id: &str,
        causation_id: Option<Uuid>,
        event: Event,
    ) -> Envelope {
        Envelope {
            event_id: Uuid::now_v7(),
            version: event.version(),
            occurred_at: Utc::now(),
            source: source.to_owned(),
            aggregate_id: event.aggregate_id(),
            correlation_id: correlation_id.to_owned(),
            causation_id,
            event,
        }
    }

    /// Wraps the event a handler emits in reaction to `self`: same correlation id, caused by
    /// `self`.
    pub fn caused_by(&self, source: &str, event: Event) -> Envelope {
        Envelope::new(source, &self.correlation_id, Some(self.event_id), event)
    }

    /// The wire form.
    ///
    /// Serialising these types cannot fail in practice (string keys only, no fallible
    /// `Serialize` impls), but the error is returned rather than hidden so that a future type
    /// that can fail does not publish an empty message.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Parses the wire form. Fails on malformed JSON, an unknown `eventType`, a `version` other
    /// than [`Event::version`] for that type (the message names the type and both versions), or a
    /// payload that does not match its type.
    pub fn from_json(bytes: &[u8]) -> Result<Envelope, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The envelope as it arrives, before the payload is trusted: the version is checked against the
/// event type before the payload is parsed, so a newer producer's payload is reported as an
/// unsupported version rather than as a confusing field error.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEnvelope {
    event_id: Uuid,
    event_type: String,
    version: u32,
    occurred_at: DateTime<Utc>,
    source: String,
    aggregate_id: String,
    correlation_id: String,
    causation_id: Option<Uuid>,
    payload: serde_json::Value,
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireEnvelope::deserialize(deserializer)?;
        let info = Event::info_of(&wire.event_type)
            .ok_or_else(|| D::Error::custom(format!("unknown eventType {:?}", wire.event_type)))?;
        if wire.version != info.version {
            return Err(D::Error::custom(format!(
                "{} version {} is not supported: this build knows version {}",
                info.event_type, wire.version, info.version
            )));
        }

        let mut tagged = serde_json::Map::new();
        tagged.insert("eventType".into(), wire.event_type.into());
        tagged.insert("payload".into(), wire.payload);
        let event = Event::deserialize(serde_json::Value::Object(tagged))
            .map_err(|e| D::Error::custom(format!("{} payload: {e}", info.event_type)))?;

        Ok(Envelope {
            event_id: wire.event_id,
            version: wire.version,
            occurred_at: wire.occurred_at,
            source: wire.source,
            aggregate_id: wire.aggregate_id,
            correlation_id: wire.correlation_id,
            causation_id: wire.causation_id,
            event,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payloads::*;
    use crate::{
        CancellationReason, Channel, DeclineReason, Money, Preferences, Priority, Role, Topic,
    };
    use serde_json::{Value, json};

    /// One event of every type; the saga ones all belong to `order_id`.
    fn one_of_each(order_id: Uuid) -> Vec<Event> {
        let user_id = Uuid::now_v7();
        let product_id = Uuid::now_v7();
        let payment_id = Uuid::now_v7();
        let shipment_id = Uuid::now_v7();
        let usd = |amount| Money::new(amount, "USD");
        let lines = vec![StockLine {
            product_id,
            quantity: 2,
        }];
        vec![
            Event::UserRegistered(UserRegistered {
                user_id,
                email: "ada@example.com".into(),
                name: "Ada".into(),
                phone: None,
                role: Role::Customer,
                preferences: Preferences::default(),
            }),
            Event::UserUpdated(UserUpdated {
                user_id,
                email: "ada@example.com".into(),
                name: "Ada L.".into(),
                phone: Some("+441234".into()),
                preferences: Preferences::default(),
            }),
            Event::ProductCreated(ProductCreated {
                product_id,
                name: "Mug".into(),
                description: Some("Blue".into()),
                category: "kitchen".into(),
                price: usd(999),
                initial_stock: 10,
            }),
            Event::ProductUpdated(ProductUpdated {
                product_id,
                name: "Mug".into(),
                description: None,
                category: "kitchen".into(),
                price: usd(1099),
            }),
            Event::ProductDeleted(ProductDeleted { product_id }),
            Event::OrderCreated(OrderCreated {
                order_id,
                user_id,
                items: vec![OrderLine {
                    product_id,
                    quantity: 2,
                    unit_price: usd(999),
                }],
                total: usd(1998),
                payment_token: "tok_visa".into(),
            }),
            Event::OrderConfirmed(OrderConfirmed {
                order_id,
                user_id,
                total: usd(1998),
            }),
            Event::OrderCancelled(OrderCancelled {
                order_id,
                user_id,
                reason: CancellationReason::CustomerRequest,
            }),
            Event::OrderShipped(OrderShipped {
                order_id,
                user_id,
                shipment_id,
                tracking_number: "EMP123".into(),
            }),
            Event::OrderDelivered(OrderDelivered {
                order_id,
                user_id,
                shipment_id,
            }),
            Event::InventoryReserved(InventoryReserved {
                order_id,
                items: lines.clone(),
            }),
            Event::InventoryRejected(InventoryRejected {
                order_id,
                product_id,
                requested: 5,
                available: 1,
            }),
            Event::InventoryReleased(InventoryReleased {
                order_id,
                items: lines.clone(),
            }),
            Event::InventoryCommitted(InventoryCommitted {
                order_id,
                items: lines,
            }),
            Event::StockAdjusted(StockAdjusted {
                product_id,
                delta: -3,
                available: 7,
                reserved: 2,
                reason: Some("breakage".into()),
            }),
            Event::LowStock(LowStock {
                product_id,
                available: 1,
                threshold: 5,
            }),
            Event::PaymentAuthorized(PaymentAuthorized {
                order_id,
                payment_id,
                amount: usd(1998),
            }),
            Event::PaymentFailed(PaymentFailed {
                order_id,
                payment_id,
                amount: usd(1998),
                reason: DeclineReason::CardDeclined,
            }),
            Event::PaymentCaptured(PaymentCaptured {
                order_id,
                payment_id,
                amount: usd(1998),
            }),
            Event::PaymentVoided(PaymentVoided {
                order_id,
                payment_id,
                amount: usd(1998),
            }),
            Event::ShipmentRequested(ShipmentRequested {
                order_id,
                user_id,
                shipping_address: Address {
                    name: "Ada Lovelace".into(),
                    line1: "12 Analytical Row".into(),
                    line2: None,
                    city: "London".into(),
                    postal_code: "N1 9GU".into(),
                    country: "GB".into(),
                },
            }),
            Event::ShipmentCreated(ShipmentCreated {
                order_id,
                shipment_id,
                tracking_number: "EMP123".into(),
                carrier: "SimPost".into(),
            }),
            Event::ShipmentCancelled(ShipmentCancelled {
                order_id,
                shipment_id,
            }),
            Event::ShipmentDispatched(ShipmentDispatched {
                order_id,
                shipment_id,
                tracking_number: "EMP123".into(),
            }),
            Event::ShipmentDelivered(ShipmentDelivered {
                order_id,
                shipment_id,
            }),
            Event::PromotionLaunched(PromotionLaunched {
                promotion_id: Uuid::now_v7(),
                name: "Spring".into(),
                message: "20% off mugs".into(),
                product_ids: vec![product_id],
                category: None,
                scheduled_for: Utc::now(),
            }),
            Event::RecommendationsIssued(RecommendationsIssued {
                user_id,
                product_ids: vec![product_id],
            }),
            Event::NotificationSent(NotificationSent {
                notification_id: Uuid::now_v7(),
                user_id: Some(user_id),
                template: "order_confirmed".into(),
                channel: Channel::Email,
                priority: Priority::Critical,
            }),
            Event::NotificationFailed(NotificationFailed {
                notification_id: Uuid::now_v7(),
                user_id: None,
                template: "promotion".into(),
                channel: Channel::Sms,
                error: "webhook returned 500".into(),
            }),
        ]
    }

    fn sample_envelope() -> Envelope {
        Envelope::new(
            "orders",
            "corr-1",
            None,
            Event::OrderCancelled(OrderCancelled {
                order_id: Uuid::now_v7(),
                user_id: Uuid::now_v7(),
                reason: CancellationReason::Timeout,
            }),
        )
    }

    fn envelope_json(envelope: &Envelope) -> Value {
        serde_json::from_slice(&envelope.to_json().unwrap()).unwrap()
    }

    #[test]
    fn samples_cover_every_event_type() {
        let types: Vec<&str> = one_of_each(Uuid::now_v7())
            .iter()
            .map(Event::event_type)
            .collect();
        assert_eq!(types, Event::TYPES);
    }

    #[test]
    fn every_event_type_round_trips_through_json() {
        for event in one_of_each(Uuid::now_v7()) {
            let envelope = Envelope::new("test", "corr-1", Some(Uuid::now_v7()), event);
            let bytes = envelope.to_json().unwrap();
            let back = Envelope::from_json(&bytes).unwrap();
            assert_eq!(back, envelope, "{}", String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn json_has_exactly_the_contract_keys() {
        let json = envelope_json(&sample_envelope());
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut expected = [
            "eventId",
            "eventType",
            "version",
            "occurredAt",
            "source",
            "aggregateId",
            "correlationId",
            "causationId",
            "payload",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected);
        // Null rather than absent: the contract lists the key on every event.
        assert_eq!(json["causationId"], Value::Null);
        assert_eq!(json["eventType"], "OrderCancelled");
        assert_eq!(json["version"], 1);
        assert_eq!(json["payload"]["reason"], "TIMEOUT");
    }

    #[test]
    fn envelope_takes_version_and_aggregate_from_the_event() {
        let envelope = sample_envelope();
        assert_eq!(envelope.version, envelope.event.version());
        assert_eq!(envelope.aggregate_id, envelope.event.aggregate_id());
        assert_eq!(envelope.event_id.get_version_num(), 7);
    }

    #[test]
    fn saga_events_use_the_order_id_as_aggregate() {
        let order_id = Uuid::now_v7();
        let not_saga = ["StockAdjusted", "LowStock"];
        let mut checked = 0;
        for event in one_of_each(order_id) {
            let saga_topic = matches!(
                event.topic(),
                Topic::Order
                    | Topic::Inventory
                    | Topic::Payment
                    | Topic::Shipment
                    | Topic::ShippingRequest
            );
            if saga_topic && !not_saga.contains(&event.event_type()) {
                assert_eq!(
                    event.aggregate_id(),
                    order_id.to_string(),
                    "{}",
                    event.event_type()
                );
                checked += 1;
            } else {
                assert_ne!(event.aggregate_id(), order_id.to_string());
            }
        }
        // 5 order + 4 inventory + 4 payment + 4 shipment events + the shipping request.
        assert_eq!(checked, 18);
    }

    #[test]
    fn caused_by_keeps_the_correlation_and_points_at_the_cause() {
        let cause = sample_envelope();
        let effect = cause.caused_by(
            "inventory",
            Event::InventoryReleased(InventoryReleased {
                order_id: Uuid::now_v7(),
                items: vec![],
            }),
        );
        assert_eq!(effect.correlation_id, cause.correlation_id);
        assert_eq!(effect.causation_id, Some(cause.event_id));
        assert_eq!(effect.source, "inventory");
        assert_ne!(effect.event_id, cause.event_id);
    }

    #[test]
    fn a_version_this_build_does_not_know_is_rejected() {
        let mut json = envelope_json(&sample_envelope());
        json["version"] = json!(2);
        // A v2 payload may have changed shape; the version must be reported, not the shape.
        json["payload"] = json!({"orderId": "not even a uuid"});
        let err = Envelope::from_json(json.to_string().as_bytes()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("OrderCancelled"), "{message}");
        assert!(message.contains("version 2"), "{message}");
        assert!(message.contains("version 1"), "{message}");
    }

    #[test]
    fn an_unknown_event_type_is_rejected() {
        let mut json = envelope_json(&sample_envelope());
        json["eventType"] = json!("OrderExploded");
        let err = Envelope::from_json(json.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("OrderExploded"), "{err}");
    }

    #[test]
    fn a_payload_that_does_not_match_its_type_is_rejected() {
        let mut json = envelope_json(&sample_envelope());
        json["payload"]["reason"] = json!("BORED");
        let err = Envelope::from_json(json.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("OrderCancelled payload"), "{err}");
    }

    #[test]
    fn a_missing_causation_id_reads_as_none() {
        let mut json = envelope_json(&sample_envelope());
        json.as_object_mut().unwrap().remove("causationId");
        let envelope = Envelope::from_json(json.to_string().as_bytes()).unwrap();
        assert_eq!(envelope.causation_id, None);
    }
}
