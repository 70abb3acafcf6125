//! The product cache against a real (SQLite) database and a real cache: every check runs on the
//! in-process cache (`memory::…`) and, when `EMPORIUM_TEST_REDIS_URL` names a Redis server
//! (`scripts/dev-services`), on Redis too (`redis::…`, keys under a prefix of their own); without
//! one those say they are skipped and pass.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use emporium_events::{Envelope, Event, Money, ProductCreated, ProductDeleted};
use emporium_platform::{
    auth::Tokens,
    bus::{EventBus, OutboxLog, consumer::EventHandler, consumer::HandlerError},
    cache::{Cache, CacheError, MemoryCache, RedisCache},
    config::Config,
    service::{Service, ServiceContext, Workers},
    storage::{Db, EventContext, query, relay::Relay},
};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    CatalogService, NAME,
    app::Catalog,
    cache::{self, ProductCache},
    consumers::CacheInvalidator,
    domain::{Change, ProductPatch},
    store::{self, Product},
};

/// Runs each named check (an `async fn(Arc<dyn Cache>)` below) on the in-process cache and on
/// Redis.
macro_rules! on_each_cache {
    ($($name:ident),* $(,)?) => {
        mod memory {$(
            #[tokio::test]
            async fn $name() {
                super::$name(std::sync::Arc::new(
                    emporium_platform::cache::MemoryCache::new(1024 * 1024),
                ))
                .await;
            }
        )*}
        mod redis {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(cache) = super::redis(stringify!($name)).await {
                    super::$name(cache).await;
                }
            }
        )*}
    };
}

on_each_cache!(
    a_second_read_is_served_from_the_cache,
    an_update_is_read_at_once,
    a_deleted_product_is_not_found_and_not_cached,
    a_write_racing_a_read_leaves_nothing_stale,
    a_product_event_forgets_what_another_instance_changed,
);

/// A Redis cache whose keys are prefixed with the test's name and a fresh id, so runs sharing the
/// server never see each other's keys; `None` (and a note) without `EMPORIUM_TEST_REDIS_URL`.
async fn redis(test: &str) -> Option<Arc<dyn Cache>> {
    let Ok(url) = std::env::var("EMPORIUM_TEST_REDIS_URL") else {
        eprintln!(
            "skipped: {test} on Redis needs EMPORIUM_TEST_REDIS_URL \
             (run scripts/dev-services; .ci/run does)"
        );
        return None;
    };
    let prefix = format!("emporium-it:catalog:{test}:{}:", Uuid::now_v7().simple());
    Some(Arc::new(RedisCache::connect(&url, prefix).await.unwrap()))
}

struct Fixture {
    db: Db,
    catalog: Catalog,
    dir: tempfile::TempDir,
}

/// SQLite only: the subject here is the cache, run on both caches; the catalog's storage runs on
/// both databases in `app::tests`.
async fn fixture(cache: Arc<dyn Cache>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_sqlite(NAME, &dir.path().join("catalog.db"))
        .await
        .unwrap();
    db.migrate(store::MIGRATIONS).await.unwrap();
    Fixture {
        catalog: Catalog::new(db.clone(), cache),
        db,
        dir,
    }
}

async fn lamp(catalog: &Catalog) -> Product {
    catalog
        .create("c", "Lamp", None, "lighting", Money::new(100, "USD"), 3)
        .await
        .unwrap()
}

fn rename(name: &str) -> ProductPatch {
    ProductPatch {
        name: Change::Set(name.to_owned()),
        ..ProductPatch::default()
    }
}

/// The name in the cached entry of product `id`, if there is one.
async fn cached_name(cache: &dyn Cache, id: Uuid) -> Option<String> {
    let bytes = cache.get(&cache::key(id)).await.unwrap()?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    Some(json["name"].as_str().unwrap().to_owned())
}

/// Renames product `id` in the database without the catalog knowing: no forget, no event.
async fn rename_behind_its_back(db: &Db, id: Uuid, name: &str) {
    let mut tx = db.begin(EventContext::request(NAME, "test")).await.unwrap();
    query("UPDATE products SET name = $1 WHERE id = $2")
        .bind(name)
        .bind(id)
        .execute(tx.conn())
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn a_second_read_is_served_from_the_cache(cache: Arc<dyn Cache>) {
    let f = fixture(cache.clone()).await;
    let created = lamp(&f.catalog).await;
    assert_eq!(cached_name(cache.as_ref(), created.id).await, None);
    let first = f.catalog.get(created.id).await.unwrap();
    assert_eq!(first, created);
    assert_eq!(
        cached_name(cache.as_ref(), created.id).await.as_deref(),
        Some("Lamp")
    );
    // Only a read from the cache can still see the old name.
    rename_behind_its_back(&f.db, created.id, "Changed behind its back").await;
    assert_eq!(f.catalog.get(created.id).await.unwrap(), first);
}

async fn an_update_is_read_at_once(cache: Arc<dyn Cache>) {
    let f = fixture(cache.clone()).await;
    let p = lamp(&f.catalog).await;
    f.catalog.get(p.id).await.unwrap();
    let patch = ProductPatch {
        price: Change::Set(Money::new(150, "EUR")),
        ..rename("Desk Lamp")
    };
    let updated = f.catalog.update("c", p.id, &patch).await.unwrap();
    assert_eq!(cached_name(cache.as_ref(), p.id).await, None, "forgotten");
    let read = f.catalog.get(p.id).await.unwrap();
    assert_eq!(read, updated);
    assert_eq!(read.fields.price, Money::new(150, "EUR"));
    assert_eq!(
        cached_name(cache.as_ref(), p.id).await.as_deref(),
        Some("Desk Lamp")
    );
}

async fn a_deleted_product_is_not_found_and_not_cached(cache: Arc<dyn Cache>) {
    let f = fixture(cache.clone()).await;
    let p = lamp(&f.catalog).await;
    f.catalog.get(p.id).await.unwrap();
    f.catalog.delete("c", p.id).await.unwrap();
    assert_eq!(cached_name(cache.as_ref(), p.id).await, None);
    assert_eq!(f.catalog.get(p.id).await.unwrap_err().status.as_u16(), 404);
    assert_eq!(
        cached_name(cache.as_ref(), p.id).await,
        None,
        "404s are not cached"
    );
    let unknown = Uuid::now_v7();
    assert_eq!(
        f.catalog.get(unknown).await.unwrap_err().status.as_u16(),
        404
    );
}

type Write = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A cache that makes a write happen just before its first store: the read that stores has
/// already read the row, and the write commits and forgets the key before the store lands.
struct WriteBeforeStore {
    inner: Arc<dyn Cache>,
    write: Mutex<Option<Write>>,
}

#[async_trait]
impl Cache for WriteBeforeStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.inner.get(key).await
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), CacheError> {
        let write = self.write.lock().unwrap().take();
        if let Some(write) = write {
            write.await;
        }
        self.inner.set(key, value, ttl).await
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.inner.delete(key).await
    }
}

async fn a_write_racing_a_read_leaves_nothing_stale(cache: Arc<dyn Cache>) {
    let f = fixture(cache.clone()).await;
    let p = lamp(&f.catalog).await;
    let writer = f.catalog.clone();
    let id = p.id;
    let racing = WriteBeforeStore {
        inner: cache.clone(),
        write: Mutex::new(Some(Box::pin(async move {
            writer.update("c", id, &rename("Desk Lamp")).await.unwrap();
        }))),
    };
    let reader = Catalog::new(f.db.clone(), Arc::new(racing));
    assert_eq!(
        reader.get(id).await.unwrap().fields.name,
        "Lamp",
        "the row as read before the write"
    );
    assert_eq!(
        cached_name(cache.as_ref(), id).await,
        None,
        "the old row was stored after the write's forget; the check must forget it"
    );
    assert_eq!(reader.get(id).await.unwrap().fields.name, "Desk Lamp");
}

/// The cache of an instance that cannot reach it.
struct BrokenCache;

#[async_trait]
impl Cache for BrokenCache {
    async fn get(&self, _: &str) -> Result<Option<Vec<u8>>, CacheError> {
        Err(CacheError::Unavailable("connection refused".into()))
    }
    async fn set(&self, _: &str, _: Vec<u8>, _: Duration) -> Result<(), CacheError> {
        Err(CacheError::Unavailable("connection refused".into()))
    }
    async fn delete(&self, _: &str) -> Result<(), CacheError> {
        Err(CacheError::Unavailable("connection refused".into()))
    }
}

/// The service as it runs (its consumer in group `catalog` and the relay, on the embedded log),
/// forgetting a change whose writer could not forget it.
async fn a_product_event_forgets_what_another_instance_changed(cache: Arc<dyn Cache>) {
    let f = fixture(cache.clone()).await;
    let p = lamp(&f.catalog).await;
    f.catalog.get(p.id).await.unwrap();
    // Another instance, on the same database, whose cache is out of reach when it writes.
    let other = Catalog::new(f.db.clone(), Arc::new(BrokenCache));
    other.update("c", p.id, &rename("Desk Lamp")).await.unwrap();
    assert_eq!(
        f.catalog.get(p.id).await.unwrap().fields.name,
        "Lamp",
        "nothing has forgotten it yet"
    );

    let bus: Arc<dyn EventBus> = Arc::new(
        OutboxLog::open(&f.dir.path().join("events.db"), 2)
            .await
            .unwrap(),
    );
    let (stop, stop_rx) = watch::channel(false);
    let ctx = ServiceContext {
        name: NAME,
        db: f.db.clone(),
        bus: bus.clone(),
        config: Arc::new(Config::defaults(Some("test")).unwrap()),
        tokens: Tokens::new(&[7; 32]),
        cache: cache.clone(),
        stop: stop_rx.clone(),
    };
    let mut workers = Workers::default();
    CatalogService.start(&ctx, &mut workers).await.unwrap();
    let relay = tokio::spawn(Relay::new(f.db.clone(), bus, 64).run(stop_rx));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while cached_name(cache.as_ref(), p.id).await.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ProductUpdated never forgot the product"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(f.catalog.get(p.id).await.unwrap().fields.name, "Desk Lamp");

    workers.stop().await;
    stop.send(true).unwrap();
    relay.await.unwrap();
}

#[tokio::test]
async fn a_failing_cache_never_fails_a_request() {
    let f = fixture(Arc::new(BrokenCache)).await;
    let p = lamp(&f.catalog).await;
    assert_eq!(f.catalog.get(p.id).await.unwrap(), p);
    f.catalog
        .update("c", p.id, &rename("Desk Lamp"))
        .await
        .unwrap();
    assert_eq!(f.catalog.get(p.id).await.unwrap().fields.name, "Desk Lamp");
    f.catalog.delete("c", p.id).await.unwrap();
    assert_eq!(f.catalog.get(p.id).await.unwrap_err().status.as_u16(), 404);
}

#[tokio::test]
async fn an_unreadable_entry_is_a_miss() {
    let cache: Arc<dyn Cache> = Arc::new(MemoryCache::new(1024 * 1024));
    let f = fixture(cache.clone()).await;
    let p = lamp(&f.catalog).await;
    cache
        .set(&cache::key(p.id), b"{not json".to_vec(), cache::TTL)
        .await
        .unwrap();
    assert_eq!(f.catalog.get(p.id).await.unwrap(), p);
    assert_eq!(
        cached_name(cache.as_ref(), p.id).await.as_deref(),
        Some("Lamp"),
        "replaced by the row"
    );
}

#[tokio::test]
async fn a_cache_that_cannot_forget_pauses_the_consumer_instead_of_dead_lettering() {
    let f = fixture(Arc::new(MemoryCache::new(1024))).await;
    let handler = CacheInvalidator {
        cache: ProductCache::new(Arc::new(BrokenCache)),
    };
    let handle = |event: Event| {
        let envelope = Envelope::new(NAME, "c", None, event);
        let (db, handler) = (&f.db, &handler);
        async move {
            let mut tx = db
                .begin(EventContext::caused_by(NAME, &envelope))
                .await
                .unwrap();
            handler.handle(&mut tx, &envelope).await
        }
    };
    let deleted = handle(Event::ProductDeleted(ProductDeleted {
        product_id: Uuid::now_v7(),
    }))
    .await;
    assert!(
        matches!(deleted, Err(HandlerError::Infra(_))),
        "{deleted:?}"
    );
    // A new product was never cached: nothing to forget, nothing to fail.
    let created = handle(Event::ProductCreated(ProductCreated {
        product_id: Uuid::now_v7(),
        name: "Lamp".into(),
        description: None,
        category: "lighting".into(),
        price: Money::new(100, "USD"),
        initial_stock: 0,
    }))
    .await;
    assert!(created.is_ok(), "{created:?}");
}
