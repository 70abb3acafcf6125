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

conformance_tests!(
    per_key_order_is_kept,
    every_group_sees_every_record,
    a_restarted_consumer_resumes_from_its_committed_offset,
    nothing_is_lost_with_concurrent_producers,
    infrastructure_errors_redeliver_without_dead_lettering,
    a_failing_event_is_dead_lettered_and_can_be_replayed,
    an_event_delivered_twice_takes_effect_once,
);

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
