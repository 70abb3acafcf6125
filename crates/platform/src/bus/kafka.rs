//! The bus port on Apache Kafka (any Kafka-API broker), through rdkafka.
//!
//! - **Publish.** One idempotent producer per client, `acks=all`. Every record goes to the partition
//!   [`partition_for`] picks from its key, so a key lands where the embedded log would put it and
//!   where every other Emporium process puts it, whatever client library wrote it. The record's
//!   headers travel as Kafka headers, plus a W3C `traceparent` (kept if present, else derived from the
//!   correlation id so that one saga is one trace). `publish` returns once the broker acknowledged
//!   every record of the call; a failure part way leaves the acknowledged ones stored, and the caller
//!   (the outbox relay) publishes the whole call again: duplicates the inboxes absorb.
//! - **Topics** are created on first use (publish or subscribe) with the configured partitions;
//!   "already exists" is success, and a topic that exists keeps its own partition count.
//! - **Subscribe.** One consumer per subscription in the Kafka consumer group: the broker splits the
//!   partitions between the members of every process, incrementally (`cooperative-sticky`: a
//!   rebalance moves only what must move, and the others keep working). Offsets are committed by hand
//!   (`enable.auto.commit=false`) once a batch handler returned `Ok`; a failed batch stays in memory
//!   and is handed over again after a backoff (it starts at the committed offset, so this is the
//!   redelivery the port asks for), while the other partitions go on.
//! - **Lag** is read from the broker (committed offsets and high watermarks) for the groups this
//!   client has subscribed.
//!
//! See docs/adr/0007-kafka-adapter.md for the reasons.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, CommitMode, Consumer as _, StreamConsumer},
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, Headers as _, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer as _},
};
use tokio::sync::watch;

use super::{
    BatchHandler, BusError, Delivery, EventBus, InfraError, PartitionLag, Record, SubscribeOptions,
    Subscription, headers, partition_for, validate_topic,
};

/// The W3C trace context header added to every record.
pub const TRACEPARENT: &str = "traceparent";

/// How a [`KafkaEventLog`] reaches and uses the cluster.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    /// Partitions of a topic created on first use.
    pub partitions: u32,
    /// Replication factor of created topics; `None` takes the broker's default.
    pub replication: Option<u16>,
    /// How long a member that stopped answering keeps its partitions (Kafka's `session.timeout.ms`).
    pub session_timeout: Duration,
    /// How long a publish waits for the broker's acknowledgement before it fails.
    pub delivery_timeout: Duration,
    /// Shown in the broker's logs and group listings.
    pub client_id: String,
    /// Prefix of every topic and group on the cluster (`<namespace>.<name>`), so that several
    /// environments share one cluster without seeing each other's events; empty for none. The
    /// port's users see the names without it.
    pub namespace: String,
}

impl KafkaOptions {
    pub fn new(brokers: &str, partitions: u32) -> Self {
        KafkaOptions {
            brokers: brokers.to_owned(),
            partitions: partitions.clamp(1, 1024),
            replication: None,
            // Short enough that a crashed member's partitions move on quickly, long enough for a
            // busy process to heartbeat and for a short broker outage (the broker's minimum is
            // usually 6 s). `bus.session_timeout` in the configuration.
            session_timeout: Duration::from_secs(10),
            delivery_timeout: Duration::from_secs(30),
            client_id: "emporium".to_owned(),
            namespace: String::new(),
        }
    }
}

/// The event bus on a Kafka cluster.
#[derive(Clone)]
pub struct KafkaEventLog {
    inner: Arc<Inner>,
}

struct Inner {
    options: KafkaOptions,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// Partition counts of the topics known to exist.
    topics: Mutex<HashMap<String, u32>>,
    /// The groups subscribed through this client and their topics (what [`EventBus::lag`] reports).
    groups: Mutex<BTreeMap<String, BTreeSet<String>>>,
    /// One idle client per group for reading its committed offsets (it never joins the group).
    offset_readers: Mutex<HashMap<String, Arc<BaseConsumer>>>,
}

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every map here is updated in one step: a panic elsewhere cannot leave one half-changed.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs a blocking rdkafka call off the async workers.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, BusError> + Send + 'static,
) -> Result<T, BusError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| BusError::Unavailable(format!("kafka call failed: {e}")))?
}

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

impl KafkaEventLog {
    /// Connects to `brokers` (`host:port,…`); topics created on first use get `partitions`.
    pub async fn connect(brokers: &str, partitions: u32) -> Result<Self, BusError> {
        Self::connect_with(KafkaOptions::new(brokers, partitions)).await
    }

    /// Connects with every option spelled out; fails when no broker answers within 10 s.
    pub async fn connect_with(options: KafkaOptions) -> Result<Self, BusError> {
        if options.brokers.split(',').any(|b| b.trim().is_empty()) {
            return Err(BusError::Invalid(format!(
                "bad broker list `{}`",
                options.brokers
            )));
        }
        let producer: FutureProducer = base_config(&options)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // A little batching without hurting latency: the relay publishes in bursts.
            .set("linger.ms", "2")
            .set(
                "delivery.timeout.ms",
                options.delivery_timeout.as_millis().to_string(),
            )
            .create()
            .map_err(unavailable)?;
        let admin: AdminClient<DefaultClientContext> =
            base_config(&options).create().map_err(unavailable)?;
        let log = KafkaEventLog {
            inner: Arc::new(Inner {
                options,
                producer,
                admin,
                topics: Mutex::new(HashMap::new()),
                groups: Mutex::new(BTreeMap::new()),
                offset_readers: Mutex::new(HashMap::new()),
            }),
        };
        log.check().await?;
        Ok(log)
    }

    /// The name of a topic or group on the cluster.
    fn physical(&self, name: &str) -> String {
        physical(&self.inner.options.namespace, name)
    }

    /// Creates the topic with `partitions` partitions unless it exists; returns its partition count.
    pub async fn create_topic(&self, topic: &str, partitions: u32) -> Result<u32, BusError> {
        validate_topic(topic)?;
        if let Some(n) = lock(&self.inner.topics).get(topic) {
            return Ok(*n);
        }
        let logical = topic;
        let physical = self.physical(logical);
        let topic = physical.as_str();
        let replication = TopicReplication::Fixed(
            self.inner
                .options
                .replication
                .map_or(-1, |r| i32::from(r.max(1))),
        );
        let new = NewTopic::new(topic, partitions.clamp(1, 1024) as i32, replication);
        let admin_options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
        let results = self
            .inner
            .admin
            .create_topics([&new], &admin_options)
            .await
            .map_err(unavailable)?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(BusError::Unavailable(format!(
                        "cannot create topic {name}: {code}"
                    )));
                }
            }
        }
        // Creation returns before every broker knows the topic: wait until the metadata shows it.
        let deadline = tokio::time::Instant::now() + METADATA_TIMEOUT;
        loop {
            if let Some(n) = self.fetch_partitions(topic).await? {
                lock(&self.inner.topics).insert(logical.to_owned(), n);
                return Ok(n);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BusError::Unavailable(format!(
                    "topic {topic} was created but its partitions never showed up"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The topic's partition count from the cluster's metadata; `None` while it does not exist.
    async fn fetch_partitions(&self, topic: &str) -> Result<Option<u32>, BusError> {
        let inner = self.inner.clone();
        let topic = topic.to_owned();
        blocking(move || {
            let metadata = inner
                .producer
                .client()
                .fetch_metadata(Some(&topic), METADATA_TIMEOUT)
                .map_err(unavailable)?;
            Ok(metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map(|t| t.partitions().len() as u32)
                .filter(|n| *n > 0))
        })
        .await
    }

    async fn partitions(&self, topic: &str) -> Result<u32, BusError> {
        if let Some(n) = lock(&self.inner.topics).get(topic) {
            return Ok(*n);
        }
        self.create_topic(topic, self.inner.options.partitions)
            .await
    }

    /// The client that reads `group`'s committed offsets.
    fn offset_reader(&self, group: &str) -> Result<Arc<BaseConsumer>, BusError> {
        let mut readers = lock(&self.inner.offset_readers);
        if let Some(reader) = readers.get(group) {
            return Ok(reader.clone());
        }
        let reader: BaseConsumer = base_config(&self.inner.options)
            .set("group.id", self.physical(group))
            .set("enable.auto.commit", "false")
            .create()
            .map_err(unavailable)?;
        let reader = Arc::new(reader);
        readers.insert(group.to_owned(), reader.clone());
        Ok(reader)
    }
}

/// `<namespace>.<name>`, or `name` without a namespace.
fn physical(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}.{name}")
    }
}

/// The name the port's users know: `physical` without the namespace.
fn logical<'a>(namespace: &str, physical: &'a str) -> &'a str {
    if namespace.is_empty() {
        return physical;
    }
    physical
        .strip_prefix(namespace)
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(physical)
}

/// Settings every client shares.
fn base_config(options: &KafkaOptions) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &options.brokers)
        .set("client.id", &options.client_id)
        // Topics are created on purpose, with the configured partitions, never by a metadata request.
        .set("allow.auto.create.topics", "false");
    config
}

/// A W3C `traceparent`: the trace id from the correlation id, so that every event of one request or
/// saga shares a trace, and a fresh span id per record.
pub fn traceparent(correlation_id: Option<&str>) -> String {
    let trace = correlation_id
        .map(trace_id)
        .unwrap_or_else(|| format!("{:032x}", fastrand::u128(1..)));
    let span = fastrand::u64(1..);
    format!("00-{trace}-{span:016x}-01")
}

/// 32 lowercase hex digits, never all zero: the correlation id itself when it is a UUID (what the
/// platform makes), else a stable 128-bit hash of it (four CRC-32s with different seeds).
fn trace_id(correlation_id: &str) -> String {
    if let Ok(uuid) = uuid::Uuid::parse_str(correlation_id)
        && !uuid.is_nil()
    {
        return uuid.simple().to_string();
    }
    let hex: String = (0u32..4)
        .map(|seed| {
            let mut hasher = crc32fast::Hasher::new_with_initial(seed.wrapping_mul(0x9e37_79b9));
            hasher.update(correlation_id.as_bytes());
            format!("{:08x}", hasher.finalize())
        })
        .collect();
    if hex.bytes().all(|b| b == b'0') {
        "00000000000000000000000000000001".to_owned()
    } else {
        hex
    }
}

fn kafka_headers(record: &Record) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(record.headers.len() + 1);
    for (key, value) in &record.headers {
        out = out.insert(Header {
            key: key.as_str(),
            value: Some(value.as_str()),
        });
    }
    if !record.headers.contains_key(TRACEPARENT) {
        let trace = traceparent(record.header(headers::CORRELATION_ID));
        out = out.insert(Header {
            key: TRACEPARENT,
            value: Some(trace.as_str()),
        });
    }
    out
}

fn delivery(message: &impl Message) -> Delivery {
    let mut headers = BTreeMap::new();
    if let Some(found) = message.headers() {
        for header in found.iter() {
            let value = header
                .value
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            headers.insert(header.key.to_owned(), value);
        }
    }
    Delivery {
        partition: message.partition().max(0) as u32,
        offset: message.offset().max(0) as u64,
        appended_at: message
            .timestamp()
            .to_millis()
            .and_then(DateTime::<Utc>::from_timestamp_millis)
            .unwrap_or_default(),
        record: Arc::new(Record {
            topic: message.topic().to_owned(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default(),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
        }),
        decoded: None,
    }
}

#[async_trait]
impl EventBus for KafkaEventLog {
    async fn publish(&self, records: &[Record]) -> Result<(), BusError> {
        for record in records {
            validate_topic(&record.topic)?;
        }
        // Each topic's partition count and its name on the cluster.
        let mut topics = HashMap::new();
        for record in records {
            if !topics.contains_key(record.topic.as_str()) {
                let partitions = self.partitions(&record.topic).await?;
                topics.insert(
                    record.topic.as_str(),
                    (partitions, self.physical(&record.topic)),
                );
            }
        }
        // Enqueue everything first (in order: the idempotent producer keeps it per partition even
        // with several requests in flight), then wait for every acknowledgement.
        let mut acks = Vec::with_capacity(records.len());
        for record in records {
            let Some((partitions, topic)) = topics.get(record.topic.as_str()) else {
                continue;
            };
            let mut message = FutureRecord::to(topic)
                .key(record.key.as_str())
                .payload(record.payload.as_slice())
                .partition(partition_for(&record.key, *partitions) as i32)
                .headers(kafka_headers(record));
            loop {
                match self.inner.producer.send_result(message) {
                    Ok(ack) => {
                        acks.push(ack);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // The local queue is full: wait for the broker to take some (backpressure).
                        message = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(unavailable(e)),
                }
            }
        }
        let mut failure = None;
        for ack in acks {
            match ack.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => failure = Some(unavailable(e)),
                Err(_) => failure = Some(BusError::Unavailable("producer closed".into())),
            }
        }
        failure.map_or(Ok(()), Err)
    }

    async fn subscribe(
        &self,
        options: SubscribeOptions,
        handler: Arc<dyn BatchHandler>,
    ) -> Result<Subscription, BusError> {
        options.validate()?;
        for topic in &options.topics {
            self.partitions(topic).await?;
        }
        let session = self.inner.options.session_timeout.as_millis().max(1000);
        let consumer: StreamConsumer = base_config(&self.inner.options)
            .set("group.id", self.physical(&options.group))
            .set("enable.auto.commit", "false")
            // A group's first member starts at the beginning, as the port requires.
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", session.to_string())
            .set("heartbeat.interval.ms", (session / 3).to_string())
            .set("fetch.wait.max.ms", "100")
            // Incremental rebalances: a member keeps its partitions while others join or leave, and
            // only what moves is revoked. With the eager assignors, tansu 0.6 (the broker the tests
            // run on) hands a dead member's partitions to nobody after its session expires.
            .set("partition.assignment.strategy", "cooperative-sticky")
            .create()
            .map_err(unavailable)?;
        let topics: Vec<String> = options.topics.iter().map(|t| self.physical(t)).collect();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(unavailable)?;
        lock(&self.inner.groups)
            .entry(options.group.clone())
            .or_default()
            .extend(options.topics.iter().cloned());

        let (stop_tx, stop_rx) = watch::channel(false);
        let member = Member {
            consumer: Arc::new(consumer),
            group: options.group,
            namespace: self.inner.options.namespace.clone(),
            max_batch: options.max_batch.max(1),
            handler,
            stop: stop_rx,
            parts: HashMap::new(),
        };
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(member.run());
        Ok(Subscription::new(stop_tx, tasks, None))
    }

    async fn lag(&self) -> Result<Vec<PartitionLag>, BusError> {
        let groups = lock(&self.inner.groups).clone();
        let mut lags = Vec::new();
        for (group, topics) in groups {
            let mut partitions = Vec::new();
            for topic in topics {
                let count = self.partitions(&topic).await?;
                let topic = self.physical(&topic);
                partitions.extend((0..count).map(|p| (topic.clone(), p)));
            }
            let reader = self.offset_reader(&group)?;
            let namespace = self.inner.options.namespace.clone();
            lags.extend(
                blocking(move || {
                    let mut tpl = TopicPartitionList::new();
                    for (topic, partition) in &partitions {
                        tpl.add_partition(topic, *partition as i32);
                    }
                    let committed = reader
                        .committed_offsets(tpl, METADATA_TIMEOUT)
                        .map_err(unavailable)?;
                    let mut out = Vec::new();
                    for element in committed.elements() {
                        let (low, high) = reader
                            .fetch_watermarks(
                                element.topic(),
                                element.partition(),
                                METADATA_TIMEOUT,
                            )
                            .map_err(unavailable)?;
                        let next = match element.offset() {
                            Offset::Offset(n) => n,
                            // Nothing committed yet: the group starts at the earliest record.
                            _ => low,
                        };
                        out.push(PartitionLag {
                            group: group.clone(),
                            topic: logical(&namespace, element.topic()).to_owned(),
                            partition: element.partition().max(0) as u32,
                            end: high.max(0) as u64,
                            committed: next.max(0) as u64,
                        });
                    }
                    Ok(out)
                })
                .await?,
            );
        }
        Ok(lags)
    }

    async fn check(&self) -> Result<(), BusError> {
        let inner = self.inner.clone();
        blocking(move || {
            inner
                .producer
                .client()
                .fetch_metadata(None, Duration::from_secs(5))
                .map(|_| ())
                .map_err(unavailable)
        })
        .await
    }

    fn watch_group(&self, group: &str, topics: &[&str]) {
        lock(&self.inner.groups)
            .entry(group.to_owned())
            .or_default()
            .extend(topics.iter().map(|t| (*t).to_owned()));
    }

    fn name(&self) -> &'static str {
        "kafka"
    }
}

/// What one member holds of one partition.
#[derive(Default)]
struct Part {
    /// Fetched, not yet handled, in offset order; the front is the next record to hand over.
    queue: VecDeque<Delivery>,
    /// The offset after the last committed batch, to skip what a rebalance fetches again.
    next: Option<u64>,
    /// Set after a failed batch: not before this instant.
    retry_at: Option<tokio::time::Instant>,
    failures: u32,
    /// Fetching paused because the queue is full.
    paused: bool,
}

/// One member of a consumer group: fetches, hands batches over one partition at a time, commits.
struct Member {
    consumer: Arc<StreamConsumer>,
    group: String,
    /// Stripped from the topic of each delivery (partitions are keyed by the cluster's names).
    namespace: String,
    max_batch: usize,
    handler: Arc<dyn BatchHandler>,
    stop: watch::Receiver<bool>,
    parts: HashMap<(String, i32), Part>,
}

/// Most messages taken from the client per round without waiting.
const DRAIN: usize = 1024;

impl Member {
    /// Records a partition holds in memory before its fetching pauses (backpressure).
    fn capacity(&self) -> usize {
        (self.max_batch * 4).max(256)
    }

    async fn run(mut self) {
        let consumer = self.consumer.clone();
        loop {
            if *self.stop.borrow() {
                break;
            }
            let now = tokio::time::Instant::now();
            if !self.has_ready(now) {
                let wake = self.next_retry();
                let received = tokio::select! {
                    biased;
                    _ = self.stop.changed() => break,
                    received = consumer.recv() => Some(received.map(|m| delivery(&m))),
                    _ = sleep_until(wake) => None,
                };
                match received {
                    Some(Ok(delivery)) => self.take(delivery),
                    Some(Err(e)) => {
                        tracing::warn!(group = %self.group, error = %e, "kafka consumer error");
                        tokio::select! {
                            _ = self.stop.changed() => break,
                            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        }
                    }
                    None => {}
                }
            }
            for _ in 0..DRAIN {
                match consumer.recv().now_or_never() {
                    Some(Ok(message)) => {
                        let delivery = delivery(&message);
                        self.take(delivery);
                    }
                    _ => break,
                }
            }
            self.forget_revoked();
            self.handle_ready().await;
            self.apply_backpressure();
        }
        drop(consumer);
        let consumer = self.consumer;
        // Leaving the group (a blocking close) lets the next member take the partitions at once
        // instead of after the session timeout.
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
    }

    fn take(&mut self, mut delivery: Delivery) {
        let key = (delivery.record.topic.clone(), delivery.partition as i32);
        Arc::make_mut(&mut delivery.record).topic =
            logical(&self.namespace, &delivery.record.topic).to_owned();
        let part = self.parts.entry(key).or_default();
        // After a rebalance the client fetches from the committed offset again: skip what is held.
        let seen = part.next.is_some_and(|next| delivery.offset < next)
            || part
                .queue
                .back()
                .is_some_and(|last| delivery.offset <= last.offset);
        if !seen {
            part.queue.push_back(delivery);
        }
    }

    fn has_ready(&self, now: tokio::time::Instant) -> bool {
        self.parts
            .values()
            .any(|p| !p.queue.is_empty() && p.retry_at.is_none_or(|at| at <= now))
    }

    fn next_retry(&self) -> Option<tokio::time::Instant> {
        self.parts
            .values()
            .filter(|p| !p.queue.is_empty())
            .filter_map(|p| p.retry_at)
            .min()
    }

    /// Drops what is held of partitions the group gave to another member: that member starts at
    /// the committed offset, and handling them here too would only duplicate the work.
    fn forget_revoked(&mut self) {
        if self.parts.is_empty() {
            return;
        }
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let owned: std::collections::HashSet<(String, i32)> = assignment
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        self.parts.retain(|key, _| owned.contains(key));
    }

    async fn handle_ready(&mut self) {
        let now = tokio::time::Instant::now();
        let batches: Vec<((String, i32), Vec<Delivery>)> = self
            .parts
            .iter()
            .filter(|(_, p)| !p.queue.is_empty() && p.retry_at.is_none_or(|at| at <= now))
            .map(|(key, p)| {
                (
                    key.clone(),
                    p.queue.iter().take(self.max_batch).cloned().collect(),
                )
            })
            .collect();
        if batches.is_empty() {
            return;
        }
        // Partitions are independent: their batches run side by side.
        let results = futures_util::future::join_all(
            batches
                .iter()
                .map(|(_, batch)| handle(&self.handler, &self.group, batch)),
        )
        .await;
        let mut commit = TopicPartitionList::new();
        for (((topic, partition), batch), result) in batches.iter().zip(results) {
            let next = batch.last().map_or(0, |d| d.offset + 1);
            let Some(part) = self.parts.get_mut(&(topic.clone(), *partition)) else {
                continue;
            };
            match result {
                Ok(()) => {
                    part.queue.drain(..batch.len().min(part.queue.len()));
                    part.next = Some(next);
                    part.retry_at = None;
                    part.failures = 0;
                    if let Err(e) =
                        commit.add_partition_offset(topic, *partition, Offset::Offset(next as i64))
                    {
                        tracing::warn!(error = %e, "cannot note an offset to commit");
                    }
                }
                Err(e) => {
                    let delay = backoff(part.failures);
                    part.failures += 1;
                    part.retry_at = Some(tokio::time::Instant::now() + delay);
                    tracing::warn!(group = %self.group, topic = %topic, partition, error = %e, ?delay,
                        "batch not handled, pausing the partition before redelivery");
                }
            }
        }
        if commit.count() == 0 {
            return;
        }
        let consumer = self.consumer.clone();
        let committed = tokio::task::spawn_blocking(move || {
            crate::crash::point("consumer.before_offset_commit");
            consumer.commit(&commit, CommitMode::Sync)
        })
        .await;
        match committed {
            Ok(Ok(())) => {}
            // The records were handled; whoever owns the partitions next handles them again and the
            // inbox skips them.
            Ok(Err(e)) => {
                tracing::warn!(group = %self.group, error = %e, "offset commit failed; records will be redelivered");
            }
            Err(e) => tracing::warn!(group = %self.group, error = %e, "offset commit failed"),
        }
    }

    /// Pauses fetching for partitions that hold too much, resumes them once they drained.
    fn apply_backpressure(&mut self) {
        let capacity = self.capacity();
        for ((topic, partition), part) in &mut self.parts {
            let change = if !part.paused && part.queue.len() >= capacity {
                Some(true)
            } else if part.paused && part.queue.len() <= capacity / 2 {
                Some(false)
            } else {
                None
            };
            let Some(pause) = change else { continue };
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(topic, *partition);
            let done = if pause {
                self.consumer.pause(&tpl)
            } else {
                self.consumer.resume(&tpl)
            };
            match done {
                Ok(()) => part.paused = pause,
                Err(e) => {
                    tracing::warn!(topic = %topic, partition, error = %e, "cannot pause or resume")
                }
            }
        }
    }
}

async fn handle(
    handler: &Arc<dyn BatchHandler>,
    group: &str,
    batch: &[Delivery],
) -> Result<(), InfraError> {
    AssertUnwindSafe(handler.handle(batch))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let message = super::panic_message(panic.as_ref());
            tracing::error!(group, panic = %message, "batch handler panicked");
            Err(InfraError(format!("handler panicked: {message}")))
        })
}

/// 50 ms doubling to 5 s, as the embedded log pauses.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(50 * 2u64.saturating_pow(failures.min(7))).min(Duration::from_secs(5))
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;

    use super::*;

    #[test]
    fn a_uuid_correlation_id_is_the_trace_id() {
        let id = "0192f3a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6";
        let header = traceparent(Some(id));
        let parts: Vec<&str> = header.split('-').collect();
        assert_eq!(parts.len(), 4, "{header}");
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1], "0192f3a45b6c7d8e9fa0b1c2d3e4f5a6");
        assert_eq!(parts[2].len(), 16);
        assert_ne!(parts[2], "0000000000000000");
        assert_eq!(parts[3], "01");
    }

    #[test]
    fn any_other_correlation_id_maps_to_a_stable_trace_id() {
        let a = trace_id("checkout-42");
        assert_eq!(a, trace_id("checkout-42"), "stable");
        assert_ne!(a, trace_id("checkout-43"));
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(
            trace_id("00000000-0000-0000-0000-000000000000"),
            "00000000000000000000000000000000",
            "the nil UUID is not a valid trace id: it is hashed like any other text"
        );
    }

    #[test]
    fn a_record_without_correlation_gets_a_fresh_trace() {
        let a = traceparent(None);
        let b = traceparent(None);
        assert_ne!(a.split('-').nth(1), b.split('-').nth(1));
    }

    #[test]
    fn a_traceparent_already_on_the_record_is_kept() {
        let record = Record {
            topic: "t".into(),
            key: "k".into(),
            payload: Vec::new(),
            headers: BTreeMap::from([
                (headers::CORRELATION_ID.to_owned(), "c".to_owned()),
                (TRACEPARENT.to_owned(), "00-abc-def-01".to_owned()),
            ]),
        };
        let out = kafka_headers(&record);
        let traces: Vec<_> = out.iter().filter(|h| h.key == TRACEPARENT).collect();
        assert_eq!(traces.len(), 1);
        assert_eq!(traces[0].value, Some(b"00-abc-def-01".as_slice()));
    }
}
