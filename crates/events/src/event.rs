//! [`Event`]: the closed set of events, and the one table that says, per event type, its topic,
//! schema version, aggregate and emitter.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Topic;
use crate::payloads::*;

/// What the code knows about one event type, from the table in this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventInfo {
    /// The `eventType` string, e.g. `OrderCreated`.
    pub event_type: &'static str,
    pub topic: Topic,
    /// The payload schema version this build produces and accepts.
    pub version: u32,
    /// The payload field whose value is the `aggregateId` (snake_case, as in Rust).
    pub aggregate_field: &'static str,
    /// Which service emits it, and on what.
    pub emitted_by: &'static str,
}

// One row per event type, so adding an event or bumping a version is a one-line change and the
// enum, the metadata, the aggregate key and the schema list cannot disagree.
macro_rules! events {
    ($(
        $name:ident {
            topic: $topic:ident,
            version: $version:literal,
            aggregate: $aggregate:ident,
            emitted_by: $emitted_by:literal $(,)?
        }
    )+) => {
        /// Every event of the platform. In JSON it is the adjacently tagged pair
        /// `{"eventType": "<variant>", "payload": {...}}`, which the [`crate::Envelope`] flattens
        /// into its own object.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(tag = "eventType", content = "payload")]
        pub enum Event {
            $( $name($name), )+
        }

        impl Event {
            /// Every event type with its topic, version, aggregate and emitter.
            pub const CATALOG: &'static [EventInfo] = &[$(
                EventInfo {
                    event_type: stringify!($name),
                    topic: Topic::$topic,
                    version: $version,
                    aggregate_field: stringify!($aggregate),
                    emitted_by: $emitted_by,
                },
            )+];

            /// Every `eventType` string.
            pub const TYPES: &'static [&'static str] = &[$(stringify!($name)),+];

            /// The `eventType` string, e.g. `"OrderCreated"`.
            pub fn event_type(&self) -> &'static str {
                match self {
                    $(Self::$name(_) => stringify!($name),)+
                }
            }

            /// The topic this event is published on.
            pub fn topic(&self) -> Topic {
                match self {
                    $(Self::$name(_) => Topic::$topic,)+
                }
            }

            /// The payload schema version this build writes for this event type.
            pub fn version(&self) -> u32 {
                match self {
                    $(Self::$name(_) => $version,)+
                }
            }

            /// The envelope's `aggregateId`, which is also the partition key: the order id for
            /// every saga event, else the product, user, promotion or notification id.
            pub fn aggregate_id(&self) -> String {
                match self {
                    $(Self::$name(e) => e.$aggregate.to_string(),)+
                }
            }
        }

        /// `(event type, version, schema of its payload)` for every event type.
        pub(crate) fn payload_schemas() -> Vec<(&'static str, u32, schemars::Schema)> {
            vec![$((stringify!($name), $version, schemars::schema_for!($name)),)+]
        }
    };
}

events! {
    UserRegistered {
        topic: User, version: 1, aggregate: user_id,
        emitted_by: "users, when an account is created (registration, admin bootstrap)",
    }
    UserUpdated {
        topic: User, version: 1, aggregate: user_id,
        emitted_by: "users, on `PATCH /api/users/me`",
    }

    ProductCreated {
        topic: Product, version: 1, aggregate: product_id,
        emitted_by: "catalog, on `POST /api/products`",
    }
    ProductUpdated {
        topic: Product, version: 1, aggregate: product_id,
        emitted_by: "catalog, on `PATCH /api/products/{id}`",
    }
    ProductDeleted {
        topic: Product, version: 1, aggregate: product_id,
        emitted_by: "catalog, on `DELETE /api/products/{id}`",
    }

    OrderCreated {
        topic: Order, version: 1, aggregate: order_id,
        emitted_by: "orders, on `POST /api/orders` (starts the saga)",
    }
    OrderConfirmed {
        topic: Order, version: 1, aggregate: order_id,
        emitted_by: "orders, on `PaymentAuthorized`",
    }
    OrderCancelled {
        topic: Order, version: 1, aggregate: order_id,
        emitted_by: "orders, on `InventoryRejected`, `PaymentFailed`, customer cancel or saga timeout",
    }
    OrderShipped {
        topic: Order, version: 1, aggregate: order_id,
        emitted_by: "orders, on `ShipmentDispatched`",
    }
    OrderDelivered {
        topic: Order, version: 1, aggregate: order_id,
        emitted_by: "orders, on `ShipmentDelivered`",
    }

    InventoryReserved {
        topic: Inventory, version: 1, aggregate: order_id,
        emitted_by: "inventory, on `OrderCreated` when every line is reserved",
    }
    InventoryRejected {
        topic: Inventory, version: 1, aggregate: order_id,
        emitted_by: "inventory, on `OrderCreated` when a line cannot be reserved",
    }
    InventoryReleased {
        topic: Inventory, version: 1, aggregate: order_id,
        emitted_by: "inventory, on `OrderCancelled` after a reservation (or a late reservation)",
    }
    InventoryCommitted {
        topic: Inventory, version: 1, aggregate: order_id,
        emitted_by: "inventory, when the order ships",
    }
    StockAdjusted {
        topic: Inventory, version: 1, aggregate: product_id,
        emitted_by: "inventory, on `POST /api/inventory/{productId}/adjust` and `ProductCreated`",
    }
    LowStock {
        topic: Inventory, version: 1, aggregate: product_id,
        emitted_by: "inventory, when available stock falls to its threshold",
    }

    PaymentAuthorized {
        topic: Payment, version: 1, aggregate: order_id,
        emitted_by: "payments, on `InventoryReserved` when the provider authorizes",
    }
    PaymentFailed {
        topic: Payment, version: 1, aggregate: order_id,
        emitted_by: "payments, on `InventoryReserved` when the provider declines or stays down",
    }
    PaymentCaptured {
        topic: Payment, version: 1, aggregate: order_id,
        emitted_by: "payments, when the order ships",
    }
    PaymentVoided {
        topic: Payment, version: 1, aggregate: order_id,
        emitted_by: "payments, on `OrderCancelled` after authorization",
    }

    ShipmentRequested {
        topic: ShippingRequest, version: 1, aggregate: order_id,
        emitted_by: "orders, with `OrderConfirmed` (carries the shipping address to shipping only)",
    }
    ShipmentCreated {
        topic: Shipment, version: 1, aggregate: order_id,
        emitted_by: "shipping, on `ShipmentRequested`",
    }
    ShipmentCancelled {
        topic: Shipment, version: 1, aggregate: order_id,
        emitted_by: "shipping, on `OrderCancelled` before dispatch",
    }
    ShipmentDispatched {
        topic: Shipment, version: 1, aggregate: order_id,
        emitted_by: "shipping, after the dispatch delay or `POST /api/shipments/{id}/dispatch`",
    }
    ShipmentDelivered {
        topic: Shipment, version: 1, aggregate: order_id,
        emitted_by: "shipping, on `POST /api/shipments/{id}/deliver`",
    }

    PromotionLaunched {
        topic: Promotion, version: 1, aggregate: promotion_id,
        emitted_by: "promotions scheduler, at the promotion's start or cron time",
    }

    RecommendationsIssued {
        topic: Recommendation, version: 1, aggregate: user_id,
        emitted_by: "recommendations, on `OrderConfirmed` when the user got no recommendations email within `recommendations.email_period`",
    }

    NotificationSent {
        topic: Notification, version: 1, aggregate: notification_id,
        emitted_by: "notifications, after a message went out",
    }
    NotificationFailed {
        topic: Notification, version: 1, aggregate: notification_id,
        emitted_by: "notifications, when a message fails after its retries",
    }
}

impl Event {
    /// What the code knows about an `eventType` string; `None` for a type this build has never
    /// heard of.
    pub fn info_of(event_type: &str) -> Option<&'static EventInfo> {
        Self::CATALOG.iter().find(|i| i.event_type == event_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CancellationReason, Money};
    use uuid::Uuid;

    #[test]
    fn catalog_topics_match_the_contract_table() {
        let contract: &[(&str, &[&str])] = &[
            ("user-events", &["UserRegistered", "UserUpdated"]),
            (
                "product-events",
                &["ProductCreated", "ProductUpdated", "ProductDeleted"],
            ),
            (
                "order-events",
                &[
                    "OrderCreated",
                    "OrderConfirmed",
                    "OrderCancelled",
                    "OrderShipped",
                    "OrderDelivered",
                ],
            ),
            (
                "inventory-events",
                &[
                    "InventoryReserved",
                    "InventoryRejected",
                    "InventoryReleased",
                    "InventoryCommitted",
                    "StockAdjusted",
                    "LowStock",
                ],
            ),
            (
                "payment-events",
                &[
                    "PaymentAuthorized",
                    "PaymentFailed",
                    "PaymentCaptured",
                    "PaymentVoided",
                ],
            ),
            ("shipping-requests", &["ShipmentRequested"]),
            (
                "shipment-events",
                &[
                    "ShipmentCreated",
                    "ShipmentCancelled",
                    "ShipmentDispatched",
                    "ShipmentDelivered",
                ],
            ),
            ("promotion-events", &["PromotionLaunched"]),
            ("recommendation-events", &["RecommendationsIssued"]),
            (
                "notification-events",
                &["NotificationSent", "NotificationFailed"],
            ),
        ];
        let mut expected = Vec::new();
        for (topic, types) in contract {
            for t in *types {
                expected.push((t.to_string(), topic.to_string()));
            }
        }
        let actual: Vec<(String, String)> = Event::CATALOG
            .iter()
            .map(|i| (i.event_type.to_string(), i.topic.as_str().to_string()))
            .collect();
        assert_eq!(actual, expected);
        assert_eq!(Event::TYPES.len(), Event::CATALOG.len());
    }

    #[test]
    fn methods_agree_with_the_catalog() {
        let order_id = Uuid::now_v7();
        let event = Event::OrderCancelled(OrderCancelled {
            order_id,
            user_id: Uuid::now_v7(),
            reason: CancellationReason::Timeout,
        });
        let info = Event::info_of(event.event_type()).unwrap();
        assert_eq!(info.topic, event.topic());
        assert_eq!(info.version, event.version());
        assert_eq!(event.topic(), Topic::Order);
        assert_eq!(event.aggregate_id(), order_id.to_string());
        assert!(Event::info_of("OrderExploded").is_none());
    }

    #[test]
    fn event_serialises_adjacently_tagged() {
        let product_id = Uuid::now_v7();
        let event = Event::ProductUpdated(ProductUpdated {
            product_id,
            name: "Mug".into(),
            description: None,
            category: "kitchen".into(),
            price: Money::new(1299, "EUR"),
        });
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "eventType": "ProductUpdated",
                "payload": {
                    "productId": product_id,
                    "name": "Mug",
                    "description": null,
                    "category": "kitchen",
                    "price": {"amount": 1299, "currency": "EUR"},
                }
            })
        );
    }
}
