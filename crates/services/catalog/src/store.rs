//! The catalog's table and the SQL on it (portable between SQLite and PostgreSQL).

use chrono::{DateTime, Utc};
use emporium_events::Money;
use emporium_platform::storage::{Conn, Migration, Row, StorageError, placeholders, query};
use uuid::Uuid;

use crate::domain::{self, Filter, ProductFields};

pub const MIGRATIONS: &[Migration] = &[
    // `search_name`, `search_description` and `category_key` hold the folded text that searches
    // compare, folded in Rust so that both databases match the same way (SQLite's LOWER only
    // folds ASCII). A deleted product keeps its row (`deleted_at`): orders placed earlier still
    // name it, and a late event about it can be recognised.
    Migration::portable(
        100,
        "products",
        "CREATE TABLE products (
            id                 TEXT   PRIMARY KEY,
            name               TEXT   NOT NULL,
            description        TEXT,
            category           TEXT   NOT NULL,
            price_amount       BIGINT NOT NULL,
            price_currency     TEXT   NOT NULL,
            search_name        TEXT   NOT NULL,
            search_description TEXT   NOT NULL,
            category_key       TEXT   NOT NULL,
            created_at         BIGINT NOT NULL,
            updated_at         BIGINT NOT NULL,
            deleted_at         BIGINT)",
    ),
    Migration::portable(
        101,
        "products_by_category",
        "CREATE INDEX products_by_category ON products (category_key, id)",
    ),
];

/// A product as stored (deleted ones are never returned).
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub id: Uuid,
    pub fields: ProductFields,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, name, description, category, price_amount, price_currency, created_at, updated_at";

impl Product {
    fn from_row(row: &Row) -> Result<Self, StorageError> {
        let id: Uuid = row.get("id")?;
        let corrupt = |what: &str| StorageError::Query(format!("product {id}: bad {what}"));
        Ok(Product {
            id,
            created_at: DateTime::from_timestamp_millis(row.get("created_at")?)
                .ok_or_else(|| corrupt("created_at"))?,
            updated_at: DateTime::from_timestamp_millis(row.get("updated_at")?)
                .ok_or_else(|| corrupt("updated_at"))?,
            fields: ProductFields {
                name: row.get("name")?,
                description: row.get("description")?,
                category: row.get("category")?,
                price: Money::new(
                    row.get::<i64>("price_amount")?,
                    row.get::<String>("price_currency")?,
                ),
            },
        })
    }
}

pub async fn insert(
    conn: &mut Conn,
    id: Uuid,
    fields: &ProductFields,
    now_ms: i64,
) -> Result<(), StorageError> {
    query(
        "INSERT INTO products (id, name, description, category, price_amount, price_currency,
             search_name, search_description, category_key, created_at, updated_at, deleted_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, NULL)",
    )
    .bind(id)
    .bind(fields.name.as_str())
    .bind(fields.description.as_deref())
    .bind(fields.category.as_str())
    .bind(fields.price.amount)
    .bind(fields.price.currency.as_str())
    .bind(domain::fold(&fields.name))
    .bind(domain::fold(fields.description.as_deref().unwrap_or("")))
    .bind(domain::fold(&fields.category))
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// The product unless it is missing or deleted.
pub async fn find(conn: &mut Conn, id: Uuid) -> Result<Option<Product>, StorageError> {
    let row = query(&format!(
        "SELECT {COLUMNS} FROM products WHERE id = $1 AND deleted_at IS NULL"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(Product::from_row).transpose()
}

pub async fn update(
    conn: &mut Conn,
    id: Uuid,
    fields: &ProductFields,
    now_ms: i64,
) -> Result<(), StorageError> {
    query(
        "UPDATE products SET name = $2, description = $3, category = $4, price_amount = $5,
             price_currency = $6, search_name = $7, search_description = $8, category_key = $9,
             updated_at = $10
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(fields.name.as_str())
    .bind(fields.description.as_deref())
    .bind(fields.category.as_str())
    .bind(fields.price.amount)
    .bind(fields.price.currency.as_str())
    .bind(domain::fold(&fields.name))
    .bind(domain::fold(fields.description.as_deref().unwrap_or("")))
    .bind(domain::fold(&fields.category))
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks the product deleted; `false` if it was missing or already deleted.
pub async fn delete(conn: &mut Conn, id: Uuid, now_ms: i64) -> Result<bool, StorageError> {
    let updated = query(
        "UPDATE products SET deleted_at = $2, updated_at = $2 WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(updated == 1)
}

/// Up to `limit` live products matching `filter`, newest first (ids are UUIDv7, so id order is
/// creation order), starting after the id `before`.
pub async fn list(
    conn: &mut Conn,
    filter: &Filter,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<Product>, StorageError> {
    let mut sql = format!("SELECT {COLUMNS} FROM products WHERE deleted_at IS NULL");
    let mut binds: Vec<&str> = Vec::new();
    if let Some(pattern) = &filter.pattern {
        binds.push(pattern);
        let n = binds.len();
        sql.push_str(&format!(
            " AND (search_name LIKE ${n} ESCAPE '!' OR search_description LIKE ${n} ESCAPE '!')"
        ));
    }
    if let Some(category) = &filter.category {
        binds.push(category);
        sql.push_str(&format!(" AND category_key = ${}", binds.len()));
    }
    if !filter.ids.is_empty() {
        let first = binds.len() + 1;
        binds.extend(filter.ids.iter().map(String::as_str));
        let params = placeholders(first, filter.ids.len());
        sql.push_str(&format!(" AND id IN ({params})"));
    }
    if let Some(before) = before {
        binds.push(before);
        sql.push_str(&format!(" AND id < ${}", binds.len()));
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", binds.len() + 1));
    let rows = query(&sql)
        .bind_all(binds)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(Product::from_row).collect()
}
