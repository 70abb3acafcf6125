//! The recommendations use cases: events folded into the read model (each in the consumer's
//! transaction, bumping the model's generation when a ranking could change), and rankings served
//! read-aside through the cache.
//!
//! # Caching
//! Answers are cached under `recommendations:v1:<generation>:<user|product>:<id>:<limit>`, where
//! `<generation>` is the number in `model_generation`. Every transaction that changes what a
//! ranking could return bumps it: an order counted (`OrderConfirmed`) or uncounted (a counted
//! order's `OrderCancelled`), any product event, and a stock announcement that moves a product in
//! or out of stock. The bump commits with the change, so invalidation cannot be lost or run ahead
//! of the data (a rolled-back batch bumps nothing), and it needs no list of keys to delete: old
//! generations are simply never asked for again and age out with [`CACHE_TTL`]. A request reads
//! the generation before the model, so an answer is never cached under a generation newer than
//! the state it was computed from. A cache that fails is logged and bypassed.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use emporium_events::{
    Event, Money, OrderCancelled, OrderConfirmed, OrderCreated, ProductDeleted,
    RecommendationsIssued,
};
use emporium_platform::{
    cache::{self, Cache},
    storage::{Conn, Db, StorageError, Tx},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    NAME,
    domain::{self, Contribution, Model, Scored},
    store::{self, ProductChange, ProductRow},
};

/// How long a cached answer lives at most (it is usually replaced sooner by a new generation).
pub const CACHE_TTL: Duration = Duration::from_secs(600);

/// Why a request for recommendations did not give any.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such product")]
    ProductNotFound,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

// ---------------------------------------------------------------- wire types

/// An amount in integer minor units of an ISO 4217 currency.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MoneySchema {
    /// Minor units (cents for USD), `>= 0`.
    #[schema(example = 1999)]
    pub amount: i64,
    /// Three upper-case letters.
    #[schema(example = "USD")]
    pub currency: String,
}

/// A product for sale.
// The catalog's `ProductView`, field for field and under the same schema name, so that the merged
// OpenAPI document describes one Product (a test compares the two).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductView {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub category: String,
    #[schema(value_type = MoneySchema)]
    pub price: Money,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A recommended product, how strongly, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    pub product: ProductView,
    /// Higher is stronger: co-purchases count 1 each, category and best-seller signals less
    /// (see the service docs). Rounded to 4 decimals.
    #[schema(example = 4.8)]
    pub score: f64,
    /// For people: `Often bought with <product>`, `Popular in <category>` or `Best seller`.
    #[schema(example = "Often bought with Espresso Machine")]
    pub reason: String,
}

fn timestamp(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).unwrap_or_default()
}

fn view(row: &ProductRow) -> Result<ProductView, StorageError> {
    Ok(ProductView {
        id: row.id,
        name: row.name.clone(),
        description: row.description.clone(),
        category: row.category.clone(),
        price: Money::new(row.price_amount, row.price_currency.clone()),
        created_at: timestamp(row.created_at),
        updated_at: timestamp(row.updated_at),
    })
}

// ------------------------------------------------------------ loading a slice

/// The slice of the model one ranking needs, and the rows behind it.
struct Slice {
    model: Model,
    rows: BTreeMap<Uuid, ProductRow>,
}

impl Slice {
    fn new() -> Slice {
        Slice {
            model: Model::new(),
            rows: BTreeMap::new(),
        }
    }

    fn add(&mut self, rows: Vec<ProductRow>) -> Result<(), StorageError> {
        for row in rows {
            let id = row.id;
            self.model.add_product(id, row.facts());
            self.model
                .set_sales(id, u64::try_from(row.sales).unwrap_or(0));
            self.rows.insert(id, row);
        }
        Ok(())
    }

    /// Loads everything a ranking from `anchors` (with affinity for the anchors' categories) can
    /// put in its first `limit`: the anchors, every product bought with them, and the best sellers
    /// of the anchors' categories and overall, `limit` beyond the anchors (which a ranking skips).
    /// A product left out has no co-purchase with an anchor and at least `limit` recommendable
    /// products of its category (or overall) outsell it, so it could not have made the list.
    async fn load(conn: &mut Conn, anchors: &[Uuid], limit: usize) -> Result<Slice, StorageError> {
        let mut slice = Slice::new();
        slice.add(store::products(conn, anchors).await?)?;
        let pairs = store::co_purchases(conn, anchors).await?;
        let partners: Vec<Uuid> = pairs
            .iter()
            .map(|(_, b, _)| *b)
            .filter(|b| !slice.rows.contains_key(b))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        slice.add(store::products(conn, &partners).await?)?;
        for (a, b, orders) in pairs {
            slice.model.set_pair(a, b, orders);
        }
        let window = limit.saturating_add(anchors.len());
        let categories: BTreeSet<String> = anchors
            .iter()
            .filter_map(|a| slice.rows.get(a))
            .map(|row| domain::category_key(&row.category))
            .collect();
        for category in &categories {
            slice.add(store::top_sellers(conn, Some(category), window).await?)?;
        }
        slice.add(store::top_sellers(conn, None, window).await?)?;
        Ok(slice)
    }

    fn views(&self, scored: Vec<Scored>) -> Result<Vec<Recommendation>, StorageError> {
        scored
            .into_iter()
            .filter_map(|s| self.rows.get(&s.product_id).map(|row| (row, s)))
            .map(|(row, s)| {
                Ok(Recommendation {
                    product: view(row)?,
                    score: s.score,
                    reason: s.reason.to_string(),
                })
            })
            .collect()
    }
}

/// Ranks for `user_id` on `conn` (a request's connection or a handler's transaction).
async fn rank_for_user(
    conn: &mut Conn,
    user_id: Uuid,
    limit: usize,
) -> Result<Vec<Recommendation>, StorageError> {
    let history: BTreeMap<Uuid, u64> = store::history(conn, user_id).await?.into_iter().collect();
    let anchors: Vec<Uuid> = history.keys().copied().collect();
    let slice = Slice::load(conn, &anchors, limit).await?;
    slice.views(domain::for_user(&slice.model, &history, limit))
}

async fn rank_for_product(
    conn: &mut Conn,
    product_id: Uuid,
    limit: usize,
) -> Result<Vec<Recommendation>, Error> {
    match store::product(conn, product_id).await? {
        Some(row) if !row.deleted => {}
        _ => return Err(Error::ProductNotFound),
    }
    let slice = Slice::load(conn, &[product_id], limit).await?;
    Ok(slice.views(domain::for_product(&slice.model, product_id, limit))?)
}

// ----------------------------------------------------------------- serving

/// What a ranking is for (part of the cache key).
#[derive(Debug, Clone, Copy)]
enum Subject {
    User(Uuid),
    Product(Uuid),
}

fn cache_key(generation: i64, subject: Subject, limit: usize) -> String {
    let (kind, id) = match subject {
        Subject::User(id) => ("user", id),
        Subject::Product(id) => ("product", id),
    };
    format!("recommendations:v1:{generation}:{kind}:{id}:{limit}")
}

/// Serves rankings from the database, read-aside through a cache.
#[derive(Clone)]
pub struct Recommender {
    pub db: Db,
    pub cache: Arc<dyn Cache>,
}

impl Recommender {
    /// `GET /api/recommendations/me`.
    pub async fn for_user(
        &self,
        user_id: Uuid,
        limit: usize,
    ) -> Result<Vec<Recommendation>, Error> {
        self.serve(Subject::User(user_id), limit).await
    }

    /// `GET /api/products/{id}/recommendations`; [`Error::ProductNotFound`] for a product the
    /// model does not know or knows deleted.
    pub async fn for_product(
        &self,
        product_id: Uuid,
        limit: usize,
    ) -> Result<Vec<Recommendation>, Error> {
        self.serve(Subject::Product(product_id), limit).await
    }

    async fn serve(&self, subject: Subject, limit: usize) -> Result<Vec<Recommendation>, Error> {
        let mut conn = self.db.reader().await?;
        let key = cache_key(store::generation(&mut conn).await?, subject, limit);
        let hit = self.cached(&key).await;
        cache::count_lookup(NAME, hit.is_some());
        if let Some(hit) = hit {
            return Ok(hit);
        }
        let answer = match subject {
            Subject::User(id) => rank_for_user(&mut conn, id, limit).await?,
            Subject::Product(id) => rank_for_product(&mut conn, id, limit).await?,
        };
        drop(conn);
        match serde_json::to_vec(&answer) {
            Ok(bytes) => {
                if let Err(e) = self.cache.set(&key, bytes, CACHE_TTL).await {
                    tracing::warn!(error = %e, "cannot cache recommendations");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode recommendations for the cache"),
        }
        Ok(answer)
    }

    async fn cached(&self, key: &str) -> Option<Vec<Recommendation>> {
        match self.cache.get(key).await {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(answer) => Some(answer),
                Err(e) => {
                    tracing::warn!(error = %e, key, "unreadable cached recommendations; recomputing");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cache unavailable; computing recommendations");
                None
            }
        }
    }
}

// ------------------------------------------------------------------ events

/// `ProductCreated` or `ProductUpdated` (both carry the whole description): a product the model
/// can recommend once it sells, with the name reasons give and the category affinity counts.
pub async fn product_described(
    tx: &mut Tx,
    change: &ProductChange<'_>,
) -> Result<(), StorageError> {
    store::upsert_product(tx.conn(), change).await?;
    store::bump_generation(tx.conn()).await
}

/// `ProductDeleted`: never recommended again.
pub async fn product_deleted(
    tx: &mut Tx,
    event: &ProductDeleted,
    at: i64,
) -> Result<(), StorageError> {
    store::mark_deleted(tx.conn(), event.product_id, at).await?;
    store::bump_generation(tx.conn()).await
}

/// `StockAdjusted`, `LowStock`, `InventoryRejected`: inventory announced `available` units of a
/// product at `at`. Recorded unless a later announcement is; the generation moves only when the
/// product goes in or out of stock.
pub async fn stock_announced(
    tx: &mut Tx,
    product_id: Uuid,
    available: i64,
    at: i64,
) -> Result<(), StorageError> {
    let before = store::available(tx.conn(), product_id).await?;
    if store::record_stock(tx.conn(), product_id, available, at).await?
        && domain::in_stock(before) != domain::in_stock(Some(available))
    {
        store::bump_generation(tx.conn()).await?;
    }
    Ok(())
}

/// `OrderCreated`: the order's lines, remembered until it is confirmed or cancelled.
pub async fn order_created(
    tx: &mut Tx,
    event: &OrderCreated,
    now: i64,
) -> Result<(), StorageError> {
    let lines: Vec<(Uuid, i64)> = event
        .items
        .iter()
        .map(|line| (line.product_id, line.quantity))
        .collect();
    store::insert_order(tx.conn(), event.order_id, event.user_id, &lines, now).await?;
    Ok(())
}

/// `OrderConfirmed`: the order counts toward sales and co-purchases. Then, if the user got no
/// recommendations email within `email_period`, the send time is recorded and
/// `RecommendationsIssued` emitted with their top [`domain::EMAIL_PRODUCTS`] (none if there is
/// nothing to recommend).
pub async fn order_confirmed(
    tx: &mut Tx,
    event: &OrderConfirmed,
    now: i64,
    email_period: Duration,
) -> Result<(), StorageError> {
    let Some((_, state)) = store::order(tx.conn(), event.order_id).await? else {
        // Order-events keep one order's events in order, so its OrderCreated came first; an order
        // never created has no lines to count.
        tracing::warn!(order_id = %event.order_id, "confirmation of an order never created; ignored");
        return Ok(());
    };
    let Some(counted) = state.confirm() else {
        return Ok(());
    };
    if !store::move_order(tx.conn(), event.order_id, state, counted, now).await? {
        return Ok(());
    }
    let products = store::order_products(tx.conn(), event.order_id).await?;
    store::add_contribution(tx.conn(), &Contribution::of(products), 1).await?;
    store::bump_generation(tx.conn()).await?;

    let last = store::email_sent_at(tx.conn(), event.user_id).await?;
    if !domain::email_due(last, now, email_period) {
        return Ok(());
    }
    let picks = rank_for_user(tx.conn(), event.user_id, domain::EMAIL_PRODUCTS).await?;
    if picks.is_empty() {
        return Ok(());
    }
    let cutoff = now.saturating_sub(domain::period_millis(email_period));
    if store::claim_email(tx.conn(), event.user_id, now, cutoff).await? {
        tx.emit(Event::RecommendationsIssued(RecommendationsIssued {
            user_id: event.user_id,
            product_ids: picks.iter().map(|p| p.product.id).collect(),
        }))?;
    }
    Ok(())
}

/// `OrderCancelled`: a counted order stops counting; a pending one will never count.
pub async fn order_cancelled(
    tx: &mut Tx,
    event: &OrderCancelled,
    now: i64,
) -> Result<(), StorageError> {
    let Some((_, state)) = store::order(tx.conn(), event.order_id).await? else {
        return Ok(());
    };
    let Some(cancelled) = state.cancel() else {
        return Ok(());
    };
    if !store::move_order(tx.conn(), event.order_id, state, cancelled, now).await? {
        return Ok(());
    }
    if state == domain::OrderState::Counted {
        let products = store::order_products(tx.conn(), event.order_id).await?;
        store::add_contribution(tx.conn(), &Contribution::of(products), -1).await?;
        store::bump_generation(tx.conn()).await?;
    }
    Ok(())
}
