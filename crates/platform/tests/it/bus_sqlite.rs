//! The bus conformance suite against the embedded SQLite log.

use std::{path::PathBuf, sync::Arc};

use async_trait::async_trait;
use emporium_platform::bus::{EventBus, SqliteEventLog, conformance};

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
        Arc::new(SqliteEventLog::open(&self.path, 4).await.unwrap())
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
    let log = SqliteEventLog::open(&embedded.path, 4).await.unwrap();
    let partition = emporium_platform::bus::partition_for("k", 4);
    let read = log.read("t", partition, 0, 100).await.unwrap();
    assert_eq!(read.len(), 10);
    assert_eq!(read.last().unwrap().offset, 9);
    log.publish(&[emporium_platform::bus::Record {
        topic: "t".into(),
        key: "k".into(),
        payload: b"10".to_vec(),
        headers: Default::default(),
    }])
    .await
    .unwrap();
    let read = log.read("t", partition, 10, 100).await.unwrap();
    assert_eq!(read.len(), 1, "offsets continue after a reopen");
    assert_eq!(read[0].offset, 10);
    assert_eq!(read[0].record.payload, b"10");
}

/// A caller that gives up on an append half way (its future dropped, as a timeout or a closed
/// connection does) must not leave the partition unable to take the next append.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_append_does_not_wedge_its_partition() {
    let embedded = Embedded::new();
    let log = SqliteEventLog::open(&embedded.path, 1).await.unwrap();
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
    assert_eq!(
        offsets,
        (0..read.len() as u64).collect::<Vec<_>>(),
        "offsets stay dense"
    );
    assert_eq!(read.last().unwrap().record.payload, b"1000");
}

/// Consumers that keep up are served from memory: what they get must be exactly what the file holds.
#[tokio::test]
async fn reads_served_from_memory_match_the_file() {
    let embedded = Embedded::new();
    let log = SqliteEventLog::open(&embedded.path, 1).await.unwrap();
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
    let from_file = SqliteEventLog::open(&embedded.path, 1).await.unwrap();
    for (from, limit) in [(0, 500), (40, 10), (100, 300), (250, 7), (299, 5), (300, 5)] {
        assert_eq!(
            log.read("t", 0, from, limit).await.unwrap(),
            from_file.read("t", 0, from, limit).await.unwrap(),
            "from {from}, limit {limit}"
        );
    }
}

/// A group's offsets on many partitions are written together (in multi-row statements: 70 rows
/// are 64 + 4 + 2) and read back after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_of_many_partitions_are_committed_together() {
    use emporium_platform::bus::{BatchHandler, Delivery, InfraError, Record, SubscribeOptions};
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
        let log = SqliteEventLog::open(&embedded.path, PARTITIONS)
            .await
            .unwrap();
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
    let log = SqliteEventLog::open(&embedded.path, PARTITIONS)
        .await
        .unwrap();
    let lag = log.lag().await.unwrap();
    let committed: Vec<(u32, u64)> = lag
        .iter()
        .filter(|l| l.group == "g")
        .map(|l| (l.partition, l.committed))
        .collect();
    assert_eq!(
        committed,
        (0..PARTITIONS).map(|p| (p, 2)).collect::<Vec<_>>()
    );
}
