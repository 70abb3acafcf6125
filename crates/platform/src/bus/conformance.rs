//! The bus port's conformance suite: one set of checks that every [`EventBus`] adapter must pass.
//!
//! Each check is a `pub async fn` taking a [`BusFactory`]; an adapter's tests call every one of them
//! (see `tests/it/bus_sqlite.rs` in this crate). Topic and group names are unique per call, so the
//! checks can share one broker. Waits poll a condition with a generous deadline: they end as soon as
//! the condition holds and fail with what was seen when it never does.

// A test suite: failing loudly is its job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use emporium_events::{Envelope, Event};
use uuid::Uuid;

use super::{
    BatchHandler, Delivery, EventBus, InfraError, Record, SubscribeOptions, Subscription,
    consumer::{Consumer, EventHandler, HandlerError, RetryPolicy},
    dlq::{self, DeadLetterStore},
};
use crate::storage::{Db, Migration, Tx};

/// Applies the macro `$apply` to the name of every check of the suite, so that each adapter's tests
/// run the whole list, and a new check reaches every adapter:
/// `emporium_platform::bus_conformance_checks!(my_tests);`.
#[macro_export]
macro_rules! bus_conformance_checks {
    ($apply:ident) => {
        $apply!(
            per_key_order_is_kept,
            every_group_sees_every_record,
            a_restarted_consumer_resumes_from_its_committed_offset,
            nothing_is_lost_with_concurrent_producers,
            a_failed_batch_is_delivered_again,
            handler_outages_and_panics_are_retried_not_dead_lettered,
            an_undecodable_record_is_dead_lettered_at_once,
            a_failing_event_is_dead_lettered_and_can_be_replayed,
            an_event_delivered_twice_takes_effect_once,
            a_failing_event_holds_back_no_other_partition,
            events_a_handler_does_not_handle_are_passed_over,
        );
    };
}

/// Opens clients of the bus under test. Every call must reach the same underlying log, so that a
/// second client sees what the first wrote (that is how a restart is simulated).
#[async_trait]
pub trait BusFactory: Send + Sync {
    async fn open(&self) -> Arc<dyn EventBus>;
}

const DEADLINE: Duration = Duration::from_secs(30);

fn unique(name: &str) -> String {
    format!("conformance-{name}-{}", Uuid::now_v7().simple())
}

fn record(topic: &str, key: &str, body: &str) -> Record {
    Record {
        topic: topic.to_owned(),
        key: key.to_owned(),
        payload: body.as_bytes().to_vec(),
        headers: BTreeMap::from([("test".to_owned(), body.to_owned())]),
    }
}

/// Collects every delivery it is handed.
#[derive(Default)]
struct Collector {
    seen: Mutex<Vec<Delivery>>,
}

impl Collector {
    fn bodies(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|d| String::from_utf8_lossy(&d.record.payload).into_owned())
            .collect()
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait]
impl BatchHandler for Collector {
    async fn handle(&self, batch: &[Delivery]) -> Result<(), InfraError> {
        self.seen.lock().unwrap().extend_from_slice(batch);
        Ok(())
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn subscribe(
    bus: &Arc<dyn EventBus>,
    group: &str,
    topic: &str,
    handler: Arc<dyn BatchHandler>,
) -> Subscription {
    bus.subscribe(
        SubscribeOptions {
            group: group.to_owned(),
            topics: vec![topic.to_owned()],
            max_batch: 16,
        },
        handler,
    )
    .await
    .expect("subscribe")
}

/// Records with one key arrive in the order they were published, whatever the batch sizes.
pub async fn per_key_order_is_kept(factory: &dyn BusFactory) {
    let bus = factory.open().await;
    let topic = unique("order");
    let keys = ["alpha", "bravo", "charlie", "delta"];
    let mut pending = Vec::new();
    for i in 0..50 {
        for key in keys {
            pending.push(record(&topic, key, &format!("{key}:{i}")));
        }
    }
    // Publish in uneven batches: 1, 2, 3, ... records per call.
    let mut size = 1;
    let mut rest = pending.as_slice();
    while !rest.is_empty() {
        let (now, later) = rest.split_at(size.min(rest.len()));
        bus.publish(now).await.expect("publish");
        rest = later;
        size = size % 7 + 1;
    }
    let collector = Arc::new(Collector::default());
    let sub = subscribe(&bus, &unique("g"), &topic, collector.clone()).await;
    wait_until("all 200 records arrive", || collector.bodies().len() >= 200).await;
    sub.stop().await;

    let deliveries = collector.deliveries();
    for key in keys {
        let sequence: Vec<u32> = deliveries
            .iter()
            .filter(|d| d.record.key == key)
            .map(|d| {
                let body = String::from_utf8_lossy(&d.record.payload).into_owned();
                body.rsplit(':').next().unwrap().parse().unwrap()
            })
            .collect();
        assert_eq!(sequence, (0..50).collect::<Vec<_>>(), "order of key {key}");
        let partitions: HashSet<u32> = deliveries
            .iter()
            .filter(|d| d.record.key == key)
            .map(|d| d.partition)
            .collect();
        assert_eq!(
            partitions.len(),
            1,
            "key {key} spread over partitions {partitions:?}"
        );
    }
    let first = &deliveries[0];
    assert_eq!(
        first.record.header("test"),
        Some(String::from_utf8_lossy(&first.record.payload).as_ref()),
        "headers travel with the record"
    );
}

/// A second group sees every record the first one does.
pub async fn every_group_sees_every_record(factory: &dyn BusFactory) {
    let bus = factory.open().await;
    let topic = unique("groups");
    let records: Vec<Record> = (0..100)
        .map(|i| record(&topic, &format!("k{}", i % 13), &format!("r{i}")))
        .collect();
    bus.publish(&records).await.expect("publish");
    let first = Arc::new(Collector::default());
    let second = Arc::new(Collector::default());
    let a = subscribe(&bus, &unique("first"), &topic, first.clone()).await;
    let b = subscribe(&bus, &unique("second"), &topic, second.clone()).await;
    wait_until("both groups have 100 records", || {
        first.bodies().len() >= 100 && second.bodies().len() >= 100
    })
    .await;
    a.stop().await;
    b.stop().await;
    let expected: HashSet<String> = (0..100).map(|i| format!("r{i}")).collect();
    assert_eq!(first.bodies().into_iter().collect::<HashSet<_>>(), expected);
    assert_eq!(
        second.bodies().into_iter().collect::<HashSet<_>>(),
        expected
    );
}

/// A consumer that stops and comes back (with a new client) resumes after its committed offset.
pub async fn a_restarted_consumer_resumes_from_its_committed_offset(factory: &dyn BusFactory) {
    let topic = unique("resume");
    let group = unique("g");
    {
        let bus = factory.open().await;
        let records: Vec<Record> = (0..30)
            .map(|i| record(&topic, &format!("k{}", i % 5), &format!("old{i}")))
            .collect();
        bus.publish(&records).await.expect("publish");
        let collector = Arc::new(Collector::default());
        let sub = subscribe(&bus, &group, &topic, collector.clone()).await;
        wait_until("the first 30 arrive", || collector.bodies().len() >= 30).await;
        sub.stop().await;
    }
    let bus = factory.open().await;
    let records: Vec<Record> = (0..20)
        .map(|i| record(&topic, &format!("k{}", i % 5), &format!("new{i}")))
        .collect();
    bus.publish(&records).await.expect("publish");
    let collector = Arc::new(Collector::default());
    let sub = subscribe(&bus, &group, &topic, collector.clone()).await;
    wait_until("the 20 new records arrive", || {
        collector
            .bodies()
            .iter()
            .filter(|b| b.starts_with("new"))
            .count()
            >= 20
    })
    .await;
    sub.stop().await;
    // Within a partition, a redelivered old record would have come before the new ones.
    let old: Vec<String> = collector
        .bodies()
        .into_iter()
        .filter(|b| b.starts_with("old"))
        .collect();
    assert!(old.is_empty(), "committed records delivered again: {old:?}");
    let lag: u64 = bus
        .lag()
        .await
        .expect("lag")
        .iter()
        .filter(|l| l.group == group)
        .map(|l| l.lag())
        .sum();
    assert_eq!(lag, 0, "the group has committed everything");
}

/// Several producers at once: every record arrives, and each producer's key keeps its order.
pub async fn nothing_is_lost_with_concurrent_producers(factory: &dyn BusFactory) {
    let bus = factory.open().await;
    let topic = unique("producers");
    let collector = Arc::new(Collector::default());
    let sub = subscribe(&bus, &unique("g"), &topic, collector.clone()).await;
    let mut producers = tokio::task::JoinSet::new();
    for p in 0..8 {
        let bus = bus.clone();
        let topic = topic.clone();
        producers.spawn(async move {
            let mut i = 0;
            let mut size = p % 5 + 1;
            while i < 100 {
                let batch: Vec<Record> = (i..(i + size).min(100))
                    .map(|n| record(&topic, &format!("producer{p}"), &format!("{p}:{n}")))
                    .collect();
                i += batch.len();
                bus.publish(&batch).await.expect("publish");
                size = size % 9 + 1;
            }
        });
    }
    while let Some(joined) = producers.join_next().await {
        joined.expect("producer task");
    }
    wait_until("800 records arrive", || collector.bodies().len() >= 800).await;
    sub.stop().await;
    let bodies = collector.bodies();
    let unique_bodies: HashSet<&String> = bodies.iter().collect();
    assert_eq!(unique_bodies.len(), 800, "lost or duplicated records");
    for p in 0..8 {
        let sequence: Vec<usize> = bodies
            .iter()
            .filter_map(|b| b.strip_prefix(&format!("{p}:")))
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(
            sequence,
            (0..100).collect::<Vec<_>>(),
            "order of producer {p}"
        );
    }
}

/// A batch whose handler reports infrastructure trouble, or panics, is delivered again.
pub async fn a_failed_batch_is_delivered_again(factory: &dyn BusFactory) {
    struct Flaky {
        calls: Mutex<u32>,
        inner: Collector,
    }
    #[async_trait]
    impl BatchHandler for Flaky {
        async fn handle(&self, batch: &[Delivery]) -> Result<(), InfraError> {
            let call = {
                let mut calls = self.calls.lock().unwrap();
                *calls += 1;
                *calls
            };
            match call {
                1 => Err(InfraError("database is down".into())),
                2 => panic!("a bug in the handler"),
                _ => self.inner.handle(batch).await,
            }
        }
    }
    let bus = factory.open().await;
    let topic = unique("infra");
    bus.publish(&[record(&topic, "k", "first")])
        .await
        .expect("publish");
    let flaky = Arc::new(Flaky {
        calls: Mutex::new(0),
        inner: Collector::default(),
    });
    let sub = subscribe(&bus, &unique("g"), &topic, flaky.clone()).await;
    wait_until("the record is handled after an error and a panic", || {
        !flaky.inner.bodies().is_empty()
    })
    .await;
    // The partition lives on after the panic: a later record arrives too.
    bus.publish(&[record(&topic, "k", "second")])
        .await
        .expect("publish");
    wait_until("the next record arrives", || {
        flaky.inner.bodies().len() >= 2
    })
    .await;
    sub.stop().await;
    assert_eq!(
        flaky.inner.bodies(),
        vec!["first".to_owned(), "second".to_owned()]
    );
    assert_eq!(
        *flaky.calls.lock().unwrap(),
        4,
        "error, panic, first, second"
    );
}

/// A service-like handler on a temporary SQLite database: records each applied event, fails on
/// events whose product id is in `poison` while `healed` is false.
struct Ledger {
    poison: Uuid,
    healed: Arc<Mutex<bool>>,
    attempts: Arc<Mutex<HashMap<Uuid, u32>>>,
    /// Fail this many calls (any event) with an infrastructure error first.
    outages: Arc<Mutex<u32>>,
    /// Panic on the first attempt at this product.
    panics_once: Uuid,
    /// What [`EventHandler::event_types`] answers.
    event_types: Option<&'static [&'static str]>,
    /// Every event type `handle` was called with.
    seen: Arc<Mutex<Vec<&'static str>>>,
}

impl Ledger {
    fn new(poison: Uuid) -> Self {
        Ledger {
            poison,
            healed: Arc::new(Mutex::new(false)),
            attempts: Arc::default(),
            outages: Arc::default(),
            panics_once: Uuid::nil(),
            event_types: None,
            seen: Arc::default(),
        }
    }
}

/// A temporary service database with the ledger's table; it lives as long as the directory.
async fn ledger_db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_sqlite("conformance", &dir.path().join("svc.db"))
        .await
        .unwrap();
    db.migrate(LEDGER).await.unwrap();
    (dir, db)
}

/// Starts a new consumer group applying `ledger` to `topic` in `db`: the group's name and its
/// running subscription.
async fn consume_into_ledger(
    db: &Db,
    bus: &Arc<dyn EventBus>,
    topic: &str,
    ledger: Ledger,
) -> (String, Subscription) {
    let group = unique("g");
    let sub = Consumer::new(
        "conformance",
        group.clone(),
        db.clone(),
        bus.clone(),
        ledger,
        RETRY,
    )
    .spawn(&[topic], 16)
    .await
    .unwrap();
    (group, sub)
}

const LEDGER: &[Migration] = &[Migration::portable(
    100,
    "ledger",
    "CREATE TABLE ledger (event_id TEXT NOT NULL, product_id TEXT NOT NULL)",
)];

#[async_trait]
impl EventHandler for Ledger {
    fn event_types(&self) -> Option<&'static [&'static str]> {
        self.event_types
    }

    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> Result<(), HandlerError> {
        self.seen.lock().unwrap().push(event.event.event_type());
        let Event::ProductDeleted(deleted) = &event.event else {
            return Ok(());
        };
        *self
            .attempts
            .lock()
            .unwrap()
            .entry(deleted.product_id)
            .or_default() += 1;
        if deleted.product_id == self.poison && !*self.healed.lock().unwrap() {
            return Err(HandlerError::Failed("poison event".into()));
        }
        crate::storage::query("INSERT INTO ledger (event_id, product_id) VALUES ($1, $2)")
            .bind(event.event_id)
            .bind(deleted.product_id)
            .execute(tx.conn())
            .await?;
        Ok(())
    }
}

async fn ledger_rows(db: &Db) -> Vec<String> {
    crate::storage::query("SELECT product_id FROM ledger ORDER BY rowid")
        .scalars(&mut db.reader().await.unwrap())
        .await
        .unwrap()
}

fn deletion(topic: &str, key: &str, product: Uuid) -> (Envelope, Record) {
    let envelope = Envelope::new(
        "conformance",
        "corr-1",
        None,
        Event::ProductDeleted(emporium_events::ProductDeleted {
            product_id: product,
        }),
    );
    let mut record = Record::from_envelope(&envelope).unwrap();
    record.topic = topic.to_owned();
    record.key = key.to_owned();
    (envelope, record)
}

const RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    backoff: Duration::from_millis(5),
    backoff_max: Duration::from_millis(20),
};

/// A failing event reaches `<topic>.dlq` after the configured attempts, the partition moves on, and
/// replaying it from the dead-letter store applies it once the handler is fixed.
pub async fn a_failing_event_is_dead_lettered_and_can_be_replayed(factory: &dyn BusFactory) {
    let (dir, db) = ledger_db().await;
    let ops = Db::open_sqlite("ops", &dir.path().join("ops.db"))
        .await
        .unwrap();
    ops.migrate(dlq::MIGRATIONS).await.unwrap();

    let bus = factory.open().await;
    let topic = unique("poison");
    let (before, poison, after) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let records: Vec<Record> = [before, poison, after]
        .iter()
        .map(|p| deletion(&topic, "same-key", *p).1)
        .collect();
    bus.publish(&records).await.unwrap();

    let ledger = Ledger::new(poison);
    let (healed, attempts) = (ledger.healed.clone(), ledger.attempts.clone());
    let (_group, sub) = consume_into_ledger(&db, &bus, &topic, ledger).await;
    let store = DeadLetterStore::new(ops.clone(), bus.clone());
    let collecting = store.collect(std::slice::from_ref(&topic)).await.unwrap();

    let mut rows = Vec::new();
    for _ in 0..3000 {
        rows = ledger_rows(&db).await;
        if rows.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        rows,
        vec![before.to_string(), after.to_string()],
        "the partition moved on past the poison"
    );
    assert_eq!(
        attempts.lock().unwrap()[&poison],
        RETRY.max_attempts,
        "attempted exactly max_attempts times"
    );

    // The dead letter reaches the store through its own group, which may lag behind the consumer.
    let mut letters = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while letters.is_empty() && tokio::time::Instant::now() < deadline {
        letters = store.list(10).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(letters.len(), 1, "one dead letter");
    let letter = &letters[0];
    assert_eq!(letter.topic, topic);
    assert_eq!(letter.attempts, RETRY.max_attempts);
    assert_eq!(letter.event_type.as_deref(), Some("ProductDeleted"));
    assert!(letter.error.contains("poison event"), "{}", letter.error);
    assert_eq!(store.pending().await.unwrap(), 1);

    *healed.lock().unwrap() = true;
    store.replay(&letter.id).await.unwrap();
    for _ in 0..3000 {
        rows = ledger_rows(&db).await;
        if rows.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        rows,
        vec![before.to_string(), after.to_string(), poison.to_string()],
        "the replayed event is applied once"
    );
    assert_eq!(
        store.pending().await.unwrap(),
        0,
        "a replayed letter is no longer pending"
    );
    sub.stop().await;
    collecting.stop().await;
}

/// The same event delivered twice (published twice) takes effect once, through the inbox.
pub async fn an_event_delivered_twice_takes_effect_once(factory: &dyn BusFactory) {
    let (_dir, db) = ledger_db().await;
    let bus = factory.open().await;
    let topic = unique("twice");
    let (envelope, record) = deletion(&topic, "k", Uuid::now_v7());
    let (other, other_record) = deletion(&topic, "k", Uuid::now_v7());
    // Twice in one batch and once more on its own, then a different event as a marker.
    bus.publish(&[record.clone(), record.clone()])
        .await
        .unwrap();
    bus.publish(&[record, other_record]).await.unwrap();
    let (group, sub) = consume_into_ledger(&db, &bus, &topic, Ledger::new(Uuid::nil())).await;
    wait_until_rows(&db, 2).await;
    wait_for_lag_zero(&bus, &group).await;
    sub.stop().await;
    let ids: Vec<String> = crate::storage::query("SELECT event_id FROM ledger ORDER BY rowid")
        .scalars(&mut db.reader().await.unwrap())
        .await
        .unwrap();
    assert_eq!(
        ids,
        vec![envelope.event_id.to_string(), other.event_id.to_string()]
    );
    assert!(db.inbox_contains(&group, envelope.event_id).await.unwrap());
}

/// A handler that names the event types it handles gets only those: the others of its topic are
/// passed over, never decoded, never recorded in the inbox, and still count as consumed.
pub async fn events_a_handler_does_not_handle_are_passed_over(factory: &dyn BusFactory) {
    let (_dir, db) = ledger_db().await;
    let bus = factory.open().await;
    let topic = unique("types");
    let created = Envelope::new(
        "conformance",
        "corr-1",
        None,
        Event::ProductCreated(emporium_events::ProductCreated {
            product_id: Uuid::now_v7(),
            name: "Lamp".into(),
            description: None,
            category: "home".into(),
            price: emporium_events::Money::new(100, "USD"),
            initial_stock: 1,
        }),
    );
    let mut created_record = Record::from_envelope(&created).unwrap();
    created_record.topic = topic.clone();
    created_record.key = "k".into();
    let (deleted, deleted_record) = deletion(&topic, "k", Uuid::now_v7());
    bus.publish(&[created_record, deleted_record])
        .await
        .unwrap();
    let mut ledger = Ledger::new(Uuid::nil());
    ledger.event_types = Some(&["ProductDeleted"]);
    let seen = ledger.seen.clone();
    let (group, sub) = consume_into_ledger(&db, &bus, &topic, ledger).await;
    wait_until_rows(&db, 1).await;
    wait_for_lag_zero(&bus, &group).await;
    sub.stop().await;
    assert_eq!(*seen.lock().unwrap(), ["ProductDeleted"]);
    assert!(db.inbox_contains(&group, deleted.event_id).await.unwrap());
    assert!(!db.inbox_contains(&group, created.event_id).await.unwrap());
}

/// Batches of many partitions ready at once are applied together (group commit); one failing event
/// among them costs only itself: every other event takes effect once, in per-key order, and the
/// failing one is attempted `max_attempts` times, as if each partition were alone.
pub async fn a_failing_event_holds_back_no_other_partition(factory: &dyn BusFactory) {
    let (_dir, db) = ledger_db().await;
    let bus = factory.open().await;
    let topic = unique("together");
    // 16 keys (spread over the partitions) with 5 events each, in one publish so that every
    // partition has a batch ready at the same moment; the poison sits in the middle of one key.
    let mut published: Vec<(String, Uuid)> = Vec::new();
    let mut records = Vec::new();
    for _round in 0..5 {
        for key in 0..16 {
            let (key, product) = (format!("key-{key}"), Uuid::now_v7());
            records.push(deletion(&topic, &key, product).1);
            published.push((key, product));
        }
    }
    let poison = published[2 * 16 + 3].1;
    bus.publish(&records).await.unwrap();
    let ledger = Ledger::new(poison);
    let attempts = ledger.attempts.clone();
    let (group, sub) = consume_into_ledger(&db, &bus, &topic, ledger).await;
    wait_until_rows(&db, published.len() - 1).await;
    wait_for_lag_zero(&bus, &group).await;
    sub.stop().await;

    let rows = ledger_rows(&db).await;
    let applied: Vec<String> = published
        .iter()
        .filter(|(_, product)| *product != poison)
        .map(|(_, product)| product.to_string())
        .collect();
    let mut sorted_rows = rows.clone();
    sorted_rows.sort();
    let mut sorted_applied = applied.clone();
    sorted_applied.sort();
    assert_eq!(sorted_rows, sorted_applied, "every other event, once");
    for key in 0..16 {
        let key = format!("key-{key}");
        let of_key = |product: &String| {
            published
                .iter()
                .any(|(k, p)| *k == key && p.to_string() == *product)
        };
        let seen: Vec<&String> = rows.iter().filter(|p| of_key(p)).collect();
        let expected: Vec<&String> = applied.iter().filter(|p| of_key(p)).collect();
        assert_eq!(seen, expected, "events of {key} in their order");
    }
    assert_eq!(
        attempts.lock().unwrap()[&poison],
        RETRY.max_attempts,
        "the failing event attempted exactly max_attempts times"
    );
}

async fn wait_until_rows(db: &Db, n: usize) {
    for _ in 0..3000 {
        if ledger_rows(db).await.len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "timed out waiting for {n} ledger rows: {:?}",
        ledger_rows(db).await
    );
}

/// Waits until `group` has committed everything on every partition it consumes.
async fn wait_for_lag_zero(bus: &Arc<dyn EventBus>, group: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let lags = bus.lag().await.unwrap();
        let mine: Vec<_> = lags.iter().filter(|l| l.group == group).collect();
        if !mine.is_empty() && mine.iter().all(|l| l.lag() == 0) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "group {group} still lags: {mine:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads every record of a topic (all partitions) with a throwaway group, until lag is zero.
async fn read_all(bus: &Arc<dyn EventBus>, topic: &str) -> Vec<Delivery> {
    let collector = Arc::new(Collector::default());
    let group = unique("reader");
    let sub = subscribe(bus, &group, topic, collector.clone()).await;
    wait_for_lag_zero(bus, &group).await;
    sub.stop().await;
    collector.deliveries()
}

/// An infrastructure error in a handler pauses and redelivers; a panic is a failure that is
/// retried; neither dead-letters anything, and every event takes effect once.
pub async fn handler_outages_and_panics_are_retried_not_dead_lettered(factory: &dyn BusFactory) {
    let (_dir, db) = ledger_db().await;
    let bus = factory.open().await;
    let topic = unique("outage");
    let products: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    let records: Vec<Record> = products
        .iter()
        .map(|p| deletion(&topic, "k", *p).1)
        .collect();
    bus.publish(&records).await.unwrap();
    let mut ledger = Ledger::new(Uuid::nil());
    *ledger.outages.lock().unwrap() = 3;
    ledger.panics_once = products[2];
    let (group, sub) = consume_into_ledger(&db, &bus, &topic, ledger).await;
    wait_until_rows(&db, 5).await;
    wait_for_lag_zero(&bus, &group).await;
    sub.stop().await;
    let expected: Vec<String> = products.iter().map(Uuid::to_string).collect();
    assert_eq!(
        ledger_rows(&db).await,
        expected,
        "all applied, once, in order"
    );
    // The DLQ topic may never have been created; a marker makes "nothing else there" checkable.
    let dlq_topic = format!("{topic}{}", dlq::DLQ_SUFFIX);
    bus.publish(&[record(&dlq_topic, "k", "marker")])
        .await
        .unwrap();
    let dead = read_all(&bus, &dlq_topic).await;
    assert_eq!(dead.len(), 1, "nothing but the marker on the DLQ: {dead:?}");
}

/// A record that is not an event goes to the dead-letter topic at once, and the next one is applied.
pub async fn an_undecodable_record_is_dead_lettered_at_once(factory: &dyn BusFactory) {
    let (_dir, db) = ledger_db().await;
    let bus = factory.open().await;
    let topic = unique("garbage");
    let product = Uuid::now_v7();
    bus.publish(&[
        record(&topic, "k", "not json at all"),
        deletion(&topic, "k", product).1,
    ])
    .await
    .unwrap();
    let ledger = Ledger::new(Uuid::nil());
    let attempts = ledger.attempts.clone();
    let (group, sub) = consume_into_ledger(&db, &bus, &topic, ledger).await;
    wait_until_rows(&db, 1).await;
    wait_for_lag_zero(&bus, &group).await;
    sub.stop().await;
    assert_eq!(ledger_rows(&db).await, vec![product.to_string()]);
    assert_eq!(
        attempts.lock().unwrap().len(),
        1,
        "the handler never saw the garbage"
    );
    let dead = read_all(&bus, &format!("{topic}{}", dlq::DLQ_SUFFIX)).await;
    assert_eq!(dead.len(), 1);
    let letter: dlq::DeadLetter = serde_json::from_slice(&dead[0].record.payload).unwrap();
    assert_eq!(letter.attempts, 1);
    assert_eq!(letter.group, group);
    assert!(letter.error.contains("cannot decode"), "{}", letter.error);
    assert_eq!(
        letter.envelope,
        serde_json::Value::String("not json at all".into())
    );
    assert_eq!(
        letter.original().payload,
        b"not json at all",
        "the original travels whole"
    );
}
