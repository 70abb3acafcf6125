//! Promotions' tables and the SQL on them (portable: SQLite and PostgreSQL; epoch millis, text ids).
//!
//! - `promotions`: what an admin created, with `next_launch_at` (null once nothing more is to
//!   come) and `last_launched_at`; the scheduler looks for `next_launch_at <= now`;
//! - `promotion_launches`: one row per launch, unique per (promotion, occurrence): the record that
//!   an occurrence was launched, written in the transaction that emits its `PromotionLaunched`.

use chrono::{DateTime, Utc};
use emporium_platform::{
    api::PageRequest,
    storage::{Conn, Migration, Row, StorageError, query},
};
use uuid::Uuid;

pub const MIGRATIONS: &[Migration] = &[
    Migration::portable(
        100,
        "promotions",
        // `product_ids`: a JSON array of ids. `correlation_id`: the creating request's, carried by
        // every launch so that one promotion's launches and notifications can be followed.
        "CREATE TABLE promotions (
            id               TEXT   PRIMARY KEY,
            name             TEXT   NOT NULL,
            message          TEXT   NOT NULL,
            product_ids      TEXT   NOT NULL,
            category         TEXT,
            starts_at        BIGINT,
            cron             TEXT,
            correlation_id   TEXT   NOT NULL,
            created_at       BIGINT NOT NULL,
            last_launched_at BIGINT,
            next_launch_at   BIGINT)",
    ),
    Migration::portable(
        101,
        "promotions_due",
        "CREATE INDEX promotions_due ON promotions (next_launch_at)",
    ),
    Migration::portable(
        102,
        "promotion_launches",
        "CREATE TABLE promotion_launches (
            promotion_id  TEXT   NOT NULL,
            scheduled_for BIGINT NOT NULL,
            launched_at   BIGINT NOT NULL,
            PRIMARY KEY (promotion_id, scheduled_for))",
    ),
];

pub fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub fn time(millis: i64) -> Result<DateTime<Utc>, StorageError> {
    DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| StorageError::Query(format!("bad time {millis} in the database")))
}

/// A promotion as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotionRow {
    pub id: Uuid,
    pub name: String,
    pub message: String,
    pub product_ids: String,
    pub category: Option<String>,
    pub starts_at: Option<i64>,
    pub cron: Option<String>,
    pub correlation_id: String,
    pub created_at: i64,
    pub last_launched_at: Option<i64>,
    pub next_launch_at: Option<i64>,
}

impl PromotionRow {
    fn from_row(row: &Row) -> Result<Self, StorageError> {
        Ok(PromotionRow {
            id: row.get("id")?,
            name: row.get("name")?,
            message: row.get("message")?,
            product_ids: row.get("product_ids")?,
            category: row.get("category")?,
            starts_at: row.get("starts_at")?,
            cron: row.get("cron")?,
            correlation_id: row.get("correlation_id")?,
            created_at: row.get("created_at")?,
            last_launched_at: row.get("last_launched_at")?,
            next_launch_at: row.get("next_launch_at")?,
        })
    }

    pub fn product_ids(&self) -> Result<Vec<Uuid>, StorageError> {
        serde_json::from_str(&self.product_ids).map_err(|e| {
            StorageError::Query(format!(
                "bad product ids {:?} in the database: {e}",
                self.product_ids
            ))
        })
    }
}

const COLUMNS: &str = "id, name, message, product_ids, category, starts_at, cron, correlation_id, \
                       created_at, last_launched_at, next_launch_at";

pub async fn insert(conn: &mut Conn, row: &PromotionRow) -> Result<(), StorageError> {
    query(
        "INSERT INTO promotions (id, name, message, product_ids, category, starts_at, cron,
             correlation_id, created_at, last_launched_at, next_launch_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(row.id)
    .bind(&row.name)
    .bind(&row.message)
    .bind(&row.product_ids)
    .bind(&row.category)
    .bind(row.starts_at)
    .bind(&row.cron)
    .bind(&row.correlation_id)
    .bind(row.created_at)
    .bind(row.last_launched_at)
    .bind(row.next_launch_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn by_id(conn: &mut Conn, id: Uuid) -> Result<Option<PromotionRow>, StorageError> {
    let row = query(&format!("SELECT {COLUMNS} FROM promotions WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(PromotionRow::from_row).transpose()
}

/// Promotions newest first (ids are UUIDv7), `page.fetch()` of them after the cursor.
pub async fn list(conn: &mut Conn, page: &PageRequest) -> Result<Vec<PromotionRow>, StorageError> {
    let rows = query(&format!(
        "SELECT {COLUMNS} FROM promotions WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2"
    ))
    .bind(&page.after)
    .bind(page.fetch())
    .fetch_all(conn)
    .await?;
    rows.iter().map(PromotionRow::from_row).collect()
}

/// Promotions with a launch due at `now`, the earliest first.
pub async fn due(conn: &mut Conn, now: i64, limit: i64) -> Result<Vec<PromotionRow>, StorageError> {
    let rows = query(&format!(
        "SELECT {COLUMNS} FROM promotions WHERE next_launch_at <= $1
         ORDER BY next_launch_at, id LIMIT $2"
    ))
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(PromotionRow::from_row).collect()
}

/// The earliest pending launch of any promotion.
pub async fn next_due(conn: &mut Conn) -> Result<Option<i64>, StorageError> {
    query("SELECT MIN(next_launch_at) FROM promotions")
        .scalar(conn)
        .await
}

/// Moves a promotion past a launch, if its next launch is still `expected` (so that two schedulers
/// never both launch one occurrence). `false` when another got there first.
pub async fn advance(
    conn: &mut Conn,
    id: Uuid,
    expected: i64,
    launched: i64,
    next: Option<i64>,
) -> Result<bool, StorageError> {
    let done = query(
        "UPDATE promotions SET last_launched_at = $3, next_launch_at = $4
         WHERE id = $1 AND next_launch_at = $2",
    )
    .bind(id)
    .bind(expected)
    .bind(launched)
    .bind(next)
    .execute(conn)
    .await?;
    Ok(done == 1)
}

/// Records the launch of an occurrence; `false` if it was already launched.
pub async fn record_launch(
    conn: &mut Conn,
    promotion_id: Uuid,
    scheduled_for: i64,
    launched_at: i64,
) -> Result<bool, StorageError> {
    let done = query(
        "INSERT INTO promotion_launches (promotion_id, scheduled_for, launched_at)
         VALUES ($1, $2, $3) ON CONFLICT (promotion_id, scheduled_for) DO NOTHING",
    )
    .bind(promotion_id)
    .bind(scheduled_for)
    .bind(launched_at)
    .execute(conn)
    .await?;
    Ok(done == 1)
}
