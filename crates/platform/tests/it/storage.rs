//! Storage: migrations, the outbox, its relay and the inbox — one suite run on SQLite and, when
//! `EMPORIUM_TEST_DATABASE_URL` names a PostgreSQL server (`scripts/dev-services` starts one), on
//! PostgreSQL too. Each PostgreSQL test has its own database, dropped and recreated at its start,
//! so tests run in parallel and a failed run can be inspected with `psql -l`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use emporium_events::{Envelope, Event, ProductDeleted};
use emporium_platform::{
    bus::{EventBus, OutboxLog, partition_for},
    http::{HealthCheck, OutboxCheck},
    storage::{
        Conn, Db, Dialect, EventContext, Migration, MultiRow, Value, query,
        relay::Relay,
        testing::{self, TestDb},
    },
};
use uuid::Uuid;

const ITEMS: &[Migration] = &[Migration::portable(
    100,
    "items",
    "CREATE TABLE items (id TEXT PRIMARY KEY)",
)];

const NOTES: Migration = Migration {
    version: 101,
    name: "notes",
    sqlite: "CREATE TABLE notes (id TEXT PRIMARY KEY, n BIGINT NOT NULL, body BLOB NOT NULL,
        label TEXT, m BIGINT)",
    postgres: "CREATE TABLE notes (id TEXT PRIMARY KEY, n BIGINT NOT NULL, body BYTEA NOT NULL,
        label TEXT, m BIGINT)",
};

static NOTE_INSERT: MultiRow = MultiRow::new(
    "INSERT INTO notes (id, n, body, label, m) VALUES ",
    0,
    5,
    " ON CONFLICT (id) DO NOTHING",
);

static ITEM_INSERT: MultiRow = MultiRow::new("INSERT INTO items (id) VALUES ", 0, 1, "");

const PARTITIONS: u32 = 2;

/// The database under test plus an embedded event log for the relay to publish to.
struct Setup {
    db: TestDb,
    bus: Arc<dyn EventBus>,
    log: OutboxLog,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn new(db: TestDb) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let log = OutboxLog::open(&dir.path().join("events.db"), PARTITIONS)
            .await
            .unwrap();
        Setup {
            db,
            bus: Arc::new(log.clone()),
            log,
            _dir: dir,
        }
    }

    /// Another instance of the same service on the same PostgreSQL database, as another process
    /// would open it.
    async fn another_instance(&self) -> Db {
        self.db
            .another_instance()
            .await
            .expect("a SQLite file belongs to one process: there is no other instance")
    }

    /// Every record the relay published, by partition, in log order.
    async fn published(&self) -> Vec<(u32, Envelope)> {
        let mut all = Vec::new();
        for partition in 0..PARTITIONS {
            for delivery in self
                .log
                .read("product-events", partition, 0, 10_000)
                .await
                .unwrap()
            {
                let envelope = Envelope::from_json(&delivery.record.payload).unwrap();
                all.push((partition, envelope));
            }
        }
        all
    }

    /// The ids of the published events, by key, each key's in publishing order.
    async fn published_by_key(&self) -> HashMap<String, Vec<Uuid>> {
        let mut by_key: HashMap<String, Vec<Uuid>> = HashMap::new();
        for (_, envelope) in self.published().await {
            by_key
                .entry(envelope.aggregate_id)
                .or_default()
                .push(envelope.event_id);
        }
        by_key
    }
}

async fn sqlite() -> Setup {
    Setup::new(testing::sqlite("items", ITEMS).await).await
}

/// A fresh PostgreSQL database for `test`, or `None` (after saying why) when no server is
/// configured.
async fn postgres(test: &str) -> Option<Setup> {
    let db = testing::postgres("items", &format!("storage::{test}"), ITEMS).await?;
    assert_eq!(db.dialect(), Dialect::Postgres);
    Some(Setup::new(db).await)
}

/// Each test runs once per backend: `sqlite::<name>` always, `postgres::<name>` when a server is
/// configured (and passes, saying it was skipped, when not).
macro_rules! storage_tests {
    (both: $($both:ident),* $(,)?; postgres only: $($pg:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $both() {
                    super::$both(super::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $both() {
                    if let Some(setup) = super::postgres(stringify!($both)).await {
                        super::$both(setup).await;
                    }
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $pg() {
                    if let Some(setup) = super::postgres(stringify!($pg)).await {
                        super::$pg(setup).await;
                    }
                }
            )*
        }
    };
}

storage_tests!(
    both:
    migrations_run_once_and_can_run_again,
    a_committed_transaction_leaves_its_events_in_the_outbox_and_the_relay_publishes_them,
    a_rolled_back_transaction_emits_nothing,
    events_emitted_together_are_published_in_emission_order,
    readiness_reports_an_outbox_whose_oldest_event_waited_too_long,
    the_relay_wakes_on_commit_and_keeps_order,
    the_inbox_recognises_an_event_applied_before,
    the_inbox_records_many_events_in_one_call,
    rows_inserted_at_commit_arrive_with_the_commit_and_only_then,
    ;
    // Only PostgreSQL serves several instances of a service; a SQLite file has one process.
    postgres only:
    instances_migrating_at_once_apply_each_migration_once,
    two_relays_on_one_database_publish_each_event_once_in_key_order,
    a_transaction_emitting_for_a_key_waits_for_an_earlier_one_to_commit,
);

async fn add_item(db: &Db, correlation: &str) -> (Uuid, Uuid) {
    add_event(db, Uuid::now_v7(), correlation).await
}

/// Emits one event keyed by `id` in a transaction that also writes a row.
async fn add_event(db: &Db, id: Uuid, correlation: &str) -> (Uuid, Uuid) {
    let mut tx = db
        .begin(EventContext::request("items", correlation))
        .await
        .unwrap();
    query("INSERT INTO items (id) VALUES ($1)")
        .bind(Uuid::now_v7())
        .execute(tx.conn())
        .await
        .unwrap();
    let envelope = tx
        .emit(Event::ProductDeleted(ProductDeleted { product_id: id }))
        .unwrap();
    tx.commit().await.unwrap();
    (id, envelope.event_id)
}

async fn wait_for_empty_outbox(db: &Db) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while db.outbox_backlog().await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outbox never drained"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn migrations_run_once_and_can_run_again(s: Setup) {
    s.db.migrate(ITEMS).await.unwrap();
    let versions: Vec<i64> = query("SELECT version FROM schema_migrations ORDER BY version")
        .scalars(&mut s.db.reader().await.unwrap())
        .await
        .unwrap();
    assert_eq!(versions, vec![1, 2, 100]);
}

/// Instances of a service start together and each migrates: every migration must still run once
/// (a second run of 101 would fail, of 102 would insert a second row).
async fn instances_migrating_at_once_apply_each_migration_once(s: Setup) {
    const MORE: &[Migration] = &[
        Migration::portable(101, "counter", "CREATE TABLE counter (n BIGINT NOT NULL)"),
        Migration::portable(102, "counter row", "INSERT INTO counter (n) VALUES (1)"),
    ];
    let mut instances = vec![s.db.clone()];
    for _ in 0..3 {
        instances.push(s.another_instance().await);
    }
    let all: Vec<_> = [ITEMS, MORE].concat();
    let runs = instances.iter().map(|db| db.migrate(&all));
    for result in futures_util::future::join_all(runs).await {
        result.unwrap();
    }
    let rows: i64 = query("SELECT COUNT(*) FROM counter")
        .scalar(&mut s.db.reader().await.unwrap())
        .await
        .unwrap();
    assert_eq!(rows, 1);
    let versions: Vec<i64> = query("SELECT version FROM schema_migrations ORDER BY version")
        .scalars(&mut s.db.reader().await.unwrap())
        .await
        .unwrap();
    assert_eq!(versions, vec![1, 2, 100, 101, 102]);
}

async fn a_committed_transaction_leaves_its_events_in_the_outbox_and_the_relay_publishes_them(
    s: Setup,
) {
    let (id, event_id) = add_item(&s.db, "corr-7").await;
    assert_eq!(s.db.outbox_backlog().await.unwrap(), 1);

    let relay = Relay::new(s.db.clone(), s.bus.clone(), 10);
    assert_eq!(relay.drain().await.unwrap(), 1);
    assert_eq!(s.db.outbox_backlog().await.unwrap(), 0);

    let delivered = s
        .log
        .read(
            "product-events",
            partition_for(&id.to_string(), PARTITIONS),
            0,
            10,
        )
        .await
        .unwrap();
    assert_eq!(delivered.len(), 1);
    let envelope = Envelope::from_json(&delivered[0].record.payload).unwrap();
    assert_eq!(envelope.event_id, event_id);
    assert_eq!(
        envelope.correlation_id, "corr-7",
        "the request's correlation id travels with the event"
    );
    assert_eq!(envelope.aggregate_id, id.to_string());
    assert_eq!(envelope.source, "items");
    assert_eq!(delivered[0].record.header("correlation-id"), Some("corr-7"));
}

/// Emitted events reach the outbox at commit, several to a statement: 70 events over 35 keys in
/// one transaction (inserts of 64, 4 and 2 rows; on PostgreSQL, key locks of 16, 16 and 3) are
/// all published, each key's in the order they were emitted, and the transaction's
/// reads see none of them before commit.
async fn events_emitted_together_are_published_in_emission_order(s: Setup) {
    let keys: Vec<Uuid> = (0..35).map(|_| Uuid::now_v7()).collect();
    let mut tx =
        s.db.begin(EventContext::request("items", "many"))
            .await
            .unwrap();
    let mut expected: HashMap<String, Vec<Uuid>> = HashMap::new();
    for i in 0..70 {
        let key = keys[i % keys.len()];
        let envelope = tx
            .emit(Event::ProductDeleted(ProductDeleted { product_id: key }))
            .unwrap();
        expected
            .entry(key.to_string())
            .or_default()
            .push(envelope.event_id);
    }
    let before_commit: i64 = query("SELECT COUNT(*) FROM outbox")
        .scalar(tx.conn())
        .await
        .unwrap();
    assert_eq!(before_commit, 0);
    tx.commit().await.unwrap();
    assert_eq!(s.db.outbox_backlog().await.unwrap(), 70);
    let relay = Relay::new(s.db.clone(), s.bus.clone(), 100);
    assert_eq!(relay.drain().await.unwrap(), 70);
    for (_, envelope) in s.published().await {
        assert_eq!(envelope.correlation_id, "many");
    }
    assert_eq!(s.published_by_key().await, expected);
}

async fn readiness_reports_an_outbox_whose_oldest_event_waited_too_long(s: Setup) {
    let check = |max_age| OutboxCheck {
        db: s.db.clone(),
        max_age,
    };
    assert_eq!(s.db.oldest_outbox_age().await.unwrap(), None);
    assert_eq!(check(Duration::from_millis(1)).check().await, Ok(()));
    add_item(&s.db, "c").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let age = s.db.oldest_outbox_age().await.unwrap().unwrap();
    assert!(
        age >= Duration::from_millis(20) && age < Duration::from_secs(60),
        "{age:?}"
    );
    let down = check(Duration::from_millis(10)).check().await.unwrap_err();
    assert!(down.contains("bus.outbox_max_age"), "{down}");
    assert_eq!(check(Duration::from_secs(3600)).check().await, Ok(()));
    // Once published, the outbox is fresh again.
    Relay::new(s.db.clone(), s.bus.clone(), 10)
        .drain()
        .await
        .unwrap();
    assert_eq!(check(Duration::from_millis(10)).check().await, Ok(()));
}

async fn a_rolled_back_transaction_emits_nothing(s: Setup) {
    {
        let mut tx =
            s.db.begin(EventContext::request("items", "c"))
                .await
                .unwrap();
        tx.emit(Event::ProductDeleted(ProductDeleted {
            product_id: Uuid::now_v7(),
        }))
        .unwrap();
        // dropped without commit
    }
    assert_eq!(s.db.outbox_backlog().await.unwrap(), 0);
}

async fn the_relay_wakes_on_commit_and_keeps_order(s: Setup) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let relay = tokio::spawn(Relay::new(s.db.clone(), s.bus.clone(), 3).run(stop_rx));
    for _ in 0..20 {
        add_item(&s.db, "c").await;
    }
    // The relay is woken by each commit; wait until it has caught up.
    wait_for_empty_outbox(&s.db).await;
    stop_tx.send(true).unwrap();
    relay.await.unwrap();
    let published = s.published().await;
    assert_eq!(published.len(), 20);
    // Within each partition, outbox order is log order.
    for partition in 0..PARTITIONS {
        let ids: Vec<Uuid> = published
            .iter()
            .filter(|(p, _)| *p == partition)
            .map(|(_, e)| e.event_id)
            .collect();
        let mut sorted = ids.clone();
        sorted.sort(); // UUIDv7 ids grow with time: emission order
        assert_eq!(ids, sorted);
    }
}

async fn the_inbox_recognises_an_event_applied_before(s: Setup) {
    let event = Uuid::now_v7();
    assert!(!s.db.inbox_contains("shipper", event).await.unwrap());

    // Rolled back: not applied, so not recorded.
    {
        let mut tx =
            s.db.begin(EventContext::request("items", "c"))
                .await
                .unwrap();
        assert!(tx.record_in_inbox("shipper", event).await.unwrap());
    }
    assert!(!s.db.inbox_contains("shipper", event).await.unwrap());

    let mut tx =
        s.db.begin(EventContext::request("items", "c"))
            .await
            .unwrap();
    assert!(tx.record_in_inbox("shipper", event).await.unwrap());
    tx.commit().await.unwrap();
    assert!(s.db.inbox_contains("shipper", event).await.unwrap());

    let mut again =
        s.db.begin(EventContext::request("items", "c"))
            .await
            .unwrap();
    assert!(
        !again.record_in_inbox("shipper", event).await.unwrap(),
        "a redelivered event is recognised"
    );
    assert!(
        again.record_in_inbox("biller", event).await.unwrap(),
        "each consumer has its own inbox"
    );
    again.commit().await.unwrap();
}

/// A batch's ids in one call (more than one statement's worth): the new ones come back, once each;
/// the ones recorded before do not.
async fn the_inbox_records_many_events_in_one_call(s: Setup) {
    let seen_before = Uuid::now_v7();
    let mut tx =
        s.db.begin(EventContext::request("items", "c"))
            .await
            .unwrap();
    assert!(tx.record_in_inbox("shipper", seen_before).await.unwrap());
    tx.commit().await.unwrap();

    let new: Vec<Uuid> = (0..90).map(|_| Uuid::now_v7()).collect();
    let mut batch = new.clone();
    batch.insert(40, seen_before);
    batch.push(new[3]); // redelivered within the batch
    let mut tx =
        s.db.begin(EventContext::request("items", "c"))
            .await
            .unwrap();
    let recorded = tx.record_all_in_inbox("shipper", &batch).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        recorded,
        new.iter()
            .copied()
            .collect::<std::collections::HashSet<_>>()
    );
    for id in &new {
        assert!(s.db.inbox_contains("shipper", *id).await.unwrap());
    }
}

async fn count(conn: &mut Conn, table: &str) -> i64 {
    query(&format!("SELECT COUNT(*) FROM {table}"))
        .scalar(conn)
        .await
        .unwrap()
}

/// Rows given to `insert_at_commit` are written by the commit, in multi-row statements (70 rows:
/// 64 + 4 + 2, the last two the same row, which `ON CONFLICT DO NOTHING` takes once), each
/// statement with its own rows, typed `NULL`s included; a transaction rolled back writes none, and
/// a row of the wrong width is refused when it is given.
async fn rows_inserted_at_commit_arrive_with_the_commit_and_only_then(s: Setup) {
    s.db.migrate(&[ITEMS[0], NOTES]).await.unwrap();
    let note = |i: i64| {
        let even = i % 2 == 0;
        vec![
            format!("note-{i:02}").into(),
            i.into(),
            vec![i as u8; 3].into(),
            Value::Text(even.then(|| format!("label {i}"))),
            Value::Int(even.then_some(i * 10)),
        ]
    };
    let mut tx =
        s.db.begin(EventContext::request("items", "c"))
            .await
            .unwrap();
    for i in 0..69 {
        tx.insert_at_commit(&NOTE_INSERT, note(i)).unwrap();
        if i % 10 == 0 {
            tx.insert_at_commit(&ITEM_INSERT, vec![format!("item-{i}").into()])
                .unwrap();
        }
    }
    tx.insert_at_commit(&NOTE_INSERT, note(68)).unwrap();
    let refused = tx.insert_at_commit(&NOTE_INSERT, vec![Value::Int(Some(1))]);
    assert!(refused.is_err(), "one value for three columns");
    assert_eq!(count(tx.conn(), "notes").await, 0, "not before the commit");
    tx.commit().await.unwrap();

    let mut conn = s.db.reader().await.unwrap();
    assert_eq!(count(&mut conn, "notes").await, 69);
    assert_eq!(count(&mut conn, "items").await, 7);
    type Note = (i64, Vec<u8>, Option<String>, Option<i64>);
    async fn read(conn: &mut Conn, id: &str) -> Note {
        let row = query("SELECT n, body, label, m FROM notes WHERE id = $1")
            .bind(id)
            .fetch_one(conn)
            .await
            .unwrap();
        (
            row.get(0).unwrap(),
            row.get(1).unwrap(),
            row.get(2).unwrap(),
            row.get(3).unwrap(),
        )
    }
    assert_eq!(
        read(&mut conn, "note-68").await,
        (68, vec![68u8; 3], Some("label 68".into()), Some(680))
    );
    assert_eq!(
        read(&mut conn, "note-67").await,
        (67, vec![67u8; 3], None, None)
    );

    let mut tx =
        s.db.begin(EventContext::request("items", "c"))
            .await
            .unwrap();
    tx.insert_at_commit(&NOTE_INSERT, note(99)).unwrap();
    drop(tx);
    assert_eq!(count(&mut conn, "notes").await, 69, "rolled back");
}

/// Several instances of a service each run a relay on the one database while writers on both
/// emit: every event is published once, and each key's events in the order they were emitted.
async fn two_relays_on_one_database_publish_each_event_once_in_key_order(s: Setup) {
    let other = s.another_instance().await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let relays = [s.db.clone(), other.clone()]
        .map(|db| tokio::spawn(Relay::new(db, s.bus.clone(), 4).run(stop_rx.clone())));
    // Eight keys, each written by its own sequence of transactions, half through each instance.
    let keys: Vec<Uuid> = (0..8).map(|_| Uuid::now_v7()).collect();
    let writers = keys.iter().enumerate().map(|(i, key)| {
        let db = if i % 2 == 0 {
            s.db.clone()
        } else {
            other.clone()
        };
        let key = *key;
        tokio::spawn(async move {
            let mut emitted = Vec::new();
            for _ in 0..25 {
                emitted.push(add_event(&db, key, "c").await.1);
            }
            emitted
        })
    });
    let mut expected: HashMap<String, Vec<Uuid>> = HashMap::new();
    for (key, writer) in keys.iter().zip(writers) {
        expected.insert(key.to_string(), writer.await.unwrap());
    }
    wait_for_empty_outbox(&s.db).await;
    stop_tx.send(true).unwrap();
    for relay in relays {
        relay.await.unwrap();
    }
    assert_eq!(s.published_by_key().await, expected);
}

/// PostgreSQL gives outbox ids at insert, the relay publishes in id order: a transaction that
/// writes events for a key another transaction has written events for and not yet committed must
/// wait for it, or it could commit first and have its later event published ahead. Emitted events
/// reach the outbox at commit, so the first transaction is held there: a third session locks the
/// outbox table, and the first's commit waits at its `INSERT`, after taking the key's lock.
async fn a_transaction_emitting_for_a_key_waits_for_an_earlier_one_to_commit(s: Setup) {
    let key = Uuid::now_v7();
    let waiting = |locktype: &'static str| {
        let db = s.db.clone();
        async move {
            query(
                "SELECT COUNT(*) FROM pg_locks WHERE locktype = $1 AND NOT granted
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .bind(locktype)
            .scalar::<i64>(&mut db.reader().await.unwrap())
            .await
            .unwrap()
        }
    };
    let until = |what: &'static str, locktype: &'static str| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while waiting(locktype).await != 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} never waited"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let mut blocker =
        s.db.begin(EventContext::request("items", "blocker"))
            .await
            .unwrap();
    query("LOCK TABLE outbox IN EXCLUSIVE MODE")
        .execute(blocker.conn())
        .await
        .unwrap();
    let mut first =
        s.db.begin(EventContext::request("items", "first"))
            .await
            .unwrap();
    first
        .emit(Event::ProductDeleted(ProductDeleted { product_id: key }))
        .unwrap();
    let first = tokio::spawn(first.commit());
    until("the first commit, at the locked table,", "relation").await;
    let db = s.db.clone();
    let second = tokio::spawn(async move { add_event(&db, key, "second").await });
    until("the second commit, at the first's key lock,", "advisory").await;
    assert!(!second.is_finished());
    blocker.commit().await.unwrap();
    first.await.unwrap().unwrap();
    second.await.unwrap();
    let relay = Relay::new(s.db.clone(), s.bus.clone(), 10);
    assert_eq!(relay.drain().await.unwrap(), 2);
    let order: Vec<String> = s
        .published()
        .await
        .into_iter()
        .map(|(_, e)| e.correlation_id)
        .collect();
    assert_eq!(order, ["first", "second"]);
}
