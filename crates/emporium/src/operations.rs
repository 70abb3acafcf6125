//! Operations: the admin's window on the event flow — the events as stored, platform statistics and
//! dead letters (`/api/admin/...`).
//!
//! It keeps its own read model in the operations database, fed by a consumer of every topic: an
//! index of events by aggregate and type, and each order's latest status. So it works the same on the
//! embedded log and on Kafka, where the log itself cannot be queried by aggregate.
//!
//! Consumes: every topic except `shipping-requests` (personal data). Emits: nothing.

use std::sync::Arc;

use async_trait::async_trait;
use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    routing::{get, post},
};
use emporium_events::{Envelope, Event, Topic};
use emporium_platform::{
    api::ApiError,
    auth::Admin,
    bus::{
        EventBus,
        consumer::{EventHandler, HandlerError},
        dlq::{DeadLetterEntry, DeadLetterError, DeadLetterStore},
    },
    service::{Service, ServiceContext, Workers},
    storage::{Db, Migration, Tx},
};
use serde::{Deserialize, Serialize};
use sqlx::Row;

pub const NAME: &str = "operations";

const MIGRATIONS: &[Migration] = &[
    Migration::portable(
        101,
        "event_index",
        "CREATE TABLE events (
            event_id       TEXT   PRIMARY KEY,
            event_type     TEXT   NOT NULL,
            topic          TEXT   NOT NULL,
            aggregate_id   TEXT   NOT NULL,
            correlation_id TEXT   NOT NULL,
            occurred_at    BIGINT NOT NULL,
            envelope       TEXT   NOT NULL)",
    ),
    Migration::portable(
        102,
        "event_index_by_aggregate",
        "CREATE INDEX events_by_aggregate ON events (aggregate_id, event_id)",
    ),
    Migration::portable(
        103,
        "order_status",
        "CREATE TABLE order_status (
            order_id   TEXT   PRIMARY KEY,
            status     TEXT   NOT NULL,
            updated_at BIGINT NOT NULL)",
    ),
];

pub struct OperationsService {
    pub dead_letters: DeadLetterStore,
}

#[derive(Clone)]
struct AppState {
    db: Db,
    bus: Arc<dyn EventBus>,
    dead_letters: DeadLetterStore,
}

#[async_trait]
impl Service for OperationsService {
    fn name(&self) -> &'static str {
        NAME
    }

    fn migrations(&self) -> &'static [Migration] {
        MIGRATIONS
    }

    fn router(&self, ctx: &ServiceContext) -> Router {
        Router::new()
            .route("/api/admin/events", get(list_events))
            .route("/api/admin/stats", get(stats))
            .route("/api/admin/dlq", get(list_dead_letters))
            .route("/api/admin/dlq/{id}/replay", post(replay_dead_letter))
            .route(
                "/api/admin/dlq/{id}",
                axum::routing::delete(delete_dead_letter),
            )
            .with_state(AppState {
                db: ctx.db.clone(),
                bus: ctx.bus.clone(),
                dead_letters: self.dead_letters.clone(),
            })
    }

    async fn start(&self, ctx: &ServiceContext, workers: &mut Workers) -> anyhow::Result<()> {
        // Every topic but `shipping-requests`: the shipping address goes to the shipping service only.
        let topics: Vec<Topic> = Topic::ALL
            .iter()
            .copied()
            .filter(|t| *t != Topic::ShippingRequest)
            .collect();
        workers.consume(ctx, &topics, EventIndex).await?;
        workers.keep(self.dead_letters.collect(&[]).await?);
        Ok(())
    }
}

/// Indexes every event and follows each order's status.
struct EventIndex;

#[async_trait]
impl EventHandler for EventIndex {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> Result<(), HandlerError> {
        let envelope =
            serde_json::to_string(event).map_err(|e| HandlerError::Failed(e.to_string()))?;
        sqlx::query(
            "INSERT INTO events (event_id, event_type, topic, aggregate_id, correlation_id, occurred_at, envelope)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event.event_id.to_string())
        .bind(event.event.event_type())
        .bind(event.event.topic().as_str())
        .bind(&event.aggregate_id)
        .bind(&event.correlation_id)
        .bind(event.occurred_at.timestamp_millis())
        .bind(envelope)
        .execute(tx.conn())
        .await?;
        let status = match &event.event {
            Event::OrderCreated(_) => Some("PENDING"),
            Event::OrderConfirmed(_) => Some("CONFIRMED"),
            Event::OrderCancelled(_) => Some("CANCELLED"),
            Event::OrderShipped(_) => Some("SHIPPED"),
            Event::OrderDelivered(_) => Some("DELIVERED"),
            _ => None,
        };
        if let Some(status) = status {
            // order-events of one order arrive in order: the latest one is the status.
            sqlx::query(
                "INSERT INTO order_status (order_id, status, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at",
            )
            .bind(&event.aggregate_id)
            .bind(status)
            .bind(event.occurred_at.timestamp_millis())
            .execute(tx.conn())
            .await?;
        }
        Ok(())
    }
}

/// The operations endpoints, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list_events, stats, list_dead_letters, replay_dead_letter, delete_dead_letter),
    components(schemas(Stats, GroupLag, DeadLetterView)),
    tags((name = "operations", description = "Events as stored, platform statistics, dead letters (admin)"))
)]
pub struct OperationsApi;

/// A dead letter as `/api/admin/dlq` lists it.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // documents the shape of `DeadLetterEntry` for the OpenAPI document
struct DeadLetterView {
    id: String,
    topic: String,
    event_type: Option<String>,
    event_id: Option<String>,
    group: String,
    error: String,
    attempts: u32,
    failed_at: chrono::DateTime<chrono::Utc>,
    replayed_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct EventQuery {
    aggregate_id: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    limit: Option<String>,
}

/// `GET /api/admin/events?aggregateId=&type=&limit=`: envelopes as published. With `aggregateId`,
/// oldest first (a saga's timeline); otherwise newest first. `limit` 1–1000, default 100.
#[utoipa::path(get, path = "/api/admin/events", tag = "operations", params(EventQuery),
    responses((status = 200, description = "Event envelopes", body = Vec<Object>),
              (status = 400, description = "Bad filter"), (status = 401), (status = 403)),
    security(("bearer" = [])))]
async fn list_events(
    _: Admin,
    State(state): State<AppState>,
    Query(query): Query<EventQuery>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let limit = match query
        .limit
        .as_deref()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        None => 100,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::field("limit", "must be an integer from 1 to 1000"))?,
    };
    if let Some(event_type) = &query.event_type
        && !Event::TYPES.contains(&event_type.as_str())
    {
        return Err(ApiError::field(
            "type",
            format!("unknown event type `{event_type}`"),
        ));
    }
    let order = if query.aggregate_id.is_some() {
        "ASC"
    } else {
        "DESC"
    };
    let sql = format!(
        "SELECT envelope FROM events
         WHERE ($1 IS NULL OR aggregate_id = $1) AND ($2 IS NULL OR event_type = $2)
         ORDER BY event_id {order} LIMIT $3"
    );
    let rows = sqlx::query(&sql)
        .bind(query.aggregate_id)
        .bind(query.event_type)
        .bind(limit)
        .fetch_all(state.db.reader())
        .await?;
    let events = rows
        .into_iter()
        .map(|row| {
            let text: String = row.get(0);
            serde_json::from_str(&text)
                .map_err(|e| ApiError::internal(format!("corrupt event index: {e}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(Json(events))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct GroupLag {
    group: String,
    lag: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Stats {
    #[schema(value_type = Object)]
    orders_by_status: serde_json::Map<String, serde_json::Value>,
    /// Events per second over the last minute.
    events_per_second: f64,
    consumer_lag: Vec<GroupLag>,
    dead_letters: i64,
}

/// `GET /api/admin/stats`.
#[utoipa::path(get, path = "/api/admin/stats", tag = "operations",
    responses((status = 200, body = Stats), (status = 401), (status = 403)), security(("bearer" = [])))]
async fn stats(_: Admin, State(state): State<AppState>) -> Result<Json<Stats>, ApiError> {
    let mut orders_by_status = serde_json::Map::new();
    for status in ["PENDING", "CONFIRMED", "SHIPPED", "DELIVERED", "CANCELLED"] {
        orders_by_status.insert(status.to_owned(), 0.into());
    }
    for row in sqlx::query("SELECT status, COUNT(*) FROM order_status GROUP BY status")
        .fetch_all(state.db.reader())
        .await?
    {
        let status: String = row.get(0);
        let count: i64 = row.get(1);
        orders_by_status.insert(status, count.into());
    }
    let since = chrono::Utc::now().timestamp_millis() - 60_000;
    let recent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE occurred_at >= $1")
        .bind(since)
        .fetch_one(state.db.reader())
        .await?;
    let mut per_group = std::collections::BTreeMap::<String, u64>::new();
    for lag in state
        .bus
        .lag()
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
    {
        *per_group.entry(lag.group.clone()).or_default() += lag.lag();
    }
    Ok(Json(Stats {
        orders_by_status,
        events_per_second: recent as f64 / 60.0,
        consumer_lag: per_group
            .into_iter()
            .map(|(group, lag)| GroupLag { group, lag })
            .collect(),
        dead_letters: state.dead_letters.pending().await?,
    }))
}

fn dead_letter_error(e: DeadLetterError) -> ApiError {
    match e {
        DeadLetterError::NotFound(_) => ApiError::not_found("no such dead letter"),
        DeadLetterError::Storage(e) => e.into(),
        DeadLetterError::Bus(e) => ApiError::unavailable(e.to_string()),
    }
}

/// `GET /api/admin/dlq`: pending first, newest first.
#[utoipa::path(get, path = "/api/admin/dlq", tag = "operations",
    responses((status = 200, body = Vec<DeadLetterView>), (status = 401), (status = 403)),
    security(("bearer" = [])))]
async fn list_dead_letters(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<Vec<DeadLetterEntry>>, ApiError> {
    Ok(Json(state.dead_letters.list(1000).await?))
}

/// Publishes the dead letter's original event to its topic again.
#[utoipa::path(post, path = "/api/admin/dlq/{id}/replay", tag = "operations",
    params(("id" = String, Path, description = "Dead letter id")),
    responses((status = 200, body = DeadLetterView), (status = 404), (status = 401), (status = 403)),
    security(("bearer" = [])))]
async fn replay_dead_letter(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeadLetterEntry>, ApiError> {
    state
        .dead_letters
        .replay(&id)
        .await
        .map(Json)
        .map_err(dead_letter_error)
}

/// Forgets a dead letter.
#[utoipa::path(delete, path = "/api/admin/dlq/{id}", tag = "operations",
    params(("id" = String, Path, description = "Dead letter id")),
    responses((status = 204), (status = 404), (status = 401), (status = 403)),
    security(("bearer" = [])))]
async fn delete_dead_letter(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .dead_letters
        .delete(&id)
        .await
        .map(|()| StatusCode::NO_CONTENT)
        .map_err(dead_letter_error)
}
