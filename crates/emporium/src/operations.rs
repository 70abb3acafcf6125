//! Operations: the admin's window on the event flow — the events as stored, platform statistics and
//! dead letters (`/api/admin/...`).
//!
//! It keeps its own read model in the operations database, fed by a consumer of every topic: an
//! index of events by aggregate and type, and each order's latest status. So it works the same on the
//! embedded log and on Kafka, where the log itself cannot be queried by aggregate.
//!
//! Consumes: every topic except `shipping-requests` (personal data). Emits: nothing.
//!
//! `/api/events/stream` serves the live feed as Server-Sent Events, with a `stats` event every second,
//! for the dashboard (`crate::dashboard`).

use std::{convert::Infallible, sync::Arc, time::Duration};

use async_trait::async_trait;
use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::sse::{self, KeepAlive, Sse},
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
    storage::{self, Db, Migration, MultiRow, Tx},
};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

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
    pub live: LiveFeed,
}

/// The live event flow, for the dashboard's stream and GraphQL subscriptions: every event the index
/// sees, as it sees it. A view, not a log: a subscriber that falls behind loses the oldest events
/// (and is told so by `RecvError::Lagged`), and an event whose batch is retried may be seen twice.
/// The log itself is `/api/admin/events`.
#[derive(Clone)]
pub struct LiveFeed(tokio::sync::broadcast::Sender<Arc<Envelope>>);

impl LiveFeed {
    pub fn new() -> LiveFeed {
        LiveFeed(tokio::sync::broadcast::channel(1024).0)
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Envelope>> {
        self.0.subscribe()
    }

    fn publish(&self, event: &Envelope) {
        // No subscriber is not an error: nobody is watching.
        let _ = self.0.send(Arc::new(event.clone()));
    }

    /// Feeds this from the bus directly, for a gateway running apart from the operations service:
    /// a consumer group of its own (each gateway instance sees every event), no inbox (a view,
    /// not a state). A new group starts at the beginning of the log, so a starting gateway replays
    /// history into the feed; subscribers that join later see only what comes after.
    pub async fn follow(
        &self,
        bus: &dyn EventBus,
        instance: &str,
    ) -> Result<emporium_platform::bus::Subscription, emporium_platform::bus::BusError> {
        let topics = observed_topics()
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect();
        bus.subscribe(
            emporium_platform::bus::SubscribeOptions {
                group: format!("gateway-live-{instance}"),
                topics,
                max_batch: 256,
            },
            Arc::new(FeedFromBus(self.clone())),
        )
        .await
    }
}

struct FeedFromBus(LiveFeed);

#[async_trait]
impl emporium_platform::bus::BatchHandler for FeedFromBus {
    async fn handle(
        &self,
        batch: &[emporium_platform::bus::Delivery],
    ) -> Result<(), emporium_platform::bus::InfraError> {
        for delivery in batch {
            // An undecodable record is the consumers' business (they dead-letter it); a view skips it.
            if let Ok(envelope) = Envelope::from_json(&delivery.record.payload) {
                self.0.publish(&envelope);
            }
        }
        Ok(())
    }
}

impl Default for LiveFeed {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone)]
struct AppState {
    db: Db,
    bus: Arc<dyn EventBus>,
    dead_letters: DeadLetterStore,
    live: LiveFeed,
    /// Turns true when the platform stops: open streams end then, so they never hold shutdown.
    stop: watch::Receiver<bool>,
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
            .route("/api/events/stream", get(event_stream))
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
                live: self.live.clone(),
                stop: ctx.stop.clone(),
            })
    }

    fn topics(&self) -> Vec<Topic> {
        observed_topics()
    }

    async fn start(&self, ctx: &ServiceContext, workers: &mut Workers) -> anyhow::Result<()> {
        workers
            .consume(
                ctx,
                &self.topics(),
                EventIndex {
                    live: self.live.clone(),
                },
            )
            .await?;
        workers.keep(self.dead_letters.collect(&[]).await?);
        Ok(())
    }
}

/// What operations sees: every topic but `shipping-requests` (the shipping address goes to the
/// shipping service only).
fn observed_topics() -> Vec<Topic> {
    Topic::ALL
        .iter()
        .copied()
        .filter(|t| *t != Topic::ShippingRequest)
        .collect()
}

static EVENT_INSERT: MultiRow = MultiRow::new(
    "INSERT INTO events (event_id, event_type, topic, aggregate_id, correlation_id, occurred_at, envelope) VALUES ",
    0,
    7,
    " ON CONFLICT (event_id) DO NOTHING",
);

/// Indexes every event, follows each order's status, and shows each event on the live feed.
struct EventIndex {
    live: LiveFeed,
}

#[async_trait]
impl EventHandler for EventIndex {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> Result<(), HandlerError> {
        let envelope =
            serde_json::to_string(event).map_err(|e| HandlerError::Failed(e.to_string()))?;
        // Nothing reads the index back while indexing: the rows of a whole batch go in together.
        tx.insert_at_commit(
            &EVENT_INSERT,
            vec![
                event.event_id.to_string().into(),
                event.event.event_type().into(),
                event.event.topic().as_str().into(),
                event.aggregate_id.as_str().into(),
                event.correlation_id.as_str().into(),
                event.occurred_at.timestamp_millis().into(),
                envelope.into(),
            ],
        )?;
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
            storage::query(
                "INSERT INTO order_status (order_id, status, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at",
            )
            .bind(&event.aggregate_id)
            .bind(status)
            .bind(event.occurred_at.timestamp_millis())
            .execute(tx.conn())
            .await?;
        }
        self.live.publish(event);
        Ok(())
    }
}

/// The operations endpoints, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list_events, stats, event_stream, list_dead_letters, replay_dead_letter, delete_dead_letter),
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
    let texts: Vec<String> = storage::query(&sql)
        .bind(query.aggregate_id)
        .bind(query.event_type)
        .bind(limit)
        .scalars(&mut state.db.reader().await?)
        .await?;
    let events = texts
        .into_iter()
        .map(|text| {
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
    current_stats(&state).await.map(Json)
}

async fn current_stats(state: &AppState) -> Result<Stats, ApiError> {
    let mut orders_by_status = serde_json::Map::new();
    for status in ["PENDING", "CONFIRMED", "SHIPPED", "DELIVERED", "CANCELLED"] {
        orders_by_status.insert(status.to_owned(), 0.into());
    }
    let mut reader = state.db.reader().await?;
    for row in storage::query("SELECT status, COUNT(*) FROM order_status GROUP BY status")
        .fetch_all(&mut reader)
        .await?
    {
        let status: String = row.get(0)?;
        let count: i64 = row.get(1)?;
        orders_by_status.insert(status, count.into());
    }
    let since = chrono::Utc::now().timestamp_millis() - 60_000;
    let recent: i64 = storage::query("SELECT COUNT(*) FROM events WHERE occurred_at >= $1")
        .bind(since)
        .scalar(&mut reader)
        .await?;
    drop(reader);
    let mut per_group = std::collections::BTreeMap::<String, u64>::new();
    for lag in state
        .bus
        .lag()
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
    {
        *per_group.entry(lag.group.clone()).or_default() += lag.lag();
    }
    Ok(Stats {
        orders_by_status,
        events_per_second: recent as f64 / 60.0,
        consumer_lag: per_group
            .into_iter()
            .map(|(group, lag)| GroupLag { group, lag })
            .collect(),
        dead_letters: state.dead_letters.pending().await?,
    })
}

/// How often the stream sends a `stats` event.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// `GET /api/events/stream` (admin): the live event flow as Server-Sent Events. Each event seen by the
/// operations index is one SSE event named after its type (`event: OrderCreated`, `data:` the
/// envelope); `event: stats` carries the `/api/admin/stats` document every second; `event: lagged`
/// (`{"missed": n}`) tells a reader too slow for the flow how many events it lost. Comments keep idle
/// connections open. The stream ends when the platform stops.
#[utoipa::path(get, path = "/api/events/stream", tag = "operations",
    responses((status = 200, description = "Server-Sent Events: one per event (named after its type, data the envelope), `stats` every second, `lagged` with the number of missed events",
               content_type = "text/event-stream", body = String),
              (status = 401), (status = 403)),
    security(("bearer" = [])))]
async fn event_stream(
    _: Admin,
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<sse::Event, Infallible>>> {
    let events = futures_util::stream::unfold(LiveStream::new(state), |mut stream| async move {
        loop {
            match stream.next().await?.into_sse() {
                Ok(event) => return Some((Ok(event), stream)),
                Err(e) => tracing::warn!(error = %e, "cannot encode an event for the stream"),
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// What the live stream sends.
#[derive(Debug)]
enum LiveItem {
    Event(Arc<Envelope>),
    Stats(Stats),
    /// This reader fell this many events behind the feed; they are gone from the stream (not from
    /// the log).
    Lagged(u64),
}

impl LiveItem {
    fn into_sse(self) -> Result<sse::Event, axum::Error> {
        match self {
            LiveItem::Event(envelope) => sse::Event::default()
                .event(envelope.event.event_type())
                .json_data(envelope.as_ref()),
            LiveItem::Stats(stats) => sse::Event::default().event("stats").json_data(stats),
            LiveItem::Lagged(missed) => sse::Event::default()
                .event("lagged")
                .json_data(serde_json::json!({ "missed": missed })),
        }
    }
}

/// One reader's position in the live feed, with its stats clock.
struct LiveStream {
    state: AppState,
    feed: broadcast::Receiver<Arc<Envelope>>,
    stop: watch::Receiver<bool>,
    ticks: tokio::time::Interval,
}

impl LiveStream {
    fn new(state: AppState) -> LiveStream {
        let mut ticks = tokio::time::interval(STATS_EVERY);
        // A slow stats query delays the next one rather than bunching them up.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        LiveStream {
            feed: state.live.subscribe(),
            stop: state.stop.clone(),
            ticks,
            state,
        }
    }

    /// The next item (stats first, at once), or `None` when the platform is stopping.
    async fn next(&mut self) -> Option<LiveItem> {
        loop {
            if *self.stop.borrow_and_update() {
                return None;
            }
            // Stop first; the ticks before the feed, so that a busy feed cannot starve the stats.
            tokio::select! {
                biased;
                changed = self.stop.changed() => {
                    if changed.is_err() {
                        // The platform is gone.
                        return None;
                    }
                }
                _ = self.ticks.tick() => match current_stats(&self.state).await {
                    Ok(stats) => return Some(LiveItem::Stats(stats)),
                    // Skipped, not fatal: the next tick tries again, and the page shows stale stats.
                    Err(e) => tracing::debug!(error = ?e, "no stats for the event stream"),
                },
                received = self.feed.recv() => match received {
                    Ok(envelope) => return Some(LiveItem::Event(envelope)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        return Some(LiveItem::Lagged(missed));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use emporium_platform::bus::{OutboxLog, dlq};

    use super::*;

    async fn state(dir: &std::path::Path, stop: watch::Receiver<bool>) -> AppState {
        let db = Db::open_sqlite(NAME, &dir.join("operations.db"))
            .await
            .unwrap();
        db.migrate(dlq::MIGRATIONS).await.unwrap();
        db.migrate(MIGRATIONS).await.unwrap();
        let bus: Arc<dyn EventBus> =
            Arc::new(OutboxLog::open(&dir.join("events.db"), 4).await.unwrap());
        AppState {
            dead_letters: DeadLetterStore::new(db.clone(), bus.clone()),
            db,
            bus,
            live: LiveFeed::new(),
            stop,
        }
    }

    fn event() -> Envelope {
        Envelope::new(
            "catalog",
            "c-1",
            None,
            Event::ProductDeleted(emporium_events::ProductDeleted {
                product_id: uuid::Uuid::now_v7(),
            }),
        )
    }

    /// The next item that is not a stats tick (a tick may come at any time).
    async fn next_non_stats(stream: &mut LiveStream) -> Option<LiveItem> {
        loop {
            match stream.next().await {
                Some(LiveItem::Stats(_)) => continue,
                other => return other,
            }
        }
    }

    #[tokio::test]
    async fn the_stream_starts_with_stats_then_follows_the_feed() {
        let dir = tempfile::tempdir().unwrap();
        let (_stop, stop_rx) = watch::channel(false);
        let state = state(dir.path(), stop_rx).await;
        let live = state.live.clone();
        let mut stream = LiveStream::new(state);
        match stream.next().await {
            Some(LiveItem::Stats(stats)) => {
                assert_eq!(stats.orders_by_status["PENDING"], 0);
                assert_eq!(stats.dead_letters, 0);
            }
            other => panic!("expected stats first, got {other:?}"),
        }
        let sent = event();
        live.publish(&sent);
        match next_non_stats(&mut stream).await {
            Some(LiveItem::Event(envelope)) => assert_eq!(envelope.event_id, sent.event_id),
            other => panic!("expected the event, got {other:?}"),
        }
        let frame = LiveItem::Event(Arc::new(sent.clone())).into_sse();
        assert!(frame.is_ok());
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_is_told_how_many_it_missed_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (_stop, stop_rx) = watch::channel(false);
        let state = state(dir.path(), stop_rx).await;
        let live = state.live.clone();
        let mut stream = LiveStream::new(state);
        // 10 more than the feed holds for a reader.
        let sent: Vec<Envelope> = (0..1034).map(|_| event()).collect();
        for envelope in &sent {
            live.publish(envelope);
        }
        match next_non_stats(&mut stream).await {
            Some(LiveItem::Lagged(missed)) => assert_eq!(missed, 10),
            other => panic!("expected a lagged notice, got {other:?}"),
        }
        match next_non_stats(&mut stream).await {
            Some(LiveItem::Event(envelope)) => assert_eq!(envelope.event_id, sent[10].event_id),
            other => panic!("expected the oldest event still held, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_stream_ends_when_the_platform_stops() {
        let dir = tempfile::tempdir().unwrap();
        let (stop, stop_rx) = watch::channel(false);
        let mut stream = LiveStream::new(state(dir.path(), stop_rx.clone()).await);
        assert!(matches!(stream.next().await, Some(LiveItem::Stats(_))));
        // A reader waiting on a quiet feed wakes up and ends.
        let waiting = tokio::spawn(async move { next_non_stats(&mut stream).await.is_none() });
        stop.send(true).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(10), waiting)
                .await
                .unwrap()
                .unwrap()
        );
        // One that connects while the platform stops ends at once.
        let mut late = LiveStream::new(state(dir.path(), stop_rx).await);
        assert!(late.next().await.is_none());
    }
}
