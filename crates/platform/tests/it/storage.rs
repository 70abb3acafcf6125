//! Storage: migrations, the outbox and its relay.

use std::sync::Arc;

use emporium_events::{Event, ProductDeleted};
use emporium_platform::{
    bus::{EventBus, SqliteEventLog, partition_for},
    storage::{Db, EventContext, Migration, relay::Relay},
};
use uuid::Uuid;

const ITEMS: &[Migration] = &[Migration::portable(
    100,
    "items",
    "CREATE TABLE items (id TEXT PRIMARY KEY)",
)];

async fn open(dir: &tempfile::TempDir) -> (Db, Arc<dyn EventBus>, SqliteEventLog) {
    let db = Db::open_sqlite("items", &dir.path().join("items.db"))
        .await
        .unwrap();
    db.migrate(ITEMS).await.unwrap();
    let log = SqliteEventLog::open(&dir.path().join("events.db"), 2)
        .await
        .unwrap();
    (db, Arc::new(log.clone()), log)
}

async fn add_item(db: &Db, correlation: &str) -> (Uuid, Uuid) {
    let id = Uuid::now_v7();
    let mut tx = db
        .begin(EventContext::request("items", correlation))
        .await
        .unwrap();
    sqlx::query("INSERT INTO items (id) VALUES ($1)")
        .bind(id.to_string())
        .execute(tx.conn())
        .await
        .unwrap();
    let envelope = tx
        .emit(Event::ProductDeleted(ProductDeleted { product_id: id }))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    (id, envelope.event_id)
}

#[tokio::test]
async fn migrations_run_once_and_can_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _, _) = open(&dir).await;
    db.migrate(ITEMS).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(db.reader())
            .await
            .unwrap();
    assert_eq!(versions, vec![1, 2, 100]);
}

#[tokio::test]
async fn a_committed_transaction_leaves_its_events_in_the_outbox_and_the_relay_publishes_them() {
    let dir = tempfile::tempdir().unwrap();
    let (db, bus, log) = open(&dir).await;
    let (id, event_id) = add_item(&db, "corr-7").await;
    assert_eq!(db.outbox_backlog().await.unwrap(), 1);

    let relay = Relay::new(db.clone(), bus, 10);
    assert_eq!(relay.drain().await.unwrap(), 1);
    assert_eq!(db.outbox_backlog().await.unwrap(), 0);

    let delivered = log
        .read("product-events", partition_for(&id.to_string(), 2), 0, 10)
        .await
        .unwrap();
    assert_eq!(delivered.len(), 1);
    let envelope = emporium_events::Envelope::from_json(&delivered[0].record.payload).unwrap();
    assert_eq!(envelope.event_id, event_id);
    assert_eq!(
        envelope.correlation_id, "corr-7",
        "the request's correlation id travels with the event"
    );
    assert_eq!(envelope.aggregate_id, id.to_string());
    assert_eq!(envelope.source, "items");
    assert_eq!(delivered[0].record.header("correlation-id"), Some("corr-7"));
}

#[tokio::test]
async fn a_rolled_back_transaction_emits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _, _) = open(&dir).await;
    {
        let mut tx = db.begin(EventContext::request("items", "c")).await.unwrap();
        tx.emit(Event::ProductDeleted(ProductDeleted {
            product_id: Uuid::now_v7(),
        }))
        .await
        .unwrap();
        // dropped without commit
    }
    assert_eq!(db.outbox_backlog().await.unwrap(), 0);
}

#[tokio::test]
async fn the_relay_wakes_on_commit_and_keeps_order() {
    let dir = tempfile::tempdir().unwrap();
    let (db, bus, log) = open(&dir).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let relay = tokio::spawn(Relay::new(db.clone(), bus, 3).run(stop_rx));
    let mut expected = Vec::new();
    for _ in 0..20 {
        expected.push(add_item(&db, "c").await);
    }
    // The relay is woken by each commit; wait until it has caught up.
    for _ in 0..500 {
        if db.outbox_backlog().await.unwrap() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(db.outbox_backlog().await.unwrap(), 0);
    stop_tx.send(true).unwrap();
    relay.await.unwrap();
    let mut published = Vec::new();
    for partition in 0..2 {
        published.extend(log.read("product-events", partition, 0, 100).await.unwrap());
    }
    assert_eq!(published.len(), 20);
    // Within each partition, outbox order is log order.
    for partition in 0..2 {
        let ids: Vec<Uuid> = published
            .iter()
            .filter(|d| d.partition == partition)
            .map(|d| {
                emporium_events::Envelope::from_json(&d.record.payload)
                    .unwrap()
                    .event_id
            })
            .collect();
        let mut sorted = ids.clone();
        sorted.sort(); // UUIDv7 ids grow with time: emission order
        assert_eq!(ids, sorted);
    }
}
