//! Inventory's tables and the SQL on them (portable: SQLite and PostgreSQL).
//!
//! - `stock`: one row per product with its levels, the totals that make conservation checkable
//!   (`initial_stock`, `adjustments`), the low-stock flag and the deletion mark;
//! - `stock_orders`: what inventory knows of each order of the saga ([`OrderState`]);
//! - `reservations`: the units held for an order, one row per product.

use emporium_events::StockLine;
use emporium_platform::storage::{
    Conn, Migration, MultiRow, Row, StorageError, placeholders, query,
};
use uuid::Uuid;

use crate::domain::{Levels, OrderState, Shortfall};

pub const MIGRATIONS: &[Migration] = &[
    Migration::portable(
        100,
        "stock",
        "CREATE TABLE stock (
            product_id    TEXT   PRIMARY KEY,
            initial_stock BIGINT NOT NULL,
            adjustments   BIGINT NOT NULL DEFAULT 0,
            available     BIGINT NOT NULL,
            reserved      BIGINT NOT NULL DEFAULT 0,
            committed     BIGINT NOT NULL DEFAULT 0,
            low           BIGINT NOT NULL DEFAULT 0,
            deleted       BIGINT NOT NULL DEFAULT 0,
            created_at    BIGINT NOT NULL,
            updated_at    BIGINT NOT NULL,
            CHECK (available >= 0 AND reserved >= 0 AND committed >= 0))",
    ),
    Migration::portable(
        101,
        "stock_orders",
        "CREATE TABLE stock_orders (
            order_id   TEXT   PRIMARY KEY,
            state      TEXT   NOT NULL,
            updated_at BIGINT NOT NULL)",
    ),
    Migration::portable(
        102,
        "reservations",
        "CREATE TABLE reservations (
            order_id   TEXT   NOT NULL,
            product_id TEXT   NOT NULL,
            quantity   BIGINT NOT NULL,
            PRIMARY KEY (order_id, product_id))",
    ),
];

/// A product's stock as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockRow {
    pub product_id: Uuid,
    pub initial_stock: i64,
    pub adjustments: i64,
    pub available: i64,
    pub reserved: i64,
    pub committed: i64,
    pub low: bool,
    pub deleted: bool,
    pub updated_at: i64,
}

impl StockRow {
    fn from_row(row: &Row) -> Result<Self, StorageError> {
        Ok(StockRow {
            product_id: row.get("product_id")?,
            initial_stock: row.get("initial_stock")?,
            adjustments: row.get("adjustments")?,
            available: row.get("available")?,
            reserved: row.get("reserved")?,
            committed: row.get("committed")?,
            low: row.get("low")?,
            deleted: row.get("deleted")?,
            updated_at: row.get("updated_at")?,
        })
    }

    pub fn levels(&self) -> Levels {
        Levels {
            initial: self.initial_stock,
            adjustments: self.adjustments,
            available: self.available,
            reserved: self.reserved,
            committed: self.committed,
        }
    }
}

const COLUMNS: &str = "product_id, initial_stock, adjustments, available, reserved, committed, low, deleted, updated_at";

pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Creates the stock row of a new product. `false` if it already exists (a duplicate event).
pub async fn insert_stock(
    conn: &mut Conn,
    product_id: Uuid,
    initial: i64,
    low: bool,
    now: i64,
) -> Result<bool, StorageError> {
    let inserted = query(
        "INSERT INTO stock (product_id, initial_stock, available, low, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (product_id) DO NOTHING",
    )
    .bind(product_id)
    .bind(initial)
    .bind(initial)
    .bind(low)
    .bind(now)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(inserted == 1)
}

/// Marks a product deleted: its stock stays (held units still belong to their orders), but no new
/// reservation takes it.
pub async fn mark_deleted(conn: &mut Conn, product_id: Uuid, now: i64) -> Result<(), StorageError> {
    query("UPDATE stock SET deleted = 1, updated_at = $1 WHERE product_id = $2")
        .bind(now)
        .bind(product_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn stock(conn: &mut Conn, product_id: Uuid) -> Result<Option<StockRow>, StorageError> {
    query(&format!(
        "SELECT {COLUMNS} FROM stock WHERE product_id = $1"
    ))
    .bind(product_id)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(StockRow::from_row)
    .transpose()
}

/// The rows of these products (those it knows), by product id.
pub async fn stocks(conn: &mut Conn, product_ids: &[Uuid]) -> Result<Vec<StockRow>, StorageError> {
    if product_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM stock WHERE product_id IN ({}) ORDER BY product_id",
        placeholders(1, product_ids.len())
    );
    query(&sql)
        .bind_all(product_ids)
        .fetch_all(conn)
        .await?
        .iter()
        .map(StockRow::from_row)
        .collect()
}

/// Up to `fetch` rows after product id `after`, by product id.
pub async fn list(
    conn: &mut Conn,
    after: Option<&str>,
    fetch: i64,
) -> Result<Vec<StockRow>, StorageError> {
    query(&format!(
        "SELECT {COLUMNS} FROM stock WHERE product_id > $1 ORDER BY product_id LIMIT $2"
    ))
    .bind(after.unwrap_or(""))
    .bind(fetch)
    .fetch_all(conn)
    .await?
    .iter()
    .map(StockRow::from_row)
    .collect()
}

/// Units available across every product that can still be sold.
pub async fn total_available(conn: &mut Conn) -> Result<i64, StorageError> {
    query("SELECT CAST(COALESCE(SUM(available), 0) AS BIGINT) FROM stock WHERE deleted = 0")
        .scalar(conn)
        .await
}

/// Where a product's stock stands after a change, as far as its low-stock flag is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Availability {
    pub product_id: Uuid,
    pub available: i64,
    pub low: bool,
}

/// What [`try_reserve`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Every line is held; each product's availability after it.
    Held(Vec<Availability>),
    /// Nothing is held: this line fell short.
    Short(Shortfall),
}

static RESERVATIONS_INSERT: MultiRow = MultiRow::new(
    "INSERT INTO reservations (order_id, product_id, quantity) VALUES ",
    0,
    3,
    "",
);

/// Holds every line for `order_id`, or none: each line is a conditional `UPDATE` that takes units
/// only if enough are available, inside a savepoint that is rolled back as soon as one line falls
/// short. The lines name distinct products.
///
/// An error leaves the savepoint open: the caller's transaction is then dropped (rolled back)
/// whole, as every handler error does.
pub async fn try_reserve(
    conn: &mut Conn,
    order_id: Uuid,
    lines: &[StockLine],
    now: i64,
) -> Result<Reservation, StorageError> {
    query("SAVEPOINT reserve").execute(conn).await?;
    let mut held = Vec::with_capacity(lines.len());
    for line in lines {
        let after = query(
            "UPDATE stock SET available = available - $1, reserved = reserved + $2, updated_at = $3
             WHERE product_id = $4 AND deleted = 0 AND available >= $5
             RETURNING available, low",
        )
        .bind(line.quantity)
        .bind(line.quantity)
        .bind(now)
        .bind(line.product_id)
        .bind(line.quantity)
        .fetch_optional(conn)
        .await?;
        let Some(after) = after else {
            query("ROLLBACK TO SAVEPOINT reserve").execute(conn).await?;
            let available: Option<i64> =
                query("SELECT available FROM stock WHERE product_id = $1 AND deleted = 0")
                    .bind(line.product_id)
                    .scalar_optional(conn)
                    .await?;
            return Ok(Reservation::Short(Shortfall {
                product_id: line.product_id,
                requested: line.quantity,
                available: available.unwrap_or(0),
            }));
        };
        held.push(Availability {
            product_id: line.product_id,
            available: after.get("available")?,
            low: after.get("low")?,
        });
    }
    RESERVATIONS_INSERT
        .execute_for(conn, lines, |insert, line| {
            insert
                .bind(order_id)
                .bind(line.product_id)
                .bind(line.quantity)
        })
        .await?;
    query("RELEASE SAVEPOINT reserve").execute(conn).await?;
    Ok(Reservation::Held(held))
}

/// The lines held for an order, by product id.
pub async fn reservation(conn: &mut Conn, order_id: Uuid) -> Result<Vec<StockLine>, StorageError> {
    query("SELECT product_id, quantity FROM reservations WHERE order_id = $1 ORDER BY product_id")
        .bind(order_id)
        .fetch_all(conn)
        .await?
        .iter()
        .map(|row| {
            Ok(StockLine {
                product_id: row.get("product_id")?,
                quantity: row.get("quantity")?,
            })
        })
        .collect()
}

/// Gives held units back to `available`.
pub async fn release(conn: &mut Conn, lines: &[StockLine], now: i64) -> Result<(), StorageError> {
    for line in lines {
        move_units(
            conn,
            "UPDATE stock SET available = available + $1, reserved = reserved - $2, updated_at = $3
             WHERE product_id = $4 AND reserved >= $5",
            line,
            now,
        )
        .await?;
    }
    Ok(())
}

/// Turns held units into sold ones.
pub async fn commit(conn: &mut Conn, lines: &[StockLine], now: i64) -> Result<(), StorageError> {
    for line in lines {
        move_units(
            conn,
            "UPDATE stock SET committed = committed + $1, reserved = reserved - $2, updated_at = $3
             WHERE product_id = $4 AND reserved >= $5",
            line,
            now,
        )
        .await?;
    }
    Ok(())
}

async fn move_units(
    conn: &mut Conn,
    sql: &str,
    line: &StockLine,
    now: i64,
) -> Result<(), StorageError> {
    let moved = query(sql)
        .bind(line.quantity)
        .bind(line.quantity)
        .bind(now)
        .bind(line.product_id)
        .bind(line.quantity)
        .execute(conn)
        .await?;
    if moved == 1 {
        Ok(())
    } else {
        // A reservation row without the units it says are held: the books disagree, and carrying
        // on would break conservation. Refuse (the event is retried, then dead-lettered).
        Err(StorageError::Query(format!(
            "product {} does not hold {} reserved units",
            line.product_id, line.quantity
        )))
    }
}

pub async fn order_state(
    conn: &mut Conn,
    order_id: Uuid,
) -> Result<Option<OrderState>, StorageError> {
    let state: Option<String> = query("SELECT state FROM stock_orders WHERE order_id = $1")
        .bind(order_id)
        .scalar_optional(conn)
        .await?;
    state
        .map(|s| {
            OrderState::parse(&s)
                .ok_or_else(|| StorageError::Query(format!("unknown order state {s:?}")))
        })
        .transpose()
}

/// Moves the order's state from `from` (`None`: inventory has no record of it yet) to `to`, only
/// if it is still `from`: a conditional `INSERT` or `UPDATE`, so that two transactions that both
/// read `from` cannot both act on it (PostgreSQL's READ COMMITTED lets them both read it; only one
/// of them changes the row). `false` when the state was no longer `from`; the caller then moves
/// no units.
pub async fn move_order_state(
    conn: &mut Conn,
    order_id: Uuid,
    from: Option<OrderState>,
    to: OrderState,
    now: i64,
) -> Result<bool, StorageError> {
    let changed = match from {
        None => {
            query(
                "INSERT INTO stock_orders (order_id, state, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (order_id) DO NOTHING",
            )
            .bind(order_id)
            .bind(to.as_str())
            .bind(now)
            .execute(conn)
            .await?
        }
        Some(from) => {
            query(
                "UPDATE stock_orders SET state = $1, updated_at = $2
                 WHERE order_id = $3 AND state = $4",
            )
            .bind(to.as_str())
            .bind(now)
            .bind(order_id)
            .bind(from.as_str())
            .execute(conn)
            .await?
        }
    };
    Ok(changed == 1)
}

/// The first of `products` (in their order) that has no stock row at all: its `ProductCreated`
/// has not been seen yet. Deleted products have a row and are not reported.
pub async fn first_unknown_product(
    conn: &mut Conn,
    products: &[Uuid],
) -> Result<Option<Uuid>, StorageError> {
    if products.is_empty() {
        return Ok(None);
    }
    let sql = format!(
        "SELECT product_id FROM stock WHERE product_id IN ({})",
        placeholders(1, products.len())
    );
    let known: std::collections::HashSet<Uuid> = query(&sql)
        .bind_all(products)
        .scalars::<Uuid>(conn)
        .await?
        .into_iter()
        .collect();
    Ok(products.iter().find(|p| !known.contains(p)).copied())
}

/// Adds `delta` units (negative removes) unless `available` would go below zero. `None` when the
/// product is unknown or the change was refused; the caller tells which.
pub async fn adjust(
    conn: &mut Conn,
    product_id: Uuid,
    delta: i64,
    now: i64,
) -> Result<Option<StockRow>, StorageError> {
    query(&format!(
        "UPDATE stock SET available = available + $1, adjustments = adjustments + $2, updated_at = $3
         WHERE product_id = $4 AND available + $5 >= 0 RETURNING {COLUMNS}"
    ))
    .bind(delta)
    .bind(delta)
    .bind(now)
    .bind(product_id)
    .bind(delta)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(StockRow::from_row)
    .transpose()
}

pub async fn set_low(conn: &mut Conn, product_id: Uuid, low: bool) -> Result<(), StorageError> {
    query("UPDATE stock SET low = $1 WHERE product_id = $2")
        .bind(low)
        .bind(product_id)
        .execute(conn)
        .await?;
    Ok(())
}
