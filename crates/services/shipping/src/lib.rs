//! The shipping service: a shipment per confirmed order, through a simulated carrier.
//!
//! Owns the `shipping` database: `shipments` (one per order at most, with the shipping address,
//! which reaches no other service) and `shipping_cancellations` (orders known to be cancelled).
//!
//! Consumes:
//! - `shipping-requests`: `ShipmentRequested` → a `READY` shipment with a tracking number and
//!   carrier (`ShipmentCreated`), unless the order is known to be cancelled;
//! - `order-events`: `OrderCancelled` → a `READY` shipment becomes `CANCELLED`
//!   (`ShipmentCancelled`), and the cancellation is remembered so that a later request creates
//!   nothing.
//!
//! Emits on `shipment-events`: those two, `ShipmentDispatched` (by the dispatcher, a background
//! loop that hands `READY` shipments to the carrier `shipping_dispatch_delay` after their creation,
//! or by an admin) and `ShipmentDelivered` (by an admin). Every status change is a conditional
//! `UPDATE` on the status it starts from, in the transaction that emits its event, so the
//! dispatcher and the admin endpoints never both dispatch one shipment.
//!
//! Serves `GET /api/shipments?orderId=` (the order's owner or an admin; `[]` for an order shipping
//! has not heard of),
//! `POST /api/shipments/{id}/dispatch` and `POST /api/shipments/{id}/deliver` (admin).

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
    config::DispatchDelay,
    service::{Service, ServiceContext, Workers},
    storage::Migration,
};

pub const NAME: &str = "shipping";

/// The shipping service.
pub struct ShippingService;

#[async_trait]
impl Service for ShippingService {
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
        vec![Topic::ShippingRequest, Topic::Order]
    }

    async fn start(&self, ctx: &ServiceContext, workers: &mut Workers) -> anyhow::Result<()> {
        workers
            .consume(ctx, &self.topics(), consumers::ShippingHandler)
            .await?;
        if let DispatchDelay::After(delay) = ctx.config.shipping_dispatch_delay {
            workers.spawn(app::run_dispatcher(ctx.db.clone(), delay, ctx.stop.clone()));
        }
        Ok(())
    }
}

/// The OpenAPI description of shipping's endpoints.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <http::ApiDoc as utoipa::OpenApi>::openapi()
}
