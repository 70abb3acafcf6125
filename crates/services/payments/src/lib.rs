//! The payments service: one payment per order, through a simulated provider.
//!
//! Owns the `payments` database: `payment_orders` (what it knows of each order: owner, total,
//! token, and which saga events it has seen) and `payments` (at most one per order).
//!
//! Consumes:
//! - `order-events`: `OrderCreated` → the owner, total and token are remembered;
//!   `OrderCancelled` → an authorized payment is voided (`PaymentVoided`), and the order is
//!   remembered as cancelled so that a later `InventoryReserved` authorizes nothing;
//!   `OrderShipped` → the authorization is captured (`PaymentCaptured`). Capture follows the
//!   order's `OrderShipped`, not the carrier's `ShipmentDispatched`: orders emits exactly one of
//!   `OrderShipped` and `OrderCancelled` per order, on this one topic, so exactly one of capture
//!   and void happens;
//! - `inventory-events`: `InventoryReserved` → the total is authorized by the provider
//!   ([`authorizer::authorize`], a plain function of the request that also runs as the
//!   `payment-authorizer` AWS Lambda function, called through [`provider`]: a few quick retries
//!   behind the service's [`breaker::CircuitBreaker`]) →
//!   `PaymentAuthorized` | `PaymentFailed` (with the decline reason; `provider_unavailable` when
//!   this order's own provider calls keep failing). Whichever of `OrderCreated` and
//!   `InventoryReserved` arrives second triggers the authorization. When the breaker is open and
//!   refuses an order before any of its own calls failed, the event fails as an infrastructure
//!   error: the partition pauses and the event comes again, so one customer's failing card never
//!   declines everyone else's orders.
//!
//! Serves `GET /api/payments?orderId=` (the order's owner or an admin; `[]` for an order payments
//! has not heard of).

pub mod app;
pub mod authorizer;
pub mod breaker;
pub mod consumers;
pub mod domain;
pub mod http;
pub mod provider;
pub mod store;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use emporium_events::Topic;
use emporium_platform::{
    service::{Service, ServiceContext, Workers},
    storage::Migration,
};

pub const NAME: &str = "payments";

/// The payments service.
pub struct PaymentsService;

#[async_trait]
impl Service for PaymentsService {
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
        vec![Topic::Order, Topic::Inventory]
    }

    async fn start(&self, ctx: &ServiceContext, workers: &mut Workers) -> anyhow::Result<()> {
        let authorizer = app::Authorizer {
            provider: Arc::new(provider::SimulatedProvider {
                limit: ctx.config.payment_limit,
            }),
            breaker: Arc::new(breaker::CircuitBreaker::default()),
            retry: provider::RetryPolicy::default(),
        };
        workers
            .consume(
                ctx,
                &self.topics(),
                consumers::PaymentsHandler { authorizer },
            )
            .await?;
        Ok(())
    }
}

/// The OpenAPI description of payments' endpoints.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <http::ApiDoc as utoipa::OpenApi>::openapi()
}
