//! The catalog's read-aside cache of single products (`GET /api/products/{id}`), kept in the
//! process's cache: Redis when `redis_url` is set, shared by every instance; else in process.
//!
//! An entry is the product as JSON under `catalog:v1:product:<id>`, kept at most [`TTL`]. Missing
//! and deleted products are not cached (a 404 costs one read). A product leaves the cache:
//! 1. **after each write**: `update` and `delete` forget it as soon as their transaction has
//!    committed, so the admin who changes a product reads the change at once (from any instance,
//!    since they share Redis);
//! 2. **on its events**: the catalog consumes its own `product-events` (group `catalog`) and
//!    forgets the product of each `ProductUpdated` and `ProductDeleted`. This covers a forget of
//!    step 1 that failed (Redis unreachable at that moment, the process killed between commit and
//!    forget). A forget that fails here is an infrastructure error: the partition pauses and
//!    retries, so that this invalidation is never dropped;
//! 3. **at the end of its [`TTL`]**, the safety net: for example for several instances running
//!    without Redis, each with its own in-process cache, which the other instances' writes do not
//!    reach (only one instance of the group consumes each event).
//!
//! # A read racing a write
//! A read that misses reads the row, then stores it. A write that commits between the two and
//! forgets the key before the store would leave the old row cached. So after storing, the reader
//! reads the row again and forgets the key unless the row is unchanged ("set, then check").
//! Either that second read sees the write, and the reader forgets its own entry; or it does not,
//! so the write committed after it, hence after the store, and the write's forget (step 1, or
//! step 2 if that failed) comes after the store and removes it. Either way no stale entry stays;
//! only if the reader's own forget fails as well does the [`TTL`] bound it. The check costs one
//! more primary-key read per miss and nothing per hit.
//!
//! A cache that fails is logged and bypassed: reads go to the database and never fail because of
//! it. Lookups are counted in `emporium_cache_hits_total{cache="catalog"}` and
//! `emporium_cache_misses_total{cache="catalog"}`.
//!
//! Lists and searches, `?ids=` included, are not cached: an id list is one indexed query, while
//! answering it from the cache would take a round trip per id (the port has no multi-get) and the
//! list's filters and paging on top, for little gain.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use emporium_events::Money;
use emporium_platform::cache::{Cache, CacheError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{domain::ProductFields, store::Product};

/// How long an entry lives at most; invalidation usually removes it sooner.
pub const TTL: Duration = Duration::from_secs(300);

/// The key of product `id`. The `v1` changes with the format of [`CachedProduct`], so that
/// instances of two versions never read each other's entries.
pub fn key(id: Uuid) -> String {
    format!("catalog:v1:product:{id}")
}

/// A product as cached: its JSON as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CachedProduct {
    id: Uuid,
    name: String,
    description: Option<String>,
    category: String,
    price: Money,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<&Product> for CachedProduct {
    fn from(p: &Product) -> Self {
        CachedProduct {
            id: p.id,
            name: p.fields.name.clone(),
            description: p.fields.description.clone(),
            category: p.fields.category.clone(),
            price: p.fields.price.clone(),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

impl From<CachedProduct> for Product {
    fn from(c: CachedProduct) -> Self {
        Product {
            id: c.id,
            fields: ProductFields {
                name: c.name,
                description: c.description,
                category: c.category,
                price: c.price,
            },
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// Products in the process's cache (see the module docs for when they leave it).
#[derive(Clone)]
pub struct ProductCache {
    cache: Arc<dyn Cache>,
}

impl ProductCache {
    pub fn new(cache: Arc<dyn Cache>) -> Self {
        ProductCache { cache }
    }

    /// The cached product `id`; a miss when it is not there, and when the cache fails or holds
    /// something unreadable (logged).
    pub async fn get(&self, id: Uuid) -> Option<Product> {
        let bytes = match self.cache.get(&key(id)).await {
            Ok(bytes) => bytes?,
            Err(e) => {
                tracing::warn!(error = %e, product_id = %id, "cache unavailable; reading the database");
                return None;
            }
        };
        match serde_json::from_slice::<CachedProduct>(&bytes) {
            Ok(cached) => Some(cached.into()),
            Err(e) => {
                tracing::warn!(error = %e, product_id = %id, "unreadable cached product; reading the database");
                None
            }
        }
    }

    /// Caches `product` for [`TTL`]; whether it was stored (a failure is logged).
    pub async fn put(&self, product: &Product) -> bool {
        let bytes = match serde_json::to_vec(&CachedProduct::from(product)) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(error = %e, product_id = %product.id, "cannot encode a product for the cache");
                return false;
            }
        };
        match self.cache.set(&key(product.id), bytes, TTL).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, product_id = %product.id, "cannot cache a product");
                false
            }
        }
    }

    /// Forgets product `id`; the caller decides what a failure means.
    pub async fn forget(&self, id: Uuid) -> Result<(), CacheError> {
        self.cache.delete(&key(id)).await
    }
}
