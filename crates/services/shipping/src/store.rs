//! Shipping's tables and the SQL on them (portable: SQLite and PostgreSQL).
//!
//! - `shipments`: one per order at most, with the owner, the address (the only copy outside the
//!   orders service), the tracking number and the correlation id of the saga that asked for it
//!   (the dispatcher's events carry it on);
//! - `shipping_cancellations`: orders known to be cancelled, so that a late request ships nothing.

use emporium_platform::storage::{Conn, Migration, Row, StorageError, query};
use uuid::Uuid;

use crate::domain::ShipmentStatus;

pub const MIGRATIONS: &[Migration] = &[
    Migration::portable(
        100,
        "shipments",
        "CREATE TABLE shipments (
            id              TEXT   PRIMARY KEY,
            order_id        TEXT   NOT NULL UNIQUE,
            user_id         TEXT   NOT NULL,
            status          TEXT   NOT NULL,
            tracking_number TEXT   NOT NULL UNIQUE,
            carrier         TEXT   NOT NULL,
            address         TEXT   NOT NULL,
            correlation_id  TEXT   NOT NULL,
            created_at      BIGINT NOT NULL,
            updated_at      BIGINT NOT NULL)",
    ),
    Migration::portable(
        101,
        "shipments_by_status",
        "CREATE INDEX shipments_by_status ON shipments (status, created_at)",
    ),
    Migration::portable(
        102,
        "shipping_cancellations",
        "CREATE TABLE shipping_cancellations (
            order_id     TEXT   PRIMARY KEY,
            user_id      TEXT   NOT NULL,
            cancelled_at BIGINT NOT NULL)",
    ),
];

pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A shipment as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipmentRow {
    pub id: Uuid,
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub status: String,
    pub tracking_number: String,
    pub carrier: String,
    pub address: String,
    pub correlation_id: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ShipmentRow {
    /// A row of [`COLUMNS`].
    fn from_row(row: &Row) -> Result<Self, StorageError> {
        Ok(ShipmentRow {
            id: row.get("id")?,
            order_id: row.get("order_id")?,
            user_id: row.get("user_id")?,
            status: row.get("status")?,
            tracking_number: row.get("tracking_number")?,
            carrier: row.get("carrier")?,
            address: row.get("address")?,
            correlation_id: row.get("correlation_id")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
        })
    }

    pub fn status(&self) -> Result<ShipmentStatus, StorageError> {
        ShipmentStatus::parse(&self.status).ok_or_else(|| {
            StorageError::Query(format!("unknown shipment status {:?}", self.status))
        })
    }
}

const COLUMNS: &str = "id, order_id, user_id, status, tracking_number, carrier, address, correlation_id, created_at, updated_at";

/// Records a new shipment. `false` if the order already has one.
pub async fn insert(conn: &mut Conn, row: &ShipmentRow) -> Result<bool, StorageError> {
    let done = query(
        "INSERT INTO shipments (id, order_id, user_id, status, tracking_number, carrier, address,
             correlation_id, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(row.id)
    .bind(row.order_id)
    .bind(row.user_id)
    .bind(&row.status)
    .bind(&row.tracking_number)
    .bind(&row.carrier)
    .bind(&row.address)
    .bind(&row.correlation_id)
    .bind(row.created_at)
    .bind(row.updated_at)
    .execute(conn)
    .await?;
    Ok(done == 1)
}

pub async fn by_id(conn: &mut Conn, id: Uuid) -> Result<Option<ShipmentRow>, StorageError> {
    query(&format!("SELECT {COLUMNS} FROM shipments WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(ShipmentRow::from_row)
        .transpose()
}

pub async fn by_order(
    conn: &mut Conn,
    order_id: Uuid,
) -> Result<Option<ShipmentRow>, StorageError> {
    query(&format!(
        "SELECT {COLUMNS} FROM shipments WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(ShipmentRow::from_row)
    .transpose()
}

/// Moves a shipment from `from` to `to` if it is still in `from` (never racing another writer:
/// the status is checked in the same statement). Returns the shipment as it now is.
pub async fn transition(
    conn: &mut Conn,
    id: Uuid,
    from: ShipmentStatus,
    to: ShipmentStatus,
    now: i64,
) -> Result<Option<ShipmentRow>, StorageError> {
    query(&format!(
        "UPDATE shipments SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4
         RETURNING {COLUMNS}"
    ))
    .bind(to.as_str())
    .bind(now)
    .bind(id)
    .bind(from.as_str())
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(ShipmentRow::from_row)
    .transpose()
}

/// `READY` shipments created at or before `cutoff`, oldest first.
pub async fn due(
    conn: &mut Conn,
    cutoff: i64,
    limit: i64,
) -> Result<Vec<ShipmentRow>, StorageError> {
    query(&format!(
        "SELECT {COLUMNS} FROM shipments WHERE status = $1 AND created_at <= $2
         ORDER BY created_at LIMIT $3"
    ))
    .bind(ShipmentStatus::Ready.as_str())
    .bind(cutoff)
    .bind(limit)
    .fetch_all(conn)
    .await?
    .iter()
    .map(ShipmentRow::from_row)
    .collect()
}

/// Remembers that an order was cancelled (and whose it was).
pub async fn remember_cancelled(
    conn: &mut Conn,
    order_id: Uuid,
    user_id: Uuid,
    now: i64,
) -> Result<(), StorageError> {
    query(
        "INSERT INTO shipping_cancellations (order_id, user_id, cancelled_at) VALUES ($1, $2, $3)
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id)
    .bind(user_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// The owner of a cancelled order, if it is known to be cancelled.
pub async fn cancelled_owner(
    conn: &mut Conn,
    order_id: Uuid,
) -> Result<Option<Uuid>, StorageError> {
    query("SELECT user_id FROM shipping_cancellations WHERE order_id = $1")
        .bind(order_id)
        .scalar_optional(conn)
        .await
}
