//! The catalog's use cases: each checks with [`crate::domain`], then writes the product and its
//! event in one transaction. Single products are read through the cache ([`crate::cache`]), which
//! each write invalidates once committed.

use std::sync::Arc;

use chrono::Utc;
use emporium_events::{Event, Money, ProductCreated, ProductDeleted, ProductUpdated};
use emporium_platform::{
    api::{ApiError, PageRequest},
    cache::{self, Cache},
    storage::{Db, EventContext, StorageError},
};
use uuid::Uuid;

use crate::{
    NAME,
    cache::ProductCache,
    domain::{self, ProductPatch},
    store::{self, Product},
};

/// The catalog application.
#[derive(Clone)]
pub struct Catalog {
    db: Db,
    cache: ProductCache,
}

fn no_such_product() -> ApiError {
    ApiError::not_found("no such product")
}

impl Catalog {
    /// The catalog on its database, caching single products in `cache`.
    pub fn new(db: Db, cache: Arc<dyn Cache>) -> Self {
        Catalog {
            db,
            cache: ProductCache::new(cache),
        }
    }

    /// Creates a product; emits `ProductCreated` with its initial stock, for inventory.
    pub async fn create(
        &self,
        correlation_id: &str,
        name: &str,
        description: Option<&str>,
        category: &str,
        price: Money,
        initial_stock: i64,
    ) -> Result<Product, ApiError> {
        let fields = domain::new_product(name, description, category, price, initial_stock)?;
        let id = Uuid::now_v7();
        let mut tx = self
            .db
            .begin(EventContext::request(NAME, correlation_id))
            .await?;
        store::insert(tx.conn(), id, &fields, Utc::now().timestamp_millis()).await?;
        tx.emit(Event::ProductCreated(ProductCreated {
            product_id: id,
            name: fields.name.clone(),
            description: fields.description.clone(),
            category: fields.category.clone(),
            price: fields.price.clone(),
            initial_stock,
        }))?;
        let product = store::find(tx.conn(), id)
            .await?
            .ok_or_else(no_such_product)?;
        tx.commit().await?;
        Ok(product)
    }

    /// A live product, read aside through the cache: set, then check (see [`crate::cache`]).
    pub async fn get(&self, id: Uuid) -> Result<Product, ApiError> {
        let cached = self.cache.get(id).await;
        cache::count_lookup(NAME, cached.is_some());
        if let Some(product) = cached {
            return Ok(product);
        }
        let product = self.read(id).await?.ok_or_else(no_such_product)?;
        if self.cache.put(&product).await {
            // A write that committed after the read above and forgot the key before the store
            // would leave the old row cached: read again and keep the entry only if the row is
            // still the one stored. Any doubt (changed, deleted, unreadable) forgets it.
            let still = matches!(self.read(id).await, Ok(Some(now)) if now == product);
            if !still {
                self.forget(id).await;
            }
        }
        Ok(product)
    }

    async fn read(&self, id: Uuid) -> Result<Option<Product>, StorageError> {
        let mut conn = self.db.reader().await?;
        store::find(&mut conn, id).await
    }

    /// Forgets product `id` in the cache after a committed write. A failure is only logged: the
    /// write is done, and the catalog's consumer of `product-events` forgets it again when the
    /// write's event arrives.
    async fn forget(&self, id: Uuid) {
        if let Err(e) = self.cache.forget(id).await {
            tracing::warn!(error = %e, product_id = %id,
                "cannot forget a product in the cache; its event will");
        }
    }

    /// Applies an edit; emits `ProductUpdated` with the full new values when anything changed.
    pub async fn update(
        &self,
        correlation_id: &str,
        id: Uuid,
        patch: &ProductPatch,
    ) -> Result<Product, ApiError> {
        let mut tx = self
            .db
            .begin(EventContext::request(NAME, correlation_id))
            .await?;
        let current = store::find(tx.conn(), id)
            .await?
            .ok_or_else(no_such_product)?;
        let next = current.fields.patched(patch)?;
        if next == current.fields {
            return Ok(current);
        }
        store::update(tx.conn(), id, &next, Utc::now().timestamp_millis()).await?;
        tx.emit(Event::ProductUpdated(ProductUpdated {
            product_id: id,
            name: next.name.clone(),
            description: next.description.clone(),
            category: next.category.clone(),
            price: next.price.clone(),
        }))?;
        let product = store::find(tx.conn(), id)
            .await?
            .ok_or_else(no_such_product)?;
        tx.commit().await?;
        self.forget(id).await;
        Ok(product)
    }

    /// Deletes (softly) a live product; emits `ProductDeleted`.
    pub async fn delete(&self, correlation_id: &str, id: Uuid) -> Result<(), ApiError> {
        let mut tx = self
            .db
            .begin(EventContext::request(NAME, correlation_id))
            .await?;
        if !store::delete(tx.conn(), id, Utc::now().timestamp_millis()).await? {
            return Err(no_such_product());
        }
        tx.emit(Event::ProductDeleted(ProductDeleted { product_id: id }))?;
        tx.commit().await?;
        self.forget(id).await;
        Ok(())
    }

    /// A page of live products matching the search, newest first; the cursor is the last id.
    pub async fn list(
        &self,
        q: Option<&str>,
        category: Option<&str>,
        ids: Option<&str>,
        page: &PageRequest,
    ) -> Result<Vec<Product>, ApiError> {
        let filter = domain::Filter {
            ids: domain::ids(ids)?,
            ..domain::filter(q, category)?
        };
        let mut conn = self.db.reader().await?;
        Ok(store::list(&mut conn, &filter, page.after.as_deref(), page.fetch()).await?)
    }
}

#[cfg(test)]
mod tests {
    //! Each test runs on SQLite (`sqlite::…`) and on PostgreSQL (`postgres::…`) when
    //! `EMPORIUM_TEST_DATABASE_URL` names a server ([`emporium_platform::on_both_backends`]).

    use super::*;
    use emporium_platform::{
        api::Page,
        storage::{query, testing::TestDb},
    };

    emporium_platform::on_both_backends!(
        NAME,
        store::MIGRATIONS;
        each_change_writes_its_event_in_the_same_transaction,
        a_refused_product_writes_nothing,
        a_list_by_ids_returns_just_those_live_products,
        searches_match_any_case_and_pages_follow_each_other,
    );

    /// The catalog on the test's database, with an in-process cache.
    fn catalog(db: &TestDb) -> Catalog {
        let cache = Arc::new(emporium_platform::cache::MemoryCache::new(1024 * 1024));
        Catalog::new(Db::clone(db), cache)
    }

    /// The envelopes waiting in the outbox, as JSON.
    async fn outbox(catalog: &Catalog) -> Vec<serde_json::Value> {
        let mut conn = catalog.db.reader().await.unwrap();
        let rows: Vec<Vec<u8>> = query("SELECT payload FROM outbox ORDER BY id")
            .scalars(&mut conn)
            .await
            .unwrap();
        rows.iter()
            .map(|row| serde_json::from_slice(row).unwrap())
            .collect()
    }

    async fn each_change_writes_its_event_in_the_same_transaction(db: TestDb) {
        let catalog = catalog(&db);
        let p = catalog
            .create("c", "Lamp", None, "lighting", Money::new(100, "USD"), 3)
            .await
            .unwrap();
        let patch = ProductPatch {
            price: domain::Change::Set(Money::new(150, "USD")),
            ..ProductPatch::default()
        };
        catalog.update("c", p.id, &patch).await.unwrap();
        // The same edit again changes nothing and says nothing.
        catalog.update("c", p.id, &patch).await.unwrap();
        catalog.delete("c", p.id).await.unwrap();
        assert_eq!(
            catalog.delete("c", p.id).await.unwrap_err().status.as_u16(),
            404
        );
        let events = outbox(&catalog).await;
        let types: Vec<&str> = events
            .iter()
            .map(|e| e["eventType"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            ["ProductCreated", "ProductUpdated", "ProductDeleted"]
        );
        assert_eq!(events[0]["payload"]["initialStock"], 3);
        assert_eq!(events[1]["payload"]["price"]["amount"], 150);
        assert_eq!(events[1]["payload"]["name"], "Lamp");
        for event in &events {
            assert_eq!(event["aggregateId"], p.id.to_string());
            assert_eq!(event["correlationId"], "c");
        }
        assert_eq!(catalog.get(p.id).await.unwrap_err().status.as_u16(), 404);
    }

    async fn a_refused_product_writes_nothing(db: TestDb) {
        let catalog = catalog(&db);
        let error = catalog
            .create("c", "", None, "lighting", Money::new(100, "USD"), 3)
            .await
            .unwrap_err();
        assert_eq!(error.status.as_u16(), 400);
        assert!(outbox(&catalog).await.is_empty());
    }

    async fn a_list_by_ids_returns_just_those_live_products(db: TestDb) {
        let catalog = catalog(&db);
        let mut ids = Vec::new();
        for name in ["Lamp", "Desk", "Chair"] {
            let p = catalog
                .create("c", name, None, "furniture", Money::new(1, "USD"), 0)
                .await
                .unwrap();
            ids.push(p.id);
        }
        catalog.delete("c", ids[2]).await.unwrap();
        let all = PageRequest::parse(None, None).unwrap();
        let wanted = format!("{},{},{}", ids[0], ids[2], ids[0]);
        let names: Vec<String> = catalog
            .list(None, None, Some(&wanted), &all)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.fields.name)
            .collect();
        assert_eq!(names, ["Lamp"], "the deleted chair is left out");
        let error = catalog
            .list(None, None, Some("lamp"), &all)
            .await
            .unwrap_err();
        assert_eq!(error.errors[0].field, "ids");
    }

    async fn searches_match_any_case_and_pages_follow_each_other(db: TestDb) {
        let catalog = catalog(&db);
        for (name, description, category) in [
            ("Éclair Lamp", None, "Lighting"),
            ("Desk", Some("Holds an ÉCLAIR"), "furniture"),
            ("100% cotton_shirt", None, "clothes"),
            ("Chair", None, "furniture"),
        ] {
            catalog
                .create("c", name, description, category, Money::new(1, "USD"), 0)
                .await
                .unwrap();
        }
        let names = |products: Vec<Product>| -> Vec<String> {
            products.into_iter().map(|p| p.fields.name).collect()
        };
        let all = PageRequest::parse(None, None).unwrap();
        assert_eq!(
            names(
                catalog
                    .list(Some("éclair"), None, None, &all)
                    .await
                    .unwrap()
            ),
            ["Desk", "Éclair Lamp"]
        );
        assert_eq!(
            names(catalog.list(Some("%"), None, None, &all).await.unwrap()),
            ["100% cotton_shirt"]
        );
        // `_` is no wildcard: as one, "h_i" would match "Chair".
        assert_eq!(
            names(catalog.list(Some("h_i"), None, None, &all).await.unwrap()),
            Vec::<String>::new()
        );
        assert_eq!(
            names(
                catalog
                    .list(None, Some("FURNITURE"), None, &all)
                    .await
                    .unwrap()
            ),
            ["Chair", "Desk"]
        );
        assert_eq!(
            names(
                catalog
                    .list(Some("éclair"), Some("lighting"), None, &all)
                    .await
                    .unwrap()
            ),
            ["Éclair Lamp"]
        );

        let mut seen = Vec::new();
        let mut request = PageRequest::parse(Some("3"), None).unwrap();
        loop {
            let rows = catalog.list(None, None, None, &request).await.unwrap();
            let page = Page::from_rows(rows, &request, |p| p.id.to_string());
            seen.extend(page.items.into_iter().map(|p| p.fields.name));
            match page.next_cursor {
                Some(cursor) => {
                    request = PageRequest::parse(Some("3"), Some(&cursor)).unwrap();
                }
                None => break,
            }
        }
        assert_eq!(seen, ["Chair", "100% cotton_shirt", "Desk", "Éclair Lamp"]);
    }
}
