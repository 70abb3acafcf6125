//! The bus conformance suite against the embedded log, and what is particular to it: the
//! outboxes of the databases attached to it are its sources.

use std::{path::PathBuf, sync::Arc};

use async_trait::async_trait;
use emporium_events::{Event, ProductDeleted};
use emporium_platform::{
    bus::{
        BatchHandler, Delivery, EventBus, InfraError, OutboxLog, Record, SubscribeOptions,
        conformance,
    },
    storage::{Db, EventContext},
};
use uuid::Uuid;

struct Embedded {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Embedded {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        Embedded { _dir: dir, path }
    }
}

#[async_trait]
impl conformance::BusFactory for Embedded {
    async fn open(&self) -> Arc<dyn EventBus> {
        Arc::new(OutboxLog::open(&self.path, 4).await.unwrap())
    }
}

macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            conformance::$name(&Embedded::new()).await;
        }
    )*};
}

emporium_platform::bus_conformance_checks!(conformance_tests);

#[tokio::test]
async fn a_group_has_one_member_per_process() {
    let embedded = Embedded::new();
    let bus = conformance::BusFactory::open(&embedded).await;
    struct Nothing;
    #[async_trait]
    impl emporium_platform::bus::BatchHandler for Nothing {
        async fn handle(
            &self,
            _: &[emporium_platform::bus::Delivery],
        ) -> Result<(), emporium_platform::bus::InfraError> {
            Ok(())
        }
    }
    let options = emporium_platform::bus::SubscribeOptions {
        group: "g".into(),
        topics: vec!["t".into()],
        max_batch: 1,
    };
    let first = bus
        .subscribe(options.clone(), Arc::new(Nothing))
        .await
        .unwrap();
    let second = bus.subscribe(options.clone(), Arc::new(Nothing)).await;
    assert!(matches!(
        second,
        Err(emporium_platform::bus::BusError::GroupBusy(_))
    ));
    first.stop().await;
    let again = bus.subscribe(options, Arc::new(Nothing)).await;
    assert!(
        again.is_ok(),
        "the slot is free once the first member stopped"
    );
}

#[tokio::test]
async fn offsets_survive_reopening_the_log() {
    let embedded = Embedded::new();
    {
        let bus = conformance::BusFactory::open(&embedded).await;
        let records: Vec<_> = (0..10)
            .map(|i| emporium_platform::bus::Record {
                topic: "t".into(),
                key: "k".into(),
                payload: format!("{i}").into_bytes(),
                headers: Default::default(),
            })
            .collect();
        bus.publish(&records).await.unwrap();
    }
    let log = OutboxLog::open(&embedded.path, 4).await.unwrap();
    let partition = emporium_platform::bus::partition_for("k", 4);
    let read = log.read("t", partition, 0, 100).await.unwrap();
    assert_eq!(read.len(), 10);
    let last = read.last().unwrap().offset;
    log.publish(&[emporium_platform::bus::Record {
        topic: "t".into(),
        key: "k".into(),
        payload: b"10".to_vec(),
        headers: Default::default(),
    }])
    .await
    .unwrap();
    let read = log.read("t", partition, last + 1, 100).await.unwrap();
    assert_eq!(read.len(), 1, "offsets continue after a reopen");
    assert_eq!(read[0].offset, last + 1);
    assert_eq!(read[0].record.payload, b"10");
}

/// A caller that gives up on an append half way (its future dropped, as a timeout or a closed
/// connection does) must not leave the partition unable to take the next append, nor keep a
/// consumer from seeing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_append_does_not_wedge_its_partition() {
    let embedded = Embedded::new();
    let log = OutboxLog::open(&embedded.path, 1).await.unwrap();
    let record = |n: usize| emporium_platform::bus::Record {
        topic: "t".into(),
        key: "k".into(),
        payload: n.to_string().into_bytes(),
        headers: Default::default(),
    };
    for i in 0..200 {
        let log = log.clone();
        let append = tokio::spawn(async move { log.publish(&[record(i)]).await });
        // Give up at varying points: before, during or after the transaction.
        tokio::time::sleep(std::time::Duration::from_micros((i % 7 * 40) as u64)).await;
        append.abort();
    }
    log.publish(&[record(1000)])
        .await
        .expect("the next append works");
    let read = log.read("t", 0, 0, 10_000).await.unwrap();
    let offsets: Vec<u64> = read.iter().map(|d| d.offset).collect();
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "offsets increase: {offsets:?}"
    );
    assert_eq!(read.last().unwrap().record.payload, b"1000");
    let collector = Arc::new(Last::default());
    let subscription = log
        .subscribe(options("g", "t"), collector.clone())
        .await
        .unwrap();
    wait_for("the last record", || {
        collector.0.lock().unwrap().as_deref() == Some(b"1000".as_slice())
    })
    .await;
    subscription.stop().await;
}

/// Remembers the payload of the last record delivered.
#[derive(Default)]
struct Last(std::sync::Mutex<Option<Vec<u8>>>);

#[async_trait]
impl BatchHandler for Last {
    async fn handle(&self, batch: &[Delivery]) -> Result<(), InfraError> {
        if let Some(last) = batch.last() {
            *self.0.lock().unwrap() = Some(last.record.payload.clone());
        }
        Ok(())
    }
}

fn options(group: &str, topic: &str) -> SubscribeOptions {
    SubscribeOptions {
        group: group.into(),
        topics: vec![topic.into()],
        max_batch: 64,
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Consumers that keep up are served from memory: what they get must be exactly what the file holds.
#[tokio::test]
async fn reads_served_from_memory_match_the_file() {
    let embedded = Embedded::new();
    let log = OutboxLog::open(&embedded.path, 1).await.unwrap();
    for chunk in 0..30 {
        let records: Vec<_> = (0..10)
            .map(|i| emporium_platform::bus::Record {
                topic: "t".into(),
                key: "k".into(),
                payload: format!("{chunk}-{i}").into_bytes(),
                headers: [("n".to_owned(), format!("{chunk}"))].into(),
            })
            .collect();
        log.publish(&records).await.unwrap();
    }
    let from_file = OutboxLog::open(&embedded.path, 1).await.unwrap();
    for (from, limit) in [(1, 500), (40, 10), (100, 300), (250, 7), (300, 5), (301, 5)] {
        assert_eq!(
            log.read("t", 0, from, limit).await.unwrap(),
            from_file.read("t", 0, from, limit).await.unwrap(),
            "from {from}, limit {limit}"
        );
    }
}

/// A group's positions on many partitions are written together (in multi-row statements: 70 rows
/// are 64 + 4 + 2) and read back after a reopen: past every record, each partition's own and the
/// others'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_of_many_partitions_are_committed_together() {
    const PARTITIONS: u32 = 70;
    struct Count(tokio::sync::mpsc::UnboundedSender<u32>);
    #[async_trait]
    impl BatchHandler for Count {
        async fn handle(&self, batch: &[Delivery]) -> Result<(), InfraError> {
            for delivery in batch {
                self.0.send(delivery.partition).unwrap();
            }
            Ok(())
        }
    }
    let embedded = Embedded::new();
    {
        let log = OutboxLog::open(&embedded.path, PARTITIONS).await.unwrap();
        // A key for every partition, two records on each.
        let mut keys = std::collections::BTreeMap::new();
        for i in 0.. {
            let key = format!("k{i}");
            keys.entry(emporium_platform::bus::partition_for(&key, PARTITIONS))
                .or_insert(key);
            if keys.len() == PARTITIONS as usize {
                break;
            }
        }
        let records: Vec<Record> = keys
            .values()
            .flat_map(|key| [key.clone(), key.clone()])
            .map(|key| Record {
                topic: "t".into(),
                key,
                payload: b"x".to_vec(),
                headers: Default::default(),
            })
            .collect();
        log.publish(&records).await.unwrap();
        let (seen, mut delivered) = tokio::sync::mpsc::unbounded_channel();
        let options = SubscribeOptions {
            group: "g".into(),
            topics: vec!["t".into()],
            max_batch: 100,
        };
        let subscription = log.subscribe(options, Arc::new(Count(seen))).await.unwrap();
        for _ in 0..records.len() {
            delivered.recv().await.unwrap();
        }
        subscription.stop().await;
    }
    let log = OutboxLog::open(&embedded.path, PARTITIONS).await.unwrap();
    let lag = log.lag().await.unwrap();
    let committed: Vec<(u32, u64)> = lag
        .iter()
        .filter(|l| l.group == "g")
        .map(|l| (l.partition, l.committed))
        .collect();
    assert_eq!(
        committed,
        (0..PARTITIONS)
            .map(|p| (p, 2 * PARTITIONS as u64 + 1))
            .collect::<Vec<_>>()
    );
}

/// What a transaction of an attached database emits reaches consumers when it commits, and only
/// if it commits; the group's lag then drops to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attached_outbox_is_delivered_as_it_commits() {
    let embedded = Embedded::new();
    let log = OutboxLog::open(&embedded.path, 4).await.unwrap();
    let producer = Db::open_sqlite("producer", &embedded._dir.path().join("producer.db"))
        .await
        .unwrap();
    log.attach(&producer).await.unwrap();
    assert!(producer.is_outbox_log());
    assert!(
        log.attach(&producer).await.is_err(),
        "a source is attached once"
    );
    let collector = Arc::new(Collected::default());
    let subscription = log
        .subscribe(options("g", "product-events"), collector.clone())
        .await
        .unwrap();

    let emit = |id: u128, commit: bool| {
        let producer = producer.clone();
        async move {
            let mut tx = producer
                .begin(EventContext::request("producer", "c-1"))
                .await
                .unwrap();
            tx.emit(Event::ProductDeleted(ProductDeleted {
                product_id: Uuid::from_u128(id),
            }))
            .unwrap();
            if commit {
                tx.commit().await.unwrap();
            }
        }
    };
    emit(1, true).await;
    emit(2, false).await;
    emit(3, true).await;
    wait_for("two events", || collector.keys().len() >= 2).await;
    wait_for_zero_lag(&log, "g").await;
    subscription.stop().await;
    assert_eq!(
        collector.keys(),
        [Uuid::from_u128(1), Uuid::from_u128(3)].map(|id| id.to_string()),
        "the rolled-back event never arrives"
    );
    assert_eq!(
        producer.outbox_backlog().await.unwrap(),
        0,
        "nothing waits for a relay"
    );
}

/// A consumer that starts after many commits, more than are kept in memory, reads them from the
/// producer's table, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_consumer_reads_the_producers_table() {
    let embedded = Embedded::new();
    let producer_path = embedded._dir.path().join("producer.db");
    {
        let log = OutboxLog::open(&embedded.path, 4).await.unwrap();
        let producer = Db::open_sqlite("producer", &producer_path).await.unwrap();
        log.attach(&producer).await.unwrap();
        for id in 0..1500u128 {
            let mut tx = producer
                .begin(EventContext::request("producer", "c-1"))
                .await
                .unwrap();
            tx.emit(Event::ProductDeleted(ProductDeleted {
                product_id: Uuid::from_u128(id % 3),
            }))
            .unwrap();
            tx.commit().await.unwrap();
        }
    }
    let log = OutboxLog::open(&embedded.path, 4).await.unwrap();
    let producer = Db::open_sqlite("producer", &producer_path).await.unwrap();
    log.attach(&producer).await.unwrap();
    let collector = Arc::new(Collected::default());
    let subscription = log
        .subscribe(options("late", "product-events"), collector.clone())
        .await
        .unwrap();
    wait_for("1500 events", || collector.keys().len() >= 1500).await;
    subscription.stop().await;
    let offsets = collector.offsets();
    for key in 0..3u128 {
        let key = Uuid::from_u128(key).to_string();
        let mine: Vec<u64> = offsets
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, offset)| *offset)
            .collect();
        assert_eq!(mine.len(), 500);
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "order of key {key}");
    }
}

async fn wait_for_zero_lag(log: &OutboxLog, group: &str) {
    for _ in 0..3000 {
        let lags = log.lag().await.unwrap();
        let mine: Vec<_> = lags.iter().filter(|l| l.group == group).collect();
        if !mine.is_empty() && mine.iter().all(|l| l.lag() == 0) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the lag of {group} never reached zero");
}

/// Keys and offsets of what was delivered, in delivery order.
#[derive(Default)]
struct Collected(std::sync::Mutex<Vec<(String, u64)>>);

impl Collected {
    fn keys(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn offsets(&self) -> Vec<(String, u64)> {
        self.0.lock().unwrap().clone()
    }
}

#[async_trait]
impl BatchHandler for Collected {
    async fn handle(&self, batch: &[Delivery]) -> Result<(), InfraError> {
        self.0
            .lock()
            .unwrap()
            .extend(batch.iter().map(|d| (d.record.key.clone(), d.offset)));
        Ok(())
    }
}
