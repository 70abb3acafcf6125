//! The recommendations read model's tables and the SQL on them (portable: SQLite and PostgreSQL;
//! `$n` parameters, `ON CONFLICT`, text ids, epoch millis, 0/1 for booleans).
//!
//! - `products`: the catalog's products as `product-events` describe them (`created_at` and
//!   `updated_at` are the events' `occurredAt`), deleted ones kept and flagged;
//! - `stock`: the last `available` inventory announced per product, with the `occurredAt` it was
//!   announced at (`as_of`), so that an older announcement arriving later (they travel on
//!   different partitions) never overwrites a newer one;
//! - `orders` and `order_lines`: each order's lines from `OrderCreated`, and whether it is
//!   `PENDING`, `COUNTED` (confirmed) or `CANCELLED`;
//! - `sales` and `co_purchases`: the counted orders per product and per ordered pair of products
//!   (both directions stored), kept up to date as orders are counted and uncounted;
//! - `emails_sent`: when each user last got the recommendations email;
//! - `model_generation`: one number, bumped in every transaction that changes what a ranking could
//!   return; it is part of every cache key.

use std::collections::BTreeMap;

use emporium_platform::storage::{
    Conn, Migration, MultiRow, Row, StorageError, placeholders, query,
};
use uuid::Uuid;

use crate::domain::{self, Contribution, OrderState, ProductFacts};

pub const MIGRATIONS: &[Migration] = &[
    Migration::portable(
        100,
        "products",
        // `category_key`: the category folded (domain::category_key), what rankings compare.
        "CREATE TABLE products (
            id             TEXT   PRIMARY KEY,
            name           TEXT   NOT NULL,
            description    TEXT,
            category       TEXT   NOT NULL,
            category_key   TEXT   NOT NULL,
            price_amount   BIGINT NOT NULL,
            price_currency TEXT   NOT NULL,
            created_at     BIGINT NOT NULL,
            updated_at     BIGINT NOT NULL,
            deleted        BIGINT NOT NULL)",
    ),
    Migration::portable(
        101,
        "products_by_category",
        "CREATE INDEX products_by_category ON products (category_key)",
    ),
    Migration::portable(
        102,
        "stock",
        "CREATE TABLE stock (
            product_id TEXT   PRIMARY KEY,
            available  BIGINT NOT NULL,
            as_of      BIGINT NOT NULL)",
    ),
    Migration::portable(
        103,
        "orders",
        "CREATE TABLE orders (
            order_id   TEXT   PRIMARY KEY,
            user_id    TEXT   NOT NULL,
            status     TEXT   NOT NULL,
            updated_at BIGINT NOT NULL)",
    ),
    Migration::portable(
        104,
        "orders_by_user",
        "CREATE INDEX orders_by_user ON orders (user_id, status)",
    ),
    Migration::portable(
        105,
        "order_lines",
        "CREATE TABLE order_lines (
            order_id   TEXT   NOT NULL,
            product_id TEXT   NOT NULL,
            quantity   BIGINT NOT NULL,
            PRIMARY KEY (order_id, product_id))",
    ),
    Migration::portable(
        106,
        "sales",
        "CREATE TABLE sales (
            product_id TEXT   PRIMARY KEY,
            orders     BIGINT NOT NULL)",
    ),
    Migration::portable(
        107,
        "sales_by_orders",
        "CREATE INDEX sales_by_orders ON sales (orders, product_id)",
    ),
    Migration::portable(
        108,
        "co_purchases",
        "CREATE TABLE co_purchases (
            product_id TEXT   NOT NULL,
            other_id   TEXT   NOT NULL,
            orders     BIGINT NOT NULL,
            PRIMARY KEY (product_id, other_id))",
    ),
    Migration::portable(
        109,
        "emails_sent",
        "CREATE TABLE emails_sent (
            user_id TEXT   PRIMARY KEY,
            sent_at BIGINT NOT NULL)",
    ),
    Migration::portable(
        110,
        "model_generation",
        "CREATE TABLE model_generation (
            id         BIGINT PRIMARY KEY,
            generation BIGINT NOT NULL)",
    ),
    Migration::portable(
        111,
        "model_generation_row",
        "INSERT INTO model_generation (id, generation) VALUES (1, 0)",
    ),
];

pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Id lists are bound in chunks of this many, well under every database's parameter limit.
const CHUNK: usize = 500;

// ---------------------------------------------------------------- generation

/// The model's generation (see the module docs).
pub async fn generation(conn: &mut Conn) -> Result<i64, StorageError> {
    query("SELECT generation FROM model_generation WHERE id = 1")
        .scalar(conn)
        .await
}

/// Moves the model to its next generation: cached answers of earlier ones are never read again.
pub async fn bump_generation(conn: &mut Conn) -> Result<(), StorageError> {
    query("UPDATE model_generation SET generation = generation + 1 WHERE id = 1")
        .execute(conn)
        .await?;
    Ok(())
}

// ------------------------------------------------------------------ products

/// A product with what rankings need to know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRow {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub category: String,
    pub price_amount: i64,
    pub price_currency: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted: bool,
    /// Counted orders holding it.
    pub sales: i64,
    /// Last announced available units, if any.
    pub available: Option<i64>,
}

impl ProductRow {
    /// Reads a row of [`PRODUCT_SELECT`].
    fn from_row(row: &Row) -> Result<Self, StorageError> {
        Ok(ProductRow {
            id: row.get("id")?,
            name: row.get("name")?,
            description: row.get("description")?,
            category: row.get("category")?,
            price_amount: row.get("price_amount")?,
            price_currency: row.get("price_currency")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
            deleted: row.get("deleted")?,
            sales: row.get("sales")?,
            available: row.get("available")?,
        })
    }

    pub fn facts(&self) -> ProductFacts {
        ProductFacts {
            name: self.name.clone(),
            category: self.category.clone(),
            deleted: self.deleted,
            available: self.available,
        }
    }
}

const PRODUCT_SELECT: &str = "SELECT p.id, p.name, p.description, p.category, p.price_amount,
        p.price_currency, p.created_at, p.updated_at, p.deleted,
        COALESCE(s.orders, 0) AS sales, k.available AS available
    FROM products p
    LEFT JOIN sales s ON s.product_id = p.id
    LEFT JOIN stock k ON k.product_id = p.id";

/// What a product event says about a product.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductChange<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub category: &'a str,
    pub price: &'a emporium_events::Money,
    /// The event's `occurredAt`, epoch millis.
    pub at: i64,
}

/// `ProductCreated` and `ProductUpdated`: the product's current description. A product first seen
/// here is created at `at`; a known one keeps its creation time, and a deleted one stays deleted.
pub async fn upsert_product(
    conn: &mut Conn,
    change: &ProductChange<'_>,
) -> Result<(), StorageError> {
    query(
        "INSERT INTO products (id, name, description, category, category_key, price_amount,
             price_currency, created_at, updated_at, deleted)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, description = excluded.description,
             category = excluded.category, category_key = excluded.category_key,
             price_amount = excluded.price_amount, price_currency = excluded.price_currency,
             updated_at = excluded.updated_at",
    )
    .bind(change.id)
    .bind(change.name)
    .bind(change.description)
    .bind(change.category)
    .bind(domain::category_key(change.category))
    .bind(change.price.amount)
    .bind(change.price.currency.as_str())
    .bind(change.at)
    .bind(change.at)
    .execute(conn)
    .await?;
    Ok(())
}

/// `ProductDeleted`: the product is never recommended again (its row stays, so it can still name
/// the reason "Often bought with ..." of what was bought with it).
pub async fn mark_deleted(conn: &mut Conn, id: Uuid, at: i64) -> Result<(), StorageError> {
    query("UPDATE products SET deleted = 1, updated_at = $2 WHERE id = $1")
        .bind(id)
        .bind(at)
        .execute(conn)
        .await?;
    Ok(())
}

/// The products with these ids that the model knows, deleted or not.
pub async fn products(conn: &mut Conn, ids: &[Uuid]) -> Result<Vec<ProductRow>, StorageError> {
    let mut rows = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let sql = format!(
            "{PRODUCT_SELECT} WHERE p.id IN ({})",
            placeholders(1, chunk.len())
        );
        for row in query(&sql)
            .bind_all(chunk.iter().copied())
            .fetch_all(conn)
            .await?
        {
            rows.push(ProductRow::from_row(&row)?);
        }
    }
    Ok(rows)
}

pub async fn product(conn: &mut Conn, id: Uuid) -> Result<Option<ProductRow>, StorageError> {
    Ok(products(conn, &[id]).await?.into_iter().next())
}

/// The `limit` best-selling recommendable products (sold, not deleted, not known to be out of
/// stock), of one category (by key) or of all, by sales then id.
pub async fn top_sellers(
    conn: &mut Conn,
    category_key: Option<&str>,
    limit: usize,
) -> Result<Vec<ProductRow>, StorageError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let filter = "s.orders > 0 AND p.deleted = 0 AND (k.available IS NULL OR k.available > 0)";
    let rows = match category_key {
        Some(key) => {
            query(&format!(
                "{PRODUCT_SELECT} WHERE {filter} AND p.category_key = $1
                 ORDER BY s.orders DESC, p.id LIMIT $2"
            ))
            .bind(key)
            .bind(limit)
            .fetch_all(conn)
            .await?
        }
        None => {
            query(&format!(
                "{PRODUCT_SELECT} WHERE {filter} ORDER BY s.orders DESC, p.id LIMIT $1"
            ))
            .bind(limit)
            .fetch_all(conn)
            .await?
        }
    };
    rows.iter().map(ProductRow::from_row).collect()
}

// --------------------------------------------------------------------- stock

/// The last announced available units of a product.
pub async fn available(conn: &mut Conn, id: Uuid) -> Result<Option<i64>, StorageError> {
    query("SELECT available FROM stock WHERE product_id = $1")
        .bind(id)
        .scalar_optional(conn)
        .await
}

/// Records an announcement of `available` units made at `as_of`, unless a later one is already
/// recorded. Returns whether it was recorded.
pub async fn record_stock(
    conn: &mut Conn,
    id: Uuid,
    available: i64,
    as_of: i64,
) -> Result<bool, StorageError> {
    let recorded = query(
        "INSERT INTO stock (product_id, available, as_of) VALUES ($1, $2, $3)
         ON CONFLICT (product_id) DO UPDATE SET available = excluded.available, as_of = excluded.as_of
         WHERE stock.as_of <= excluded.as_of",
    )
    .bind(id)
    .bind(available)
    .bind(as_of)
    .execute(conn)
    .await?;
    Ok(recorded == 1)
}

// -------------------------------------------------------------------- orders

static ORDER_LINES_INSERT: MultiRow = MultiRow::new(
    "INSERT INTO order_lines (order_id, product_id, quantity) VALUES ",
    0,
    3,
    " ON CONFLICT (order_id, product_id) DO UPDATE
      SET quantity = order_lines.quantity + excluded.quantity",
);

static SALES_UPSERT: MultiRow = MultiRow::new(
    "INSERT INTO sales (product_id, orders) VALUES ",
    0,
    2,
    " ON CONFLICT (product_id) DO UPDATE SET orders = sales.orders + excluded.orders",
);

static CO_PURCHASES_UPSERT: MultiRow = MultiRow::new(
    "INSERT INTO co_purchases (product_id, other_id, orders) VALUES ",
    0,
    3,
    " ON CONFLICT (product_id, other_id)
      DO UPDATE SET orders = co_purchases.orders + excluded.orders",
);

/// Remembers a new order as `PENDING` with its lines (a product on several lines sums up).
/// `false` if the order was already known (nothing written).
pub async fn insert_order(
    conn: &mut Conn,
    order_id: Uuid,
    user_id: Uuid,
    lines: &[(Uuid, i64)],
    now: i64,
) -> Result<bool, StorageError> {
    let inserted = query(
        "INSERT INTO orders (order_id, user_id, status, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id)
    .bind(user_id)
    .bind(OrderState::Pending.as_str())
    .bind(now)
    .execute(conn)
    .await?;
    if inserted != 1 {
        return Ok(false);
    }
    // One row per product, so that a statement never updates a row twice.
    let mut quantities: BTreeMap<Uuid, i64> = BTreeMap::new();
    for (product_id, quantity) in lines {
        let sum = quantities.entry(*product_id).or_default();
        *sum = sum.checked_add(*quantity).ok_or_else(|| {
            StorageError::Query(format!(
                "order {order_id}: quantity of {product_id} overflows"
            ))
        })?;
    }
    let rows: Vec<(Uuid, i64)> = quantities.into_iter().collect();
    ORDER_LINES_INSERT
        .execute_for(conn, &rows, |insert, (product_id, quantity)| {
            insert.bind(order_id).bind(product_id).bind(*quantity)
        })
        .await?;
    Ok(true)
}

/// An order's owner and state, if known.
pub async fn order(
    conn: &mut Conn,
    order_id: Uuid,
) -> Result<Option<(Uuid, OrderState)>, StorageError> {
    let row = query("SELECT user_id, status FROM orders WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(conn)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let user_id: Uuid = row.get("user_id")?;
    let status: String = row.get("status")?;
    let state = OrderState::parse(&status)
        .ok_or_else(|| StorageError::Query(format!("unknown order state {status:?}")))?;
    Ok(Some((user_id, state)))
}

/// Moves an order from `from` to `to` if it is still in `from`. Returns whether it moved.
pub async fn move_order(
    conn: &mut Conn,
    order_id: Uuid,
    from: OrderState,
    to: OrderState,
    now: i64,
) -> Result<bool, StorageError> {
    let moved =
        query("UPDATE orders SET status = $1, updated_at = $2 WHERE order_id = $3 AND status = $4")
            .bind(to.as_str())
            .bind(now)
            .bind(order_id)
            .bind(from.as_str())
            .execute(conn)
            .await?;
    Ok(moved == 1)
}

/// The distinct products of an order.
pub async fn order_products(conn: &mut Conn, order_id: Uuid) -> Result<Vec<Uuid>, StorageError> {
    query("SELECT product_id FROM order_lines WHERE order_id = $1 ORDER BY product_id")
        .bind(order_id)
        .scalars(conn)
        .await
}

/// Adds an order's contribution to sales and co-purchases (`sign` 1), or takes it away (-1).
pub async fn add_contribution(
    conn: &mut Conn,
    contribution: &Contribution,
    sign: i64,
) -> Result<(), StorageError> {
    // `Contribution` holds each product and each pair once: no statement updates a row twice.
    SALES_UPSERT
        .execute_for(conn, &contribution.products, |upsert, product_id| {
            upsert.bind(product_id).bind(sign)
        })
        .await?;
    CO_PURCHASES_UPSERT
        .execute_for(conn, &contribution.pairs, |upsert, (a, b)| {
            upsert.bind(a).bind(b).bind(sign)
        })
        .await?;
    Ok(())
}

/// What `user_id` bought: each product of their counted orders, with how many of those orders
/// held it.
pub async fn history(conn: &mut Conn, user_id: Uuid) -> Result<Vec<(Uuid, u64)>, StorageError> {
    let rows = query(
        "SELECT l.product_id AS product_id, COUNT(*) AS orders
         FROM order_lines l JOIN orders o ON o.order_id = l.order_id
         WHERE o.user_id = $1 AND o.status = $2
         GROUP BY l.product_id ORDER BY l.product_id",
    )
    .bind(user_id)
    .bind(OrderState::Counted.as_str())
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            let id: Uuid = row.get("product_id")?;
            let orders: i64 = row.get("orders")?;
            Ok((id, u64::try_from(orders).unwrap_or(0)))
        })
        .collect()
}

/// Co-purchase counts `(anchor, other, orders)` of these anchors, positive ones only.
pub async fn co_purchases(
    conn: &mut Conn,
    anchors: &[Uuid],
) -> Result<Vec<(Uuid, Uuid, u64)>, StorageError> {
    let mut out = Vec::new();
    for chunk in anchors.chunks(CHUNK) {
        let sql = format!(
            "SELECT product_id, other_id, orders FROM co_purchases
             WHERE orders > 0 AND product_id IN ({})",
            placeholders(1, chunk.len())
        );
        for row in query(&sql)
            .bind_all(chunk.iter().copied())
            .fetch_all(conn)
            .await?
        {
            let a: Uuid = row.get("product_id")?;
            let b: Uuid = row.get("other_id")?;
            let orders: i64 = row.get("orders")?;
            out.push((a, b, u64::try_from(orders).unwrap_or(0)));
        }
    }
    Ok(out)
}

// -------------------------------------------------------------------- emails

/// Records that `user_id` gets the recommendations email at `now`, if their last one was at or
/// before `cutoff` (or there was none). One conditional statement, so two transactions can never
/// both claim the same period. Returns whether it was claimed.
pub async fn claim_email(
    conn: &mut Conn,
    user_id: Uuid,
    now: i64,
    cutoff: i64,
) -> Result<bool, StorageError> {
    let claimed = query(
        "INSERT INTO emails_sent (user_id, sent_at) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET sent_at = excluded.sent_at
         WHERE emails_sent.sent_at <= $3",
    )
    .bind(user_id)
    .bind(now)
    .bind(cutoff)
    .execute(conn)
    .await?;
    Ok(claimed == 1)
}

/// When `user_id` last got the recommendations email.
pub async fn email_sent_at(conn: &mut Conn, user_id: Uuid) -> Result<Option<i64>, StorageError> {
    query("SELECT sent_at FROM emails_sent WHERE user_id = $1")
        .bind(user_id)
        .scalar_optional(conn)
        .await
}
