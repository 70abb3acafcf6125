//! Payments' tables and the SQL on them (portable: SQLite and PostgreSQL).
//!
//! - `payment_orders`: what payments knows of each order (owner, total, token, and which saga
//!   events it has seen), filled in as `OrderCreated`, `InventoryReserved` and `OrderCancelled`
//!   arrive, in whatever order;
//! - `payments`: one row per order at most (`order_id` is unique), with its status.

use emporium_platform::storage::{Conn, Migration, Row, StorageError, query};
use uuid::Uuid;

use crate::domain::{OrderFacts, PaymentStatus};

pub const MIGRATIONS: &[Migration] = &[
    Migration::portable(
        100,
        "payment_orders",
        "CREATE TABLE payment_orders (
            order_id   TEXT   PRIMARY KEY,
            user_id    TEXT,
            amount     BIGINT,
            currency   TEXT,
            token      TEXT,
            created    BIGINT NOT NULL DEFAULT 0,
            reserved   BIGINT NOT NULL DEFAULT 0,
            cancelled  BIGINT NOT NULL DEFAULT 0,
            updated_at BIGINT NOT NULL)",
    ),
    Migration::portable(
        101,
        "payments",
        "CREATE TABLE payments (
            id             TEXT   PRIMARY KEY,
            order_id       TEXT   NOT NULL UNIQUE,
            user_id        TEXT,
            amount         BIGINT NOT NULL,
            currency       TEXT   NOT NULL,
            status         TEXT   NOT NULL,
            decline_reason TEXT,
            created_at     BIGINT NOT NULL,
            updated_at     BIGINT NOT NULL)",
    ),
];

pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The columns of [`OrderRow`].
const ORDER_COLUMNS: &str =
    "order_id, user_id, amount, currency, token, created, reserved, cancelled";

/// An order as payments knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    pub order_id: Uuid,
    pub user_id: Option<Uuid>,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub token: Option<String>,
    pub created: bool,
    pub reserved: bool,
    pub cancelled: bool,
}

impl OrderRow {
    /// Reads the [`ORDER_COLUMNS`] of `row`.
    fn from_row(row: &Row) -> Result<Self, StorageError> {
        Ok(OrderRow {
            order_id: row.get("order_id")?,
            user_id: row.get("user_id")?,
            amount: row.get("amount")?,
            currency: row.get("currency")?,
            token: row.get("token")?,
            created: row.get("created")?,
            reserved: row.get("reserved")?,
            cancelled: row.get("cancelled")?,
        })
    }
}

/// A payment as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRow {
    pub id: Uuid,
    pub order_id: Uuid,
    pub user_id: Option<Uuid>,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub decline_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl PaymentRow {
    /// Reads the [`PAYMENT_COLUMNS`] of `row`.
    fn from_row(row: &Row) -> Result<Self, StorageError> {
        Ok(PaymentRow {
            id: row.get("id")?,
            order_id: row.get("order_id")?,
            user_id: row.get("user_id")?,
            amount: row.get("amount")?,
            currency: row.get("currency")?,
            status: row.get("status")?,
            decline_reason: row.get("decline_reason")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
        })
    }

    pub fn status(&self) -> Result<PaymentStatus, StorageError> {
        PaymentStatus::parse(&self.status)
            .ok_or_else(|| StorageError::Query(format!("unknown payment status {:?}", self.status)))
    }
}

const PAYMENT_COLUMNS: &str =
    "id, order_id, user_id, amount, currency, status, decline_reason, created_at, updated_at";

/// `OrderCreated`: the owner, the total and the token.
pub async fn record_created(
    conn: &mut Conn,
    order_id: Uuid,
    user_id: Uuid,
    amount: i64,
    currency: &str,
    token: &str,
    now: i64,
) -> Result<(), StorageError> {
    query(
        "INSERT INTO payment_orders (order_id, user_id, amount, currency, token, created, updated_at)
         VALUES ($1, $2, $3, $4, $5, 1, $6)
         ON CONFLICT (order_id) DO UPDATE SET user_id = excluded.user_id, amount = excluded.amount,
             currency = excluded.currency, token = excluded.token, created = 1,
             updated_at = excluded.updated_at",
    )
    .bind(order_id)
    .bind(user_id)
    .bind(amount)
    .bind(currency)
    .bind(token)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// `InventoryReserved`.
pub async fn record_reserved(
    conn: &mut Conn,
    order_id: Uuid,
    now: i64,
) -> Result<(), StorageError> {
    query(
        "INSERT INTO payment_orders (order_id, reserved, updated_at) VALUES ($1, 1, $2)
         ON CONFLICT (order_id) DO UPDATE SET reserved = 1, updated_at = excluded.updated_at",
    )
    .bind(order_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// `OrderCancelled`. Also learns the owner, should the cancellation be the first event seen.
pub async fn record_cancelled(
    conn: &mut Conn,
    order_id: Uuid,
    user_id: Uuid,
    now: i64,
) -> Result<(), StorageError> {
    query(
        "INSERT INTO payment_orders (order_id, user_id, cancelled, updated_at) VALUES ($1, $2, 1, $3)
         ON CONFLICT (order_id) DO UPDATE SET cancelled = 1,
             user_id = COALESCE(payment_orders.user_id, excluded.user_id),
             updated_at = excluded.updated_at",
    )
    .bind(order_id)
    .bind(user_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets the token once the order's payment is decided: it has no further use.
pub async fn forget_token(conn: &mut Conn, order_id: Uuid) -> Result<(), StorageError> {
    query("UPDATE payment_orders SET token = NULL WHERE order_id = $1")
        .bind(order_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn order(conn: &mut Conn, order_id: Uuid) -> Result<Option<OrderRow>, StorageError> {
    query(&format!(
        "SELECT {ORDER_COLUMNS} FROM payment_orders WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(OrderRow::from_row)
    .transpose()
}

/// The facts the domain decides on: the order, and whether it has a payment, in one statement.
pub async fn facts(
    conn: &mut Conn,
    order_id: Uuid,
) -> Result<(Option<OrderRow>, OrderFacts), StorageError> {
    let row = query(&format!(
        "SELECT {ORDER_COLUMNS},
                CAST(CASE WHEN EXISTS (SELECT 1 FROM payments p WHERE p.order_id = o.order_id)
                     THEN 1 ELSE 0 END AS BIGINT) AS has_payment
         FROM payment_orders o WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else {
        // Nothing to decide on before the order is known.
        return Ok((None, OrderFacts::default()));
    };
    let order = OrderRow::from_row(&row)?;
    let facts = OrderFacts {
        created: order.created,
        reserved: order.reserved,
        cancelled: order.cancelled,
        has_payment: row.get("has_payment")?,
    };
    Ok((Some(order), facts))
}

pub async fn payment_of_order(
    conn: &mut Conn,
    order_id: Uuid,
) -> Result<Option<PaymentRow>, StorageError> {
    query(&format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(PaymentRow::from_row)
    .transpose()
}

/// Records the order's payment. `false` if it already has one (exactly one payment per order).
pub async fn insert_payment(conn: &mut Conn, payment: &PaymentRow) -> Result<bool, StorageError> {
    let inserted = query(
        "INSERT INTO payments (id, order_id, user_id, amount, currency, status, decline_reason,
             created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(payment.id)
    .bind(payment.order_id)
    .bind(payment.user_id)
    .bind(payment.amount)
    .bind(&payment.currency)
    .bind(&payment.status)
    .bind(&payment.decline_reason)
    .bind(payment.created_at)
    .bind(payment.updated_at)
    .execute(conn)
    .await?;
    Ok(inserted == 1)
}

/// Moves a payment from `from` to `to`; `false` if it was not in `from` any more.
pub async fn set_status(
    conn: &mut Conn,
    payment_id: Uuid,
    from: PaymentStatus,
    to: PaymentStatus,
    now: i64,
) -> Result<bool, StorageError> {
    let updated =
        query("UPDATE payments SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4")
            .bind(to.as_str())
            .bind(now)
            .bind(payment_id)
            .bind(from.as_str())
            .execute(conn)
            .await?;
    Ok(updated == 1)
}
