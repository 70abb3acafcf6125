//! The payload of every event, one struct per event type (CONTRACT §4).
//!
//! Payloads carry ids, not personal data: contact details appear only on the user events, and the
//! shipping address never leaves the orders and shipping services through the bus.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::Money;
use crate::values::{CancellationReason, Channel, DeclineReason, Preferences, Priority, Role};

// ---------------------------------------------------------------- user-events

/// Emitted by the users service when an account is created (registration or admin bootstrap), so
/// notifications can send the welcome message and keep its own copy of the contact details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserRegistered {
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    pub phone: Option<String>,
    pub role: Role,
    pub preferences: Preferences,
}

/// Emitted by the users service when a user changes their profile, so the services that keep
/// contact details or preferences (notifications) stay current.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserUpdated {
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    pub phone: Option<String>,
    pub preferences: Preferences,
}

// ------------------------------------------------------------- product-events

/// Emitted by the catalog when an admin creates a product; inventory creates the stock record
/// from `initialStock`, recommendations and the gateway's caches learn the product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductCreated {
    pub product_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub category: String,
    pub price: Money,
    /// Units available at creation, `>= 0`.
    pub initial_stock: i64,
}

/// Emitted by the catalog when an admin edits a product. Carries the full new state, not a
/// patch, so a consumer that missed an update still converges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductUpdated {
    pub product_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub category: String,
    pub price: Money,
}

/// Emitted by the catalog when an admin deletes a product, so it can no longer be ordered or
/// recommended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductDeleted {
    pub product_id: Uuid,
}

// --------------------------------------------------------------- order-events

/// One line of an order, priced by the catalog when the order was placed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderLine {
    pub product_id: Uuid,
    pub quantity: i64,
    pub unit_price: Money,
}

/// Emitted by the orders service when a customer places an order; starts the saga (inventory
/// reserves). The payment token rides along because payments authorizes later, on
/// `InventoryReserved`, and has no other way to learn it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderCreated {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub items: Vec<OrderLine>,
    pub total: Money,
    /// The provider token (`tok_visa`, ...); never card data.
    pub payment_token: String,
}

/// Emitted by the orders service when stock is reserved and payment authorized; shipping creates
/// the shipment, notifications tells the customer, recommendations counts the purchase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderConfirmed {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub total: Money,
}

/// Emitted by the orders service when an order ends `CANCELLED` (rejection, decline, customer,
/// timeout); inventory releases, payments voids, shipping cancels whatever they hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderCancelled {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub reason: CancellationReason,
}

/// Emitted by the orders service when the order moves to `SHIPPED` (on `ShipmentDispatched`), so
/// notifications can tell the customer with the tracking number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderShipped {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub shipment_id: Uuid,
    pub tracking_number: String,
}

/// Emitted by the orders service when the order moves to `DELIVERED` (on `ShipmentDelivered`);
/// notifications tells the customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderDelivered {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub shipment_id: Uuid,
}

// ----------------------------------------------------------- inventory-events

/// A quantity of one product held for, released from or committed to an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StockLine {
    pub product_id: Uuid,
    pub quantity: i64,
}

/// Emitted by inventory when every line of an `OrderCreated` is reserved (all or none); payments
/// authorizes next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryReserved {
    pub order_id: Uuid,
    pub items: Vec<StockLine>,
}

/// Emitted by inventory when an `OrderCreated` cannot be reserved in full; nothing is held, and
/// orders cancels with `OUT_OF_STOCK`. Names the first line that fell short.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryRejected {
    pub order_id: Uuid,
    pub product_id: Uuid,
    pub requested: i64,
    pub available: i64,
}

/// Emitted by inventory when it gives a reservation back (order cancelled, or a reservation that
/// arrived for an already cancelled order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryReleased {
    pub order_id: Uuid,
    pub items: Vec<StockLine>,
}

/// Emitted by inventory when a reservation becomes a sale, once the order ships.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryCommitted {
    pub order_id: Uuid,
    pub items: Vec<StockLine>,
}

/// Emitted by inventory when stock changes outside an order (admin adjustment, initial stock of a
/// new product), with the resulting levels so readers need not replay deltas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StockAdjusted {
    pub product_id: Uuid,
    pub delta: i64,
    pub available: i64,
    pub reserved: i64,
    pub reason: Option<String>,
}

/// Emitted by inventory when a product's available units fall to or below its threshold, so
/// admins are notified (`low_stock` template).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LowStock {
    pub product_id: Uuid,
    pub available: i64,
    pub threshold: i64,
}

// ------------------------------------------------------------- payment-events

/// Emitted by payments when the provider authorizes an order's total after `InventoryReserved`;
/// orders confirms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentAuthorized {
    pub order_id: Uuid,
    pub payment_id: Uuid,
    pub amount: Money,
}

/// Emitted by payments when the provider declines (or stays unavailable past the retries);
/// orders cancels with `PAYMENT_DECLINED`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentFailed {
    pub order_id: Uuid,
    pub payment_id: Uuid,
    pub amount: Money,
    pub reason: DeclineReason,
}

/// Emitted by payments when it captures the authorized amount, once the order ships.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentCaptured {
    pub order_id: Uuid,
    pub payment_id: Uuid,
    pub amount: Money,
}

/// Emitted by payments when it voids an authorization because the order was cancelled before
/// capture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentVoided {
    pub order_id: Uuid,
    pub payment_id: Uuid,
    pub amount: Money,
}

// ------------------------------------------------------------ shipping-requests

/// Where an order goes. Personal data: it travels only to the shipping service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    pub name: String,
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
}

/// Emitted by the orders service in the same transaction as `OrderConfirmed`, on a topic only the
/// shipping service reads, so that the address reaches shipping and nobody else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShipmentRequested {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub shipping_address: Address,
}

// ------------------------------------------------------------ shipment-events

/// Emitted by shipping when it creates the shipment (`READY`) for a confirmed order
/// (`ShipmentRequested`, which the orders service emits with `OrderConfirmed`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShipmentCreated {
    pub order_id: Uuid,
    pub shipment_id: Uuid,
    pub tracking_number: String,
    pub carrier: String,
}

/// Emitted by shipping when an order is cancelled before its shipment was dispatched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShipmentCancelled {
    pub order_id: Uuid,
    pub shipment_id: Uuid,
}

/// Emitted by shipping when the carrier takes the parcel (automatic after the dispatch delay, or
/// an admin's dispatch); orders ships, payments captures, inventory commits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShipmentDispatched {
    pub order_id: Uuid,
    pub shipment_id: Uuid,
    pub tracking_number: String,
}

/// Emitted by shipping when an admin marks the shipment delivered; orders moves to `DELIVERED`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShipmentDelivered {
    pub order_id: Uuid,
    pub shipment_id: Uuid,
}

// ----------------------------------------------------------- promotion-events

/// Emitted by the promotions scheduler when a promotion starts (its `startsAt` or `cron` time);
/// notifications sends it as `marketing` to opted-in users. Empty `productIds` and no `category`
/// means the promotion is store-wide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionLaunched {
    pub promotion_id: Uuid,
    pub name: String,
    pub message: String,
    pub product_ids: Vec<Uuid>,
    pub category: Option<String>,
    /// The occurrence this launch is for: the promotion's `startsAt` (or its creation time when it
    /// had none) or the cron time. One launch per promotion and occurrence.
    pub scheduled_for: DateTime<Utc>,
}

// ------------------------------------------------------ recommendation-events

/// Emitted by the recommendations service when a user's order is confirmed and the user got no
/// recommendations email within `recommendations.email_period` (at most one per period, recorded in
/// the same transaction); notifications sends the `recommendations` template as `standard` to users
/// with `preferences.recommendations`. The products are ranked best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecommendationsIssued {
    pub user_id: Uuid,
    /// Best first; never empty.
    pub product_ids: Vec<Uuid>,
}

// -------------------------------------------------------- notification-events

/// Emitted by notifications after a message went out, for the dashboard, metrics and
/// exactly-once checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationSent {
    pub notification_id: Uuid,
    /// Null for an admin's message to a raw recipient.
    pub user_id: Option<Uuid>,
    pub template: String,
    pub channel: Channel,
    pub priority: Priority,
}

/// Emitted by notifications when a message could not be delivered after its retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationFailed {
    pub notification_id: Uuid,
    /// Null for an admin's message to a raw recipient.
    pub user_id: Option<Uuid>,
    pub template: String,
    pub channel: Channel,
    pub error: String,
}
