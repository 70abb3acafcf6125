//! The orders database: the schema and every statement, in SQL that SQLite and PostgreSQL both
//! accept. Ids are TEXT (UUIDv7), times BIGINT epoch millis, money BIGINT minor units + TEXT currency.

use std::collections::HashMap;

use emporium_events::{Address, CancellationReason, Money};
use emporium_platform::storage::{
    Conn, Migration, MultiRow, Row, StorageError, Tx, placeholders, query,
};
use uuid::Uuid;

use crate::domain::{OrderState, PaymentStatus, ShipmentStatus, Status};

pub const MIGRATIONS: &[Migration] = &[
    // The catalog as this service needs it, built from product-events: placing an order reads
    // prices here, never from the client and never from a synchronous call.
    Migration::portable(
        100,
        "products",
        "CREATE TABLE products (
            id             TEXT   PRIMARY KEY,
            name           TEXT   NOT NULL,
            price_amount   BIGINT NOT NULL,
            price_currency TEXT   NOT NULL,
            deleted        BIGINT NOT NULL DEFAULT 0,
            updated_at     BIGINT NOT NULL)",
    ),
    Migration::portable(
        101,
        "orders",
        "CREATE TABLE orders (
            id                  TEXT   PRIMARY KEY,
            user_id             TEXT   NOT NULL,
            status              TEXT   NOT NULL,
            cancellation_reason TEXT,
            total_amount        BIGINT NOT NULL,
            currency            TEXT   NOT NULL,
            ship_name           TEXT   NOT NULL,
            ship_line1          TEXT   NOT NULL,
            ship_line2          TEXT,
            ship_city           TEXT   NOT NULL,
            ship_postal_code    TEXT   NOT NULL,
            ship_country        TEXT   NOT NULL,
            payment_id          TEXT,
            payment_status      TEXT,
            shipment_id         TEXT,
            shipment_status     TEXT,
            tracking_number     TEXT,
            correlation_id      TEXT   NOT NULL,
            created_at          BIGINT NOT NULL,
            updated_at          BIGINT NOT NULL)",
    ),
    Migration::portable(
        102,
        "orders_by_user",
        "CREATE INDEX orders_by_user ON orders (user_id, id)",
    ),
    // The saga-timeout sweeper looks for old PENDING orders.
    Migration::portable(
        103,
        "orders_by_status",
        "CREATE INDEX orders_by_status ON orders (status, created_at)",
    ),
    Migration::portable(
        104,
        "order_items",
        "CREATE TABLE order_items (
            order_id    TEXT   NOT NULL,
            line        BIGINT NOT NULL,
            product_id  TEXT   NOT NULL,
            name        TEXT   NOT NULL,
            unit_amount BIGINT NOT NULL,
            quantity    BIGINT NOT NULL,
            PRIMARY KEY (order_id, line))",
    ),
    Migration::portable(
        105,
        "order_timeline",
        "CREATE TABLE order_timeline (
            order_id TEXT   NOT NULL,
            seq      BIGINT NOT NULL,
            status   TEXT,
            event    TEXT,
            at       BIGINT NOT NULL,
            PRIMARY KEY (order_id, seq))",
    ),
    // `Idempotency-Key`s: per user, the request they came with and the response given.
    Migration::portable(
        106,
        "idempotency_keys",
        "CREATE TABLE idempotency_keys (
            user_id    TEXT   NOT NULL,
            key        TEXT   NOT NULL,
            request    TEXT   NOT NULL,
            status     BIGINT NOT NULL,
            response   TEXT   NOT NULL,
            order_id   TEXT   NOT NULL,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (user_id, key))",
    ),
    // The timeline's length on the order's row: the next entry's place is known when the row is
    // taken, so entries are written at commit without reading the timeline first.
    Migration::portable(
        107,
        "orders_timeline_len",
        "ALTER TABLE orders ADD COLUMN timeline_len BIGINT NOT NULL DEFAULT 0",
    ),
    Migration::portable(
        108,
        "orders_timeline_len_backfill",
        "UPDATE orders SET timeline_len =
           COALESCE((SELECT MAX(seq) FROM order_timeline t WHERE t.order_id = orders.id), 0)",
    ),
];

/// A product as the read model knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub price: Money,
    pub deleted: bool,
}

/// `payment:{id,status}`.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentSummary {
    pub id: Uuid,
    pub status: PaymentStatus,
}

/// `shipment:{id,status,trackingNumber}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ShipmentSummary {
    pub id: Uuid,
    pub status: ShipmentStatus,
    pub tracking_number: Option<String>,
}

/// One row of `orders`.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub state: OrderState,
    pub total: Money,
    pub address: Address,
    pub payment: Option<PaymentSummary>,
    pub shipment: Option<ShipmentSummary>,
    /// Of the request that placed it: the sweeper's events carry it too.
    pub correlation_id: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// Entries in its timeline: the last one's `seq`.
    pub timeline_len: i64,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemRow {
    pub product_id: String,
    pub name: String,
    pub unit_amount: i64,
    pub quantity: i64,
}

/// One timeline entry: a status the order took, or a saga event seen for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Status(Status),
    Event(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TimelineRow {
    pub entry: Entry,
    pub at: i64,
}

/// What an `Idempotency-Key` was first used with.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    /// The order the first request created.
    pub order_id: Uuid,
    /// The first request, as canonical JSON.
    pub request: String,
    pub status: u16,
    pub response: String,
}

fn corrupt(what: &str, value: &str) -> StorageError {
    StorageError::Query(format!("corrupt {what} in the orders database: {value:?}"))
}

// ------------------------------------------------------------------ products

/// Creates or replaces a product, unless it was deleted (a deletion is final).
pub async fn upsert_product(
    conn: &mut Conn,
    id: Uuid,
    name: &str,
    price: &Money,
    now: i64,
) -> Result<(), StorageError> {
    query(
        "INSERT INTO products (id, name, price_amount, price_currency, deleted, updated_at)
         VALUES ($1, $2, $3, $4, 0, $5)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, price_amount = excluded.price_amount,
             price_currency = excluded.price_currency, updated_at = excluded.updated_at
         WHERE products.deleted = 0",
    )
    .bind(id)
    .bind(name)
    .bind(price.amount)
    .bind(&price.currency)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a product deleted (a tombstone if it was never seen).
pub async fn delete_product(conn: &mut Conn, id: Uuid, now: i64) -> Result<(), StorageError> {
    query(
        "INSERT INTO products (id, name, price_amount, price_currency, deleted, updated_at)
         VALUES ($1, '', 0, '', 1, $2)
         ON CONFLICT (id) DO UPDATE SET deleted = 1, updated_at = excluded.updated_at",
    )
    .bind(id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// The products among `ids` that the read model knows (deleted ones included).
pub async fn products(
    conn: &mut Conn,
    ids: &[String],
) -> Result<HashMap<String, Product>, StorageError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT id, name, price_amount, price_currency, deleted FROM products WHERE id IN ({})",
        placeholders(1, ids.len())
    );
    let rows = query(&sql).bind_all(ids).fetch_all(conn).await?;
    rows.iter()
        .map(|row| {
            let product = Product {
                id: row.get("id")?,
                name: row.get("name")?,
                price: Money::new(
                    row.get("price_amount")?,
                    row.get::<String>("price_currency")?,
                ),
                deleted: row.get("deleted")?,
            };
            Ok((product.id.clone(), product))
        })
        .collect()
}

// -------------------------------------------------------------------- orders

const ORDER_COLUMNS: &str = "id, user_id, status, cancellation_reason, total_amount, currency,
    ship_name, ship_line1, ship_line2, ship_city, ship_postal_code, ship_country,
    payment_id, payment_status, shipment_id, shipment_status, tracking_number,
    correlation_id, created_at, updated_at, timeline_len";

fn order_from_row(row: &Row) -> Result<OrderRow, StorageError> {
    let status: String = row.get("status")?;
    let reason: Option<String> = row.get("cancellation_reason")?;
    let payment = match (
        row.get::<Option<Uuid>>("payment_id")?,
        row.get::<Option<String>>("payment_status")?,
    ) {
        (Some(id), Some(status)) => Some(PaymentSummary {
            id,
            status: PaymentStatus::parse(&status)
                .ok_or_else(|| corrupt("payment status", &status))?,
        }),
        _ => None,
    };
    let shipment = match (
        row.get::<Option<Uuid>>("shipment_id")?,
        row.get::<Option<String>>("shipment_status")?,
    ) {
        (Some(id), Some(status)) => Some(ShipmentSummary {
            id,
            status: ShipmentStatus::parse(&status)
                .ok_or_else(|| corrupt("shipment status", &status))?,
            tracking_number: row.get("tracking_number")?,
        }),
        _ => None,
    };
    Ok(OrderRow {
        id: row.get("id")?,
        user_id: row.get("user_id")?,
        state: OrderState {
            status: Status::parse(&status).ok_or_else(|| corrupt("status", &status))?,
            cancellation_reason: reason
                .map(|r| {
                    r.parse::<CancellationReason>()
                        .map_err(|_| corrupt("reason", &r))
                })
                .transpose()?,
        },
        total: Money::new(row.get("total_amount")?, row.get::<String>("currency")?),
        address: Address {
            name: row.get("ship_name")?,
            line1: row.get("ship_line1")?,
            line2: row.get("ship_line2")?,
            city: row.get("ship_city")?,
            postal_code: row.get("ship_postal_code")?,
            country: row.get("ship_country")?,
        },
        payment,
        shipment,
        correlation_id: row.get("correlation_id")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        timeline_len: row.get("timeline_len")?,
    })
}

static ORDER_ITEMS_INSERT: MultiRow = MultiRow::new(
    "INSERT INTO order_items (order_id, line, product_id, name, unit_amount, quantity) VALUES ",
    0,
    6,
    "",
);

/// Writes a new order with its lines and its first timeline entry, its status (`PENDING`), at
/// `order.timeline_len` (1).
pub async fn insert_order(
    tx: &mut Tx,
    order: &OrderRow,
    items: &[ItemRow],
) -> Result<(), StorageError> {
    query(&format!(
        "INSERT INTO orders ({ORDER_COLUMNS}) VALUES ({})",
        placeholders(1, 21)
    ))
    .bind(order.id)
    .bind(order.user_id)
    .bind(order.state.status.as_str())
    .bind(order.state.cancellation_reason.map(|r| r.as_str()))
    .bind(order.total.amount)
    .bind(&order.total.currency)
    .bind(&order.address.name)
    .bind(&order.address.line1)
    .bind(&order.address.line2)
    .bind(&order.address.city)
    .bind(&order.address.postal_code)
    .bind(&order.address.country)
    .bind(order.payment.as_ref().map(|p| p.id))
    .bind(order.payment.as_ref().map(|p| p.status.as_str()))
    .bind(order.shipment.as_ref().map(|s| s.id))
    .bind(order.shipment.as_ref().map(|s| s.status.as_str()))
    .bind(
        order
            .shipment
            .as_ref()
            .and_then(|s| s.tracking_number.clone()),
    )
    .bind(&order.correlation_id)
    .bind(order.created_at)
    .bind(order.updated_at)
    .bind(order.timeline_len)
    .execute(tx.conn())
    .await?;
    let lines: Vec<(i64, &ItemRow)> = (0..).zip(items).collect();
    ORDER_ITEMS_INSERT
        .execute_for(tx.conn(), &lines, |insert, (line, item)| {
            insert
                .bind(order.id)
                .bind(*line)
                .bind(&item.product_id)
                .bind(&item.name)
                .bind(item.unit_amount)
                .bind(item.quantity)
        })
        .await?;
    append_timeline(
        tx,
        order.id,
        order.timeline_len,
        &Entry::Status(order.state.status),
        order.created_at,
    )
}

/// Takes the order's row for the rest of the transaction (a write, so a concurrent writer of the
/// same order waits on PostgreSQL, and SQLite has one writer anyway), marks it changed at `now`,
/// makes room for `entries` more timeline entries (the returned `timeline_len` counts them: the
/// caller appends them at `timeline_len - entries + 1` on) and returns it, in one statement.
/// `None` if there is no such order.
pub async fn lock_order(
    conn: &mut Conn,
    id: Uuid,
    now: i64,
    entries: i64,
) -> Result<Option<OrderRow>, StorageError> {
    // A length of 0 is an order written by an older version (a new order has its `PENDING`
    // entry): counted from its timeline then.
    let row = query(&format!(
        "UPDATE orders SET updated_at = $2,
           timeline_len = CASE WHEN timeline_len = 0
             THEN (SELECT COALESCE(MAX(seq), 0) FROM order_timeline t WHERE t.order_id = orders.id)
             ELSE timeline_len END + $3
         WHERE id = $1
         RETURNING {ORDER_COLUMNS}"
    ))
    .bind(id)
    .bind(now)
    .bind(entries)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(order_from_row).transpose()
}

/// `created_at` of the `n`-th oldest `PENDING` order (`n` from 1), if there are that many (from
/// the `(status, created_at)` index).
pub async fn nth_oldest_pending(conn: &mut Conn, n: usize) -> Result<Option<i64>, StorageError> {
    query("SELECT created_at FROM orders WHERE status = $1 ORDER BY created_at LIMIT 1 OFFSET $2")
        .bind(Status::Pending.as_str())
        .bind(i64::try_from(n.saturating_sub(1)).unwrap_or(i64::MAX))
        .scalar_optional(conn)
        .await
}

pub async fn load_order(conn: &mut Conn, id: Uuid) -> Result<Option<OrderRow>, StorageError> {
    let row = query(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(order_from_row).transpose()
}

/// Moves the order from `from` to `to`, only if it is still in `from`: `false` means another
/// transaction changed it first.
pub async fn update_status(
    conn: &mut Conn,
    id: Uuid,
    from: Status,
    to: OrderState,
    timeline_len: i64,
    now: i64,
) -> Result<bool, StorageError> {
    let updated = query(
        "UPDATE orders SET status = $3, cancellation_reason = $4, updated_at = $5, timeline_len = $6
         WHERE id = $1 AND status = $2",
    )
    .bind(id)
    .bind(from.as_str())
    .bind(to.status.as_str())
    .bind(to.cancellation_reason.map(|r| r.as_str()))
    .bind(now)
    .bind(timeline_len)
    .execute(conn)
    .await?;
    Ok(updated == 1)
}

pub async fn set_payment(
    conn: &mut Conn,
    id: Uuid,
    payment: &PaymentSummary,
) -> Result<(), StorageError> {
    query("UPDATE orders SET payment_id = $2, payment_status = $3 WHERE id = $1")
        .bind(id)
        .bind(payment.id)
        .bind(payment.status.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_shipment(
    conn: &mut Conn,
    id: Uuid,
    shipment: &ShipmentSummary,
) -> Result<(), StorageError> {
    query(
        "UPDATE orders SET shipment_id = $2, shipment_status = $3, tracking_number = $4
         WHERE id = $1",
    )
    .bind(id)
    .bind(shipment.id)
    .bind(shipment.status.as_str())
    .bind(&shipment.tracking_number)
    .execute(conn)
    .await?;
    Ok(())
}

static TIMELINE_INSERT: MultiRow = MultiRow::new(
    "INSERT INTO order_timeline (order_id, seq, status, event, at) VALUES ",
    0,
    5,
    "",
);

/// Adds an entry to the order's timeline at `seq`, a place the caller made on the held row (see
/// [`lock_order`]). Written at commit, with the transaction's other entries: the timeline is read
/// only after the commit.
pub fn append_timeline(
    tx: &mut Tx,
    id: Uuid,
    seq: i64,
    entry: &Entry,
    at: i64,
) -> Result<(), StorageError> {
    let (status, event) = match entry {
        Entry::Status(status) => (Some(status.as_str()), None),
        Entry::Event(event) => (None, Some(event.as_str())),
    };
    tx.insert_at_commit(
        &TIMELINE_INSERT,
        vec![
            id.into(),
            seq.into(),
            status.into(),
            event.into(),
            at.into(),
        ],
    )
}

/// Which orders a listing shows.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub user_id: Option<Uuid>,
    pub status: Option<Status>,
    /// Only ids before this one (the cursor: newest first).
    pub before: Option<String>,
    pub limit: i64,
}

/// Orders matching `filter`, newest first (UUIDv7 ids sort by creation time).
pub async fn list_orders(
    conn: &mut Conn,
    filter: &OrderFilter,
) -> Result<Vec<OrderRow>, StorageError> {
    let mut conditions = Vec::new();
    let mut binds: Vec<String> = Vec::new();
    if let Some(user) = filter.user_id {
        binds.push(user.to_string());
        conditions.push(format!("user_id = ${}", binds.len()));
    }
    if let Some(status) = filter.status {
        binds.push(status.as_str().to_owned());
        conditions.push(format!("status = ${}", binds.len()));
    }
    if let Some(before) = &filter.before {
        binds.push(before.clone());
        conditions.push(format!("id < ${}", binds.len()));
    }
    let filter_sql = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {ORDER_COLUMNS} FROM orders {filter_sql} ORDER BY id DESC LIMIT ${}",
        binds.len() + 1
    );
    let rows = query(&sql)
        .bind_all(binds)
        .bind(filter.limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(order_from_row).collect()
}

/// The lines of each order among `ids`, in line order.
pub async fn items_of(
    conn: &mut Conn,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<ItemRow>>, StorageError> {
    let mut items: HashMap<Uuid, Vec<ItemRow>> = HashMap::new();
    if ids.is_empty() {
        return Ok(items);
    }
    let sql = format!(
        "SELECT order_id, product_id, name, unit_amount, quantity FROM order_items
         WHERE order_id IN ({}) ORDER BY order_id, line",
        placeholders(1, ids.len())
    );
    for row in query(&sql).bind_all(ids).fetch_all(conn).await? {
        items
            .entry(row.get("order_id")?)
            .or_default()
            .push(ItemRow {
                product_id: row.get("product_id")?,
                name: row.get("name")?,
                unit_amount: row.get("unit_amount")?,
                quantity: row.get("quantity")?,
            });
    }
    Ok(items)
}

/// The timeline of each order among `ids`, in the order it was written.
pub async fn timelines_of(
    conn: &mut Conn,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<TimelineRow>>, StorageError> {
    let mut timelines: HashMap<Uuid, Vec<TimelineRow>> = HashMap::new();
    if ids.is_empty() {
        return Ok(timelines);
    }
    let sql = format!(
        "SELECT order_id, status, event, at FROM order_timeline
         WHERE order_id IN ({}) ORDER BY order_id, seq",
        placeholders(1, ids.len())
    );
    for row in query(&sql).bind_all(ids).fetch_all(conn).await? {
        let order: Uuid = row.get("order_id")?;
        let status: Option<String> = row.get("status")?;
        let event: Option<String> = row.get("event")?;
        let entry = match (status, event) {
            (Some(status), _) => {
                Entry::Status(Status::parse(&status).ok_or_else(|| corrupt("status", &status))?)
            }
            (None, Some(event)) => Entry::Event(event),
            (None, None) => return Err(corrupt("timeline entry", &order.to_string())),
        };
        timelines.entry(order).or_default().push(TimelineRow {
            entry,
            at: row.get("at")?,
        });
    }
    Ok(timelines)
}

/// Up to `limit` orders still `PENDING` that were created at or before `cutoff`, oldest first,
/// with the correlation id of the request that placed each.
pub async fn overdue(
    conn: &mut Conn,
    cutoff: i64,
    limit: i64,
) -> Result<Vec<(Uuid, String)>, StorageError> {
    let rows = query(
        "SELECT id, correlation_id FROM orders WHERE status = $1 AND created_at <= $2
         ORDER BY created_at LIMIT $3",
    )
    .bind(Status::Pending.as_str())
    .bind(cutoff)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| Ok((row.get("id")?, row.get("correlation_id")?)))
        .collect()
}

// --------------------------------------------------------------- idempotency

pub async fn find_key(
    conn: &mut Conn,
    user: Uuid,
    key: &str,
) -> Result<Option<KeyRecord>, StorageError> {
    let row = query(
        "SELECT order_id, request, status, response FROM idempotency_keys
         WHERE user_id = $1 AND key = $2",
    )
    .bind(user)
    .bind(key)
    .fetch_optional(conn)
    .await?;
    row.map(|row| {
        Ok(KeyRecord {
            order_id: row.get("order_id")?,
            request: row.get("request")?,
            status: row.get("status")?,
            response: row.get("response")?,
        })
    })
    .transpose()
}

/// Records the key with its request and response; `false` if the user already used it (then
/// nothing is written, and the caller must answer from [`find_key`]).
pub async fn claim_key(
    conn: &mut Conn,
    user: Uuid,
    key: &str,
    record: &KeyRecord,
    now: i64,
) -> Result<bool, StorageError> {
    let claimed = query(
        "INSERT INTO idempotency_keys (user_id, key, request, status, response, order_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (user_id, key) DO NOTHING",
    )
    .bind(user)
    .bind(key)
    .bind(&record.request)
    .bind(record.status)
    .bind(&record.response)
    .bind(record.order_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(claimed == 1)
}
