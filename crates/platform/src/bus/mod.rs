//! The event bus port: named topics split into partitions, keyed records, consumer groups with
//! committed offsets.
//!
//! # Contract (every adapter MUST)
//! - **Keyed order.** Records with the same key go to the same partition ([`partition_for`]) and are
//!   delivered to a group in the order they were appended. Across keys there is no order, and across
//!   topics neither: one order's events on `order-events` and on `payment-events` are two sequences.
//! - **Durability.** When [`EventBus::publish`] returns `Ok`, every record in the call is stored and
//!   will be delivered to every group subscribed to its topic, now or later.
//! - **Groups.** Each consumer group has its own committed position per partition; a group that
//!   subscribes for the first time starts at the beginning of each partition.
//! - **At least once.** A batch is committed only after its handler returned `Ok`. A handler error
//!   (infrastructure trouble) pauses the partition and redelivers from the last committed offset.
//!   Redeliveries are expected: consumers make effects idempotent with the inbox
//!   ([`crate::storage::Inbox`]).
//! - **Stopping.** [`Subscription::stop`] lets a batch in progress finish and commit, then returns;
//!   nothing after it is delivered to that subscription.
//!
//! Retries with backoff and dead-lettering sit above the port, in [`consumer`], so that every
//! adapter behaves the same when a handler fails.

pub mod consumer;
pub mod dlq;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod outbox;

#[cfg(feature = "conformance")]
pub mod conformance;

use std::{collections::BTreeMap, sync::Arc};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use emporium_events::Envelope;

pub use consumer::{Consumer, HandlerError, RetryPolicy};
#[cfg(feature = "kafka")]
pub use kafka::{KafkaEventLog, KafkaOptions};
pub use outbox::OutboxLog;

/// Header names carried with every record (Kafka headers, the outbox's `headers` column).
pub mod headers {
    pub const EVENT_TYPE: &str = "event-type";
    pub const CORRELATION_ID: &str = "correlation-id";
    pub const CAUSATION_ID: &str = "causation-id";
}

/// A record to append.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub topic: String,
    /// The partition key: the aggregate id for events.
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

impl Record {
    /// The record for an event envelope: its topic, keyed by aggregate id, with the ids as headers.
    pub fn from_envelope(envelope: &Envelope) -> Result<Record, serde_json::Error> {
        let mut headers = BTreeMap::new();
        headers.insert(
            headers::EVENT_TYPE.to_owned(),
            envelope.event.event_type().to_owned(),
        );
        headers.insert(
            headers::CORRELATION_ID.to_owned(),
            envelope.correlation_id.clone(),
        );
        if let Some(causation) = envelope.causation_id {
            headers.insert(headers::CAUSATION_ID.to_owned(), causation.to_string());
        }
        Ok(Record {
            topic: envelope.event.topic().as_str().to_owned(),
            key: envelope.aggregate_id.clone(),
            payload: envelope.to_json()?,
            headers,
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A record as delivered to a consumer: where it sits in the log, and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub partition: u32,
    pub offset: u64,
    pub appended_at: DateTime<Utc>,
    /// Shared: every group handed the record gets the same one.
    pub record: Arc<Record>,
    /// The record's envelope when the bus already holds it decoded (the embedded log, for events
    /// emitted in this process): consumers then skip decoding the payload.
    pub decoded: Option<Arc<Envelope>>,
}

/// What a subscription asks for.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    pub group: String,
    pub topics: Vec<String>,
    /// Most records handed to the handler at once (all from one partition).
    pub max_batch: usize,
}

impl SubscribeOptions {
    /// At least one topic, every name valid.
    pub(crate) fn validate(&self) -> Result<(), BusError> {
        if self.topics.is_empty() {
            return Err(BusError::Invalid("a subscription needs a topic".into()));
        }
        self.topics
            .iter()
            .try_for_each(|topic| validate_topic(topic))
    }
}

/// Receives batches from one partition at a time, in log order.
#[async_trait]
pub trait BatchHandler: Send + Sync + 'static {
    /// `Ok` commits the whole batch. `Err` means the batch could not be handled for reasons that are
    /// not the records' fault (a database down): the adapter waits and redelivers from the last commit.
    async fn handle(&self, batch: &[Delivery]) -> Result<(), InfraError>;
}

/// Trouble outside the records themselves: worth waiting for, never a reason to dead-letter.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InfraError(pub String);

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    #[error("consumer group `{0}` already has an active member in this process")]
    GroupBusy(String),
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl From<BusError> for InfraError {
    fn from(e: BusError) -> Self {
        InfraError(e.to_string())
    }
}

/// How far a group is behind on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub group: String,
    pub topic: String,
    pub partition: u32,
    /// Next offset the log will assign.
    pub end: u64,
    /// Next offset the group will read.
    pub committed: u64,
}

impl PartitionLag {
    pub fn lag(&self) -> u64 {
        self.end.saturating_sub(self.committed)
    }
}

/// The event bus. See the module docs for what every adapter guarantees.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Appends the records. The whole call is stored, or none of it is.
    async fn publish(&self, records: &[Record]) -> Result<(), BusError>;

    /// Starts delivering the topics' records to `handler` as a member of `options.group`.
    async fn subscribe(
        &self,
        options: SubscribeOptions,
        handler: Arc<dyn BatchHandler>,
    ) -> Result<Subscription, BusError>;

    /// Committed positions and ends of every partition a group has consumed.
    async fn lag(&self) -> Result<Vec<PartitionLag>, BusError>;

    /// Includes `group` (reading `topics`) in [`EventBus::lag`] although it is not subscribed
    /// through this client: another process consumes in it. A bus whose lag already covers every
    /// group (the embedded log) has nothing to do.
    fn watch_group(&self, _group: &str, _topics: &[&str]) {}

    /// Answers whether the bus is reachable (for `/health`).
    async fn check(&self) -> Result<(), BusError>;

    /// A short name for logs and health checks (`outbox-log`, `kafka`).
    fn name(&self) -> &'static str;
}

/// A running subscription. Dropping it without [`Subscription::stop`] stops it too, without waiting.
pub struct Subscription {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
    /// Released when the subscription ends (for example, a group's single-member slot).
    _guard: Option<Box<dyn Send + Sync>>,
}

impl Subscription {
    pub fn new(
        stop: tokio::sync::watch::Sender<bool>,
        tasks: tokio::task::JoinSet<()>,
        guard: Option<Box<dyn Send + Sync>>,
    ) -> Self {
        Subscription {
            stop,
            tasks,
            _guard: guard,
        }
    }

    /// Lets every batch in progress finish and commit, then returns.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The text of a caught panic, for logs and dead letters.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// The partition a key belongs to: stable across processes, releases and adapters that use it.
pub fn partition_for(key: &str, partitions: u32) -> u32 {
    crc32fast::hash(key.as_bytes()) % partitions.max(1)
}

/// Topic names: lowercase letters, digits, `.`, `-`, `_`, at most 200 bytes.
pub fn validate_topic(topic: &str) -> Result<(), BusError> {
    let ok = !topic.is_empty()
        && topic.len() <= 200
        && topic
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(BusError::Invalid(format!("bad topic name `{topic}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_key_always_lands_on_the_same_partition() {
        let first = partition_for("order-42", 8);
        for _ in 0..10 {
            assert_eq!(partition_for("order-42", 8), first);
        }
        assert!(partition_for("anything", 8) < 8);
    }

    #[test]
    fn keys_spread_over_partitions() {
        let mut seen = [0u32; 8];
        for i in 0..800 {
            seen[partition_for(&format!("key-{i}"), 8) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "uneven spread: {seen:?}");
    }

    #[test]
    fn topic_names_are_checked() {
        assert!(validate_topic("order-events.dlq").is_ok());
        assert!(validate_topic("Order Events").is_err());
        assert!(validate_topic("").is_err());
    }
}
