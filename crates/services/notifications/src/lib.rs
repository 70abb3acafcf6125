//! The notifications service: tells users (and admins) what happened, by email, SMS or push.
//!
//! It owns its copy of the users' **contacts** (email, name, phone, role, preferences, from
//! `user-events`), product names (from `product-events`, for the low-stock message), the message
//! **templates** (minijinja, shipped defaults seeded at start-up and editable by admins) and the
//! **notifications** themselves.
//!
//! - Consumes `user-events` (contacts; `UserRegistered` → `welcome`), `product-events` (names),
//!   `order-events` (`OrderConfirmed`/`Cancelled`/`Shipped`/`Delivered` → the matching template,
//!   `critical`, only if the user's `orderUpdates` allows, else stored `SUPPRESSED`) and
//!   `inventory-events` (`LowStock` → `low_stock` to every admin, `standard`).
//! - Consumes `promotion-events`: `PromotionLaunched` → `promotion`, `marketing`, to every known
//!   contact; stored `SUPPRESSED` for those whose `promotions` preference is off, and for those
//!   who already had `notifications.marketing_limit` marketing messages in the last
//!   `notifications.marketing_window`. One per (launch, user, channel), however often delivered.
//! - Consumes `recommendation-events`: `RecommendationsIssued` → `recommendations`, `standard`,
//!   to that user, naming the products it knows names for; stored `SUPPRESSED` if their
//!   `recommendations` preference is off.
//! - Emits `NotificationSent` and `NotificationFailed` on `notification-events`.
//!
//! Handlers only write notification rows (one per event, recipient and channel: the inbox and a
//! unique key); the [`dispatch`] loop sends them after commit, critical first, then standard, then
//! marketing, and records each outcome with its event in one transaction. Email goes to `.eml`
//! files under `<data_dir>/mail/` (or SMTP when `smtp_url` is set); SMS and push to a log sink.
//! Email always; SMS too for critical notifications when the user has a phone. Templates render
//! strictly: a missing variable is an error, never an empty string.
//!
//! - REST: `GET /api/notifications/me`, `POST /api/notifications/me/read`; for any signed-in
//!   user `GET /api/templates`, `GET /api/templates/{name}` and `POST /api/templates/{name}/render`
//!   (a preview); for admins `POST /api/notifications` and `PUT /api/templates/{name}`.
//!
//! SMTP is plain: this build has no TLS for it, so an `smtp://` URL is sent over an unencrypted
//! connection (no STARTTLS), and any `user:password` in it travels in clear text. That suits a
//! mail sink on the same host or a private network, nothing further. `smtps://` is refused at
//! start-up rather than silently downgraded.

pub mod app;
pub mod consumers;
pub mod dispatch;
pub mod domain;
pub mod http;
pub mod sender;
pub mod store;

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use axum::Router;
use emporium_events::Topic;
use emporium_platform::{
    service::{Service, ServiceContext, Workers},
    storage::{EventContext, Migration},
};
use tokio::sync::Notify;
use utoipa::OpenApi;

pub const NAME: &str = "notifications";

/// The notifications service.
pub struct NotificationsService;

/// The dispatcher's wake-up bell, rung by the API after it queues a notification. The router and
/// the dispatcher are built in separate calls with nothing of ours passed between them, so the bell
/// is process-wide; a process runs one notifications service (a test process with several only
/// sees a spurious wake-up, after which the dispatcher finds nothing and waits again).
fn wake() -> Arc<Notify> {
    static BELL: OnceLock<Arc<Notify>> = OnceLock::new();
    BELL.get_or_init(|| Arc::new(Notify::new())).clone()
}

/// The service's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    http::NotificationsApi::openapi()
}

#[async_trait]
impl Service for NotificationsService {
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

    fn topics(&self) -> Vec<Topic> {
        vec![
            Topic::User,
            Topic::Product,
            Topic::Order,
            Topic::Inventory,
            Topic::Promotion,
            Topic::Recommendation,
        ]
    }

    async fn start(&self, ctx: &ServiceContext, workers: &mut Workers) -> anyhow::Result<()> {
        let mut tx = ctx
            .db
            .begin(EventContext::request(NAME, "start-up"))
            .await?;
        store::seed_templates(tx.conn()).await?;
        tx.commit().await?;

        let senders = sender::Senders::from_config(
            ctx.config.smtp_url.as_deref(),
            &ctx.config.data_dir.join("mail"),
        )?;
        let dispatcher = dispatch::Dispatcher {
            db: ctx.db.clone(),
            senders,
            wake: wake(),
            pace: dispatch::Pace::default(),
        };
        workers.spawn(dispatcher.run(ctx.stop.clone()));
        workers
            .consume(
                ctx,
                &self.topics(),
                consumers::Handler {
                    marketing: domain::MarketingLimit::from_config(&ctx.config.notifications),
                },
            )
            .await?;
        Ok(())
    }
}
#[cfg(test)]
mod tests;

#[cfg(test)]
mod openapi_tests {
    #[test]
    fn the_openapi_document_lists_every_endpoint() {
        let doc = super::openapi();
        let paths: Vec<&str> = doc.paths.paths.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                "/api/notifications",
                "/api/notifications/me",
                "/api/notifications/me/read",
                "/api/templates",
                "/api/templates/{name}",
                "/api/templates/{name}/render",
            ]
        );
        let json = doc.to_pretty_json().unwrap();
        assert!(json.contains("TemplateView") && json.contains("NotificationView"));
    }
}
