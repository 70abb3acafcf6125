//! The inventory service: stock levels per product, and the saga's reservations.
//!
//! Owns the `inventory` database: `stock` (available, reserved and committed units per product,
//! plus the initial stock and the sum of adjustments, so that the contract's conservation
//! invariant `initial + adjustments = available + reserved + committed` can be checked row by
//! row), `stock_orders` (what it knows of each order) and `reservations` (units held per order).
//!
//! Consumes:
//! - `product-events`: `ProductCreated` → a stock row with `available = initialStock` and a
//!   `StockAdjusted`; `ProductDeleted` → the product is marked and no longer reserved;
//! - `order-events`: `OrderCreated` → every line reserved or none, in one conditional
//!   check-and-take per line inside a savepoint → `InventoryReserved` | `InventoryRejected` (a
//!   line whose product inventory has not heard of yet fails the event instead, so that it is
//!   retried once the `ProductCreated` arrives on its own topic; deleted products are rejected);
//!   `OrderCancelled` → a held reservation is released (`InventoryReleased`), and the cancellation
//!   is remembered so that nothing is reserved for the order later; `OrderShipped` → the held
//!   units become sold (`InventoryCommitted`). Commit and release both follow the order's own
//!   events on this one topic, and orders emits only one of `OrderShipped` and `OrderCancelled`
//!   per order, so exactly one of them happens. Every change of an order's state is a conditional
//!   write on the state it was decided on, and units move only when that write took effect.
//!
//! Emits on `inventory-events`: the five above plus `LowStock`, once each time a product's
//! available units fall to [`domain::LOW_STOCK_THRESHOLD`] or below (re-armed when they rise above).
//!
//! Serves `GET /api/inventory/{productId}` (public), `GET /api/inventory` and
//! `POST /api/inventory/{productId}/adjust` (admin).

pub mod app;
pub mod consumers;
pub mod domain;
pub mod http;
pub mod store;
#[cfg(test)]
mod tests;

use async_trait::async_trait;
use axum::Router;
use emporium_events::Topic;
use emporium_platform::{
    service::{Service, ServiceContext, Workers},
    storage::Migration,
};

pub const NAME: &str = "inventory";

/// The inventory service.
pub struct InventoryService;

#[async_trait]
impl Service for InventoryService {
    fn name(&self) -> &'static str {
        NAME
    }

    fn migrations(&self) -> &'static [Migration] {
        store::MIGRATIONS
    }

    fn router(&self, ctx: &ServiceContext) -> Router {
        http::router(ctx.db.clone())
    }

    fn topics(&self) -> Vec<Topic> {
        vec![Topic::Product, Topic::Order]
    }

    async fn start(&self, ctx: &ServiceContext, workers: &mut Workers) -> anyhow::Result<()> {
        workers
            .consume(ctx, &self.topics(), consumers::InventoryHandler)
            .await?;
        Ok(())
    }
}

/// The OpenAPI description of inventory's endpoints.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <http::ApiDoc as utoipa::OpenApi>::openapi()
}
