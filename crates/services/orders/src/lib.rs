//! The orders service: the heart of the order saga (CONTRACT §2 "Orders", §4).
//!
//! It owns orders and their status machine (`PENDING → CONFIRMED → SHIPPED → DELIVERED`, or
//! `CANCELLED` from `PENDING`/`CONFIRMED`; the rules are in [`domain`]), the order's timeline and
//! the payment and shipment summaries it shows, idempotency keys, and a read model of the catalog
//! (names, prices, deletions) so that placing an order needs no synchronous call.
//!
//! - **Serves** `POST /api/orders`, `GET /api/orders`, `GET /api/orders/{id}`,
//!   `POST /api/orders/{id}/cancel`.
//! - **Emits** `OrderCreated`, `OrderConfirmed` with `ShipmentRequested` (on `shipping-requests`,
//!   the only place the shipping address travels), `OrderCancelled`, `OrderShipped`,
//!   `OrderDelivered` — each in the transaction that changes the order.
//! - **Consumes** `product-events` (the read model), `inventory-events` (`InventoryRejected`
//!   cancels with `OUT_OF_STOCK`, or `PRODUCT_UNAVAILABLE` when the read model has its product as
//!   deleted), `payment-events` (`PaymentAuthorized` confirms, `PaymentFailed` cancels with
//!   `PAYMENT_DECLINED`), `shipment-events` (`ShipmentDispatched` ships, `ShipmentDelivered`
//!   delivers; either for a `CANCELLED` order changes nothing and is logged as a parcel to
//!   recall); every saga event also lands in the order's timeline and keeps its summaries current.
//! - **Decides the race between a cancellation and a dispatch**: under the order's row lock it
//!   moves a `CONFIRMED` order either to `CANCELLED` (`OrderCancelled`) or to `SHIPPED`
//!   (`OrderShipped`), never both. Payments captures or voids, and inventory commits or releases,
//!   on those two events (one topic, keyed by the order), not on the carrier's
//!   `ShipmentDispatched`, so money and stock always follow the order's final status.
//! - **Sweeps**: an order still `PENDING` after `saga_timeout` is cancelled with `TIMEOUT`.
//! - **Sheds load**: while 100 or more `PENDING` orders are older than `max_saga_backlog`, or
//!   `max_placements_in_flight` placements are running for longer than `max_placement_wait`,
//!   new orders get 503 with `Retry-After`
//!   ([`admission`]).

pub mod admission;
pub mod app;
pub mod consumers;
pub mod domain;
pub mod http;
pub mod store;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use axum::Router;
use emporium_events::Topic;
use emporium_platform::{
    service::{Service, ServiceContext, Workers},
    storage::{Db, Migration},
};
use tokio::sync::watch;

pub const NAME: &str = "orders";

/// The orders service.
pub struct OrdersService;

#[async_trait]
impl Service for OrdersService {
    fn name(&self) -> &'static str {
        NAME
    }

    fn migrations(&self) -> &'static [Migration] {
        store::MIGRATIONS
    }

    fn router(&self, ctx: &ServiceContext) -> Router {
        let admission = admission::Admission::new(
            ctx.db.clone(),
            ctx.config.max_saga_backlog,
            ctx.config.max_placements_in_flight,
            ctx.config.max_placement_wait,
        );
        http::router(ctx.db.clone(), Arc::new(admission))
    }

    fn topics(&self) -> Vec<Topic> {
        consumers::TOPICS.to_vec()
    }

    async fn start(&self, ctx: &ServiceContext, workers: &mut Workers) -> anyhow::Result<()> {
        workers
            .consume(ctx, &self.topics(), consumers::OrdersConsumer)
            .await?;
        workers.spawn(sweep(
            ctx.db.clone(),
            ctx.config.saga_timeout,
            ctx.stop.clone(),
        ));
        Ok(())
    }
}

/// The orders API as an OpenAPI document (tag `orders`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    http::OrdersApi::openapi()
}

/// The saga-timeout sweeper: every [`app::sweep_interval`], cancels the overdue `PENDING` orders;
/// ends when the platform stops.
async fn sweep(db: Db, timeout: Duration, mut stop: watch::Receiver<bool>) {
    let every = app::sweep_interval(timeout);
    loop {
        if *stop.borrow() {
            return;
        }
        if let Err(e) = app::expire_overdue(&db, timeout).await {
            tracing::warn!(error = %e, "saga-timeout sweep failed; trying again");
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            changed = stop.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}
