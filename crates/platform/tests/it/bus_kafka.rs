//! The bus conformance suite against a real Kafka-API broker at `EMPORIUM_TEST_KAFKA_BROKERS`
//! (`scripts/dev-services` starts tansu on 127.0.0.1:9092). Without the variable every test says it
//! is skipped and passes; `.ci/run` sets it, so CI always runs them.

use std::sync::Arc;

use async_trait::async_trait;
use emporium_platform::bus::{
    BatchHandler, Delivery, EventBus, InfraError, KafkaEventLog, KafkaOptions, Record,
    SubscribeOptions, conformance, headers, kafka::TRACEPARENT, partition_for,
};

const BROKERS: &str = "EMPORIUM_TEST_KAFKA_BROKERS";

struct Kafka {
    brokers: String,
}

impl Kafka {
    /// The broker under test, or `None` (and a note on stderr) when none is configured.
    fn from_env(test: &str) -> Option<Kafka> {
        match std::env::var(BROKERS) {
            Ok(brokers) if !brokers.trim().is_empty() => Some(Kafka { brokers }),
            _ => {
                eprintln!(
                    "skipped {test}: {BROKERS} is not set (run scripts/dev-services for a local broker)"
                );
                None
            }
        }
    }
}

#[async_trait]
impl conformance::BusFactory for Kafka {
    async fn open(&self) -> Arc<dyn EventBus> {
        Arc::new(KafkaEventLog::connect(&self.brokers, 4).await.unwrap())
    }
}

macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(kafka) = Kafka::from_env(stringify!($name)) else { return };
            conformance::$name(&kafka).await;
        }
    )*};
}

emporium_platform::bus_conformance_checks!(conformance_tests);

/// The same suite on a namespaced client: every topic and group gets a prefix on the cluster, and
/// the port's users must not notice.
mod namespaced {
    use super::*;

    struct Namespaced(Kafka);

    #[async_trait]
    impl conformance::BusFactory for Namespaced {
        async fn open(&self) -> Arc<dyn EventBus> {
            Arc::new(
                KafkaEventLog::connect_with(namespaced(&self.0.brokers, "conformance"))
                    .await
                    .unwrap(),
            )
        }
    }

    macro_rules! namespaced_conformance_tests {
        ($($name:ident),* $(,)?) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(kafka) = Kafka::from_env(stringify!($name)) else { return };
                conformance::$name(&Namespaced(kafka)).await;
            }
        )*};
    }

    emporium_platform::bus_conformance_checks!(namespaced_conformance_tests);
}

fn namespaced(brokers: &str, namespace: &str) -> KafkaOptions {
    KafkaOptions {
        namespace: namespace.to_owned(),
        ..KafkaOptions::new(brokers, 4)
    }
}

/// Two namespaces on one cluster do not see each other's events; on the cluster, the topic is
/// `<namespace>.<topic>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_keep_environments_apart_on_one_cluster() {
    let Some(kafka) = Kafka::from_env("namespaces_keep_environments_apart_on_one_cluster") else {
        return;
    };
    let run = uuid::Uuid::now_v7().simple().to_string();
    let blue = KafkaEventLog::connect_with(namespaced(&kafka.brokers, &format!("blue{run}")))
        .await
        .unwrap();
    let green = KafkaEventLog::connect_with(namespaced(&kafka.brokers, &format!("green{run}")))
        .await
        .unwrap();
    let plain = KafkaEventLog::connect(&kafka.brokers, 4).await.unwrap();
    let record = |payload: &str| Record {
        topic: "orders".to_owned(),
        key: "order-1".to_owned(),
        payload: payload.as_bytes().to_vec(),
        headers: Default::default(),
    };
    blue.publish(&[record("blue")]).await.unwrap();
    green.publish(&[record("green")]).await.unwrap();

    let group = format!("readers{run}");
    let subscribe = |bus: &KafkaEventLog, topic: &str| {
        let bus = bus.clone();
        let topic = topic.to_owned();
        let group = group.clone();
        async move {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let sub = bus
                .subscribe(
                    SubscribeOptions {
                        group,
                        topics: vec![topic],
                        max_batch: 8,
                    },
                    Arc::new(Forward(tx)),
                )
                .await
                .unwrap();
            (sub, rx)
        }
    };
    let first = |mut rx: tokio::sync::mpsc::UnboundedReceiver<Delivery>| async move {
        tokio::time::timeout(std::time::Duration::from_secs(30), rx.recv())
            .await
            .expect("a record arrives")
            .unwrap()
    };
    let (blue_sub, blue_rx) = subscribe(&blue, "orders").await;
    let blue_seen = first(blue_rx).await;
    assert_eq!(blue_seen.record.payload, b"blue");
    assert_eq!(blue_seen.record.topic, "orders", "users see the plain name");
    // The lag is reported under the plain names too, and nothing is left: green's record is not
    // blue's.
    let lags = blue.lag().await.unwrap();
    assert!(
        lags.iter().all(|l| l.group == group && l.topic == "orders"),
        "{lags:?}"
    );
    blue_sub.stop().await;
    let (green_sub, green_rx) = subscribe(&green, "orders").await;
    assert_eq!(first(green_rx).await.record.payload, b"green");
    green_sub.stop().await;
    // On the cluster, the namespace is part of the topic's name.
    let (plain_sub, plain_rx) = subscribe(&plain, &format!("blue{run}.orders")).await;
    assert_eq!(first(plain_rx).await.record.payload, b"blue");
    plain_sub.stop().await;
}

/// Hands every delivery to a channel.
struct Forward(tokio::sync::mpsc::UnboundedSender<Delivery>);

#[async_trait]
impl BatchHandler for Forward {
    async fn handle(&self, batch: &[Delivery]) -> Result<(), InfraError> {
        for delivery in batch {
            let _ = self.0.send(delivery.clone());
        }
        Ok(())
    }
}

fn unique(name: &str) -> String {
    format!("kafka-{name}-{}", uuid::Uuid::now_v7().simple())
}

/// Kafka-specific: a key lands on the partition the embedded log would pick, and the record comes
/// back with its correlation and causation ids plus a `traceparent` carrying the correlation id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_keep_the_embedded_partitioning_and_carry_trace_headers() {
    let Some(kafka) =
        Kafka::from_env("records_keep_the_embedded_partitioning_and_carry_trace_headers")
    else {
        return;
    };
    let bus = KafkaEventLog::connect(&kafka.brokers, 4).await.unwrap();
    let topic = unique("headers");
    let correlation = uuid::Uuid::now_v7();
    let causation = uuid::Uuid::now_v7();
    let keys = ["order-1", "order-2", "order-3", "order-4", "order-5"];
    let records: Vec<Record> = keys
        .iter()
        .map(|key| Record {
            topic: topic.clone(),
            key: (*key).to_owned(),
            payload: key.as_bytes().to_vec(),
            headers: [
                (headers::CORRELATION_ID.to_owned(), correlation.to_string()),
                (headers::CAUSATION_ID.to_owned(), causation.to_string()),
                (headers::EVENT_TYPE.to_owned(), "OrderPlaced".to_owned()),
            ]
            .into(),
        })
        .collect();
    bus.publish(&records).await.unwrap();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sub = bus
        .subscribe(
            SubscribeOptions {
                group: unique("g"),
                topics: vec![topic.clone()],
                max_batch: 8,
            },
            Arc::new(Forward(tx)),
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < keys.len() {
        let delivery = tokio::time::timeout(std::time::Duration::from_secs(30), rx.recv())
            .await
            .expect("records arrive")
            .unwrap();
        seen.push(delivery);
    }
    sub.stop().await;
    for delivery in &seen {
        let record = &delivery.record;
        assert_eq!(
            delivery.partition,
            partition_for(&record.key, 4),
            "key {}",
            record.key
        );
        assert_eq!(record.payload, record.key.as_bytes());
        assert_eq!(
            record.header(headers::CORRELATION_ID),
            Some(correlation.to_string().as_str())
        );
        assert_eq!(
            record.header(headers::CAUSATION_ID),
            Some(causation.to_string().as_str())
        );
        assert_eq!(record.header(headers::EVENT_TYPE), Some("OrderPlaced"));
        let trace = record.header(TRACEPARENT).expect("a traceparent");
        assert_eq!(
            trace.split('-').nth(1),
            Some(correlation.simple().to_string().as_str()),
            "{trace}"
        );
    }
}

/// A topic that already exists keeps its partition count, and keys map onto that count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_topic_keeps_its_partitions() {
    let Some(kafka) = Kafka::from_env("an_existing_topic_keeps_its_partitions") else {
        return;
    };
    let topic = unique("existing");
    let two = KafkaEventLog::connect(&kafka.brokers, 2).await.unwrap();
    assert_eq!(two.create_topic(&topic, 2).await.unwrap(), 2);
    let eight = KafkaEventLog::connect(&kafka.brokers, 8).await.unwrap();
    assert_eq!(
        eight.create_topic(&topic, 8).await.unwrap(),
        2,
        "already exists: its own count wins"
    );
}

/// Kafka-specific: two subscriptions of one group are two members that share the partitions (the
/// embedded log refuses the second one instead), and between them nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_one_group_share_its_partitions() {
    let Some(kafka) = Kafka::from_env("members_of_one_group_share_its_partitions") else {
        return;
    };
    let bus = KafkaEventLog::connect(&kafka.brokers, 4).await.unwrap();
    let topic = unique("members");
    let group = unique("g");
    let options = SubscribeOptions {
        group: group.clone(),
        topics: vec![topic.clone()],
        max_batch: 4,
    };
    let (first_tx, mut first_rx) = tokio::sync::mpsc::unbounded_channel();
    let (second_tx, mut second_rx) = tokio::sync::mpsc::unbounded_channel();
    let first = bus
        .subscribe(options.clone(), Arc::new(Forward(first_tx)))
        .await
        .unwrap();
    let second = bus
        .subscribe(options, Arc::new(Forward(second_tx)))
        .await
        .unwrap();
    let (mut by_first, mut by_second) = (Vec::new(), Vec::new());
    let mut published = 0;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    // Keep publishing (over many keys, so over every partition) until both members got records.
    while by_first.is_empty() || by_second.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "one member never got a partition: {} and {} records",
            by_first.len(),
            by_second.len()
        );
        let batch: Vec<Record> = (published..published + 16)
            .map(|i| Record {
                topic: topic.clone(),
                key: format!("key-{}", i % 16),
                payload: i.to_string().into_bytes(),
                headers: Default::default(),
            })
            .collect();
        bus.publish(&batch).await.unwrap();
        published += 16;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        while let Ok(d) = first_rx.try_recv() {
            by_first.push(d);
        }
        while let Ok(d) = second_rx.try_recv() {
            by_second.push(d);
        }
    }
    // Everything published reaches one member or the other (a rebalance may hand a few twice).
    let mut seen = std::collections::HashSet::new();
    while seen.len() < published {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {published} records arrived",
            seen.len()
        );
        tokio::select! {
            Some(d) = first_rx.recv() => by_first.push(d),
            Some(d) = second_rx.recv() => by_second.push(d),
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
        }
        seen = by_first
            .iter()
            .chain(&by_second)
            .map(|d| d.record.payload.clone())
            .collect();
    }
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn a_bad_broker_list_is_refused() {
    let refused = KafkaEventLog::connect("127.0.0.1:9092,", 4).await;
    assert!(matches!(
        refused,
        Err(emporium_platform::bus::BusError::Invalid(_))
    ));
}

/// A wrong `kafka_brokers` shows at start-up, not at the first publish.
#[tokio::test]
async fn connecting_to_no_broker_fails() {
    // Port 1 on loopback: nothing listens there.
    let refused = KafkaEventLog::connect("127.0.0.1:1", 4).await;
    assert!(matches!(
        refused,
        Err(emporium_platform::bus::BusError::Unavailable(_))
    ));
}
