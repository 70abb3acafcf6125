//! The recommendations service: products picked for a user or a product page from what customers
//! bought, explained. An event-driven read model: it consumes events and never calls another
//! service.
//!
//! Owns the `recommendations` database (see [`store`]): the products as the catalog describes them,
//! the last stock figure inventory announced per product, every order's lines and whether it
//! counts, the sales and co-purchase counts of counted orders, when each user last got the
//! recommendations email, and the model's generation (the cache's invalidation, see [`app`]).
//!
//! Consumes:
//! - `product-events`: `ProductCreated`/`ProductUpdated` → name, description, category, price, with
//!   `createdAt`/`updatedAt` from the events' `occurredAt`; `ProductDeleted` → never recommended
//!   again;
//! - `inventory-events`: `StockAdjusted`, `LowStock` and `InventoryRejected`, the three that carry
//!   `available` → the product's last announced stock (the most recent by `occurredAt` wins). A
//!   product is **out of stock** when that figure is 0 or less, and in stock when it is positive or
//!   was never announced. What it cannot see: reservations, releases and commits carry quantities,
//!   not levels, so a product sold out by orders is known out of stock only once inventory says so
//!   (a `LowStock` that fell to 0, or an order rejected with `available: 0`), and a product back in
//!   stock through a cancellation only at its next announcement (an admin's adjustment);
//! - `order-events`: `OrderCreated` → the order's lines, remembered; `OrderConfirmed` → the order
//!   counts toward sales and co-purchases ("bought together"); `OrderCancelled` of a counted order
//!   → it stops counting (of a pending one → it never will).
//!
//! Emits on `recommendation-events`: `RecommendationsIssued { userId, productIds }` when a user's
//! order is confirmed and they got no recommendations email within
//! `recommendations.email_period`, with their top [`domain::EMAIL_PRODUCTS`]; the send time is
//! recorded in the same transaction, so a user gets at most one per period whatever the
//! redeliveries. Notifications turns it into the `recommendations` email, or a `SUPPRESSED` record
//! for a user who turned `preferences.recommendations` off (that counts as their email of the
//! period: this service does not know preferences).
//!
//! Serves `GET /api/recommendations/me?limit=` (signed in) and
//! `GET /api/products/{id}/recommendations?limit=` (public; 404 `NOT_FOUND` for a product it does
//! not know or knows deleted, as the catalog answers): `[{product, score, reason}]`, best first,
//! `limit` 1–100 (default 10). How products are scored and explained is in [`domain`]; answers are
//! cached read-aside in the process's cache (`ServiceContext::cache`: Redis when `redis_url` is
//! set, shared by every instance; the generation that invalidates is in the database, so it holds
//! across instances too), counted in `emporium_cache_hits_total{cache="recommendations"}` and
//! `emporium_cache_misses_total`.

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

pub const NAME: &str = "recommendations";

/// The recommendations service.
pub struct RecommendationsService;

#[async_trait]
impl Service for RecommendationsService {
    fn name(&self) -> &'static str {
        NAME
    }

    fn migrations(&self) -> &'static [Migration] {
        store::MIGRATIONS
    }

    fn router(&self, ctx: &ServiceContext) -> Router {
        // The consumers never touch the cache: a new generation is what invalidates.
        http::router(app::Recommender {
            db: ctx.db.clone(),
            cache: ctx.cache.clone(),
        })
    }

    fn topics(&self) -> Vec<Topic> {
        vec![Topic::Product, Topic::Inventory, Topic::Order]
    }

    async fn start(&self, ctx: &ServiceContext, workers: &mut Workers) -> anyhow::Result<()> {
        workers
            .consume(
                ctx,
                &self.topics(),
                consumers::RecommendationsHandler {
                    email_period: ctx.config.recommendations.email_period,
                },
            )
            .await?;
        Ok(())
    }
}

/// The OpenAPI description of recommendations' endpoints.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <http::ApiDoc as utoipa::OpenApi>::openapi()
}
