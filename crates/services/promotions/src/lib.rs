//! The promotions service: admins' promotions, launched on time, once per occurrence.
//!
//! Owns the `promotions` database: `promotions` (name, message, products or category, `startsAt`,
//! `cron`, the next and last launch) and `promotion_launches` (one row per launched occurrence,
//! unique per promotion and occurrence time).
//!
//! Consumes no events.
//!
//! Emits `PromotionLaunched` on `promotion-events` (key: the promotion id), with `scheduledFor`,
//! the occurrence it is for. The scheduler, a background loop, launches each due occurrence in one
//! transaction: the launch record, the promotion's next launch (a conditional `UPDATE`, so two
//! schedulers never launch one occurrence twice) and the event in the outbox. It sleeps until the
//! next launch is due or a promotion is created (or a minute at most), never polling in between.
//! A launch that fell due while the platform was down happens once when it starts again; a cron
//! promotion that missed several occurrences launches only the latest of them. The notifications
//! service turns each launch into `marketing` messages to opted-in users. The schedule rules are
//! in [`domain`].
//!
//! Serves, for admins: `POST /api/promotions` `{name, message, productIds?, category?, startsAt?,
//! cron?}` → 201 Promotion with `Location`, `GET /api/promotions?limit=&cursor=` (newest first) and
//! `GET /api/promotions/{id}`. A promotion's `status` is `SCHEDULED` (not launched yet), `ACTIVE`
//! (a cron promotion that launched and will again) or `LAUNCHED` (launched, nothing more to come).

pub mod app;
pub mod domain;
pub mod http;
pub mod store;
#[cfg(test)]
mod tests;

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use axum::Router;
use emporium_platform::{
    service::{Service, ServiceContext, Workers},
    storage::Migration,
};
use tokio::sync::Notify;

pub const NAME: &str = "promotions";

/// The promotions service.
pub struct PromotionsService;

/// The scheduler's wake-up bell, rung by the API after it creates a promotion. The router and the
/// scheduler are built in separate calls with nothing of ours passed between them, so the bell is
/// process-wide (as notifications' is); a process runs one promotions service (a test process with
/// several only sees a spurious wake-up, after which the scheduler finds nothing new and waits
/// again).
fn wake() -> Arc<Notify> {
    static BELL: OnceLock<Arc<Notify>> = OnceLock::new();
    BELL.get_or_init(|| Arc::new(Notify::new())).clone()
}

#[async_trait]
impl Service for PromotionsService {
    fn name(&self) -> &'static str {
        NAME
    }

    fn migrations(&self) -> &'static [Migration] {
        store::MIGRATIONS
    }

    fn router(&self, ctx: &ServiceContext) -> Router {
        http::router(app::App {
            db: ctx.db.clone(),
            wake: wake(),
        })
    }

    async fn start(&self, ctx: &ServiceContext, workers: &mut Workers) -> anyhow::Result<()> {
        workers.spawn(app::run_scheduler(ctx.db.clone(), wake(), ctx.stop.clone()));
        Ok(())
    }
}

/// The OpenAPI description of promotions's endpoints.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <http::ApiDoc as utoipa::OpenApi>::openapi()
}
