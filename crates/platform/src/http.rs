//! The HTTP basics every Emporium process serves: `/health`, `/health/live` and `/metrics`.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    routing::get,
};
use serde_json::json;

use crate::{api::ApiError, bus::EventBus, storage::Db, telemetry};

/// Something `/health` checks.
#[async_trait]
pub trait HealthCheck: Send + Sync + 'static {
    async fn check(&self) -> Result<(), String>;
}

#[async_trait]
impl HealthCheck for Db {
    async fn check(&self) -> Result<(), String> {
        Db::check(self).await.map_err(|e| e.to_string())
    }
}

#[async_trait]
impl HealthCheck for Arc<dyn EventBus> {
    async fn check(&self) -> Result<(), String> {
        EventBus::check(self.as_ref())
            .await
            .map_err(|e| e.to_string())
    }
}

/// A shared cache answers (a read of a key nobody writes).
#[async_trait]
impl HealthCheck for Arc<dyn crate::cache::Cache> {
    async fn check(&self) -> Result<(), String> {
        self.get("health-check")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// A service's outbox, as readiness sees it: DOWN when its oldest unpublished event has waited
/// longer than `max_age`, which means the relay cannot publish (the bus is down or far behind).
/// The service still accepts writes then (the outbox holds them), but an orchestrator should send
/// traffic to an instance that can deliver its events.
pub struct OutboxCheck {
    pub db: Db,
    pub max_age: Duration,
}

#[async_trait]
impl HealthCheck for OutboxCheck {
    async fn check(&self) -> Result<(), String> {
        match self.db.oldest_outbox_age().await {
            Ok(Some(age)) if age > self.max_age => Err(format!(
                "the oldest unpublished event has waited {} ms (bus.outbox_max_age is {} ms)",
                age.as_millis(),
                self.max_age.as_millis()
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// What `/health` reports on.
#[derive(Clone)]
pub struct Health {
    pub service: String,
    pub checks: Vec<(String, Arc<dyn HealthCheck>)>,
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl Health {
    async fn report(&self) -> (StatusCode, serde_json::Value) {
        let results =
            futures_util::future::join_all(self.checks.iter().map(|(name, check)| async move {
                let up = matches!(
                    tokio::time::timeout(CHECK_TIMEOUT, check.check()).await,
                    Ok(Ok(()))
                );
                (name.clone(), up)
            }))
            .await;
        let all_up = results.iter().all(|(_, up)| *up);
        let checks: serde_json::Map<String, serde_json::Value> = results
            .into_iter()
            .map(|(name, up)| (name, json!(if up { "UP" } else { "DOWN" })))
            .collect();
        let status = if all_up { "UP" } else { "DOWN" };
        let code = if all_up {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (
            code,
            json!({"status": status, "service": self.service, "checks": checks}),
        )
    }
}

/// `/health`, `/health/live` and `/metrics`. `refresh` runs before each scrape (gauges such as lag).
pub fn ops_router<F, Fut>(health: Health, refresh: F) -> Router
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    Router::new()
        .route(
            "/health",
            get(|State(health): State<Arc<Health>>| async move {
                let (code, body) = health.report().await;
                (code, Json(body))
            }),
        )
        .route(
            "/health/live",
            get(|| async { Json(json!({"status": "UP"})) }),
        )
        .route(
            "/metrics",
            get(move || {
                let refresh = refresh.clone();
                async move {
                    refresh().await;
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        telemetry::metrics().render(),
                    )
                }
            }),
        )
        .with_state(Arc::new(health))
}

/// The answer for paths nobody serves.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such resource")
}
