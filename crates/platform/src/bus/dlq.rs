//! Dead letters: events a consumer group gave up on, kept on `<topic>.dlq` with what went wrong.
//!
//! A dead-letter record carries the original record whole (payload, key, headers), the group that
//! failed, the error and the attempt count. [`DeadLetterStore`] consumes every `*.dlq` topic into a
//! table so that operators can list, replay and delete them; replay publishes the original record to
//! its topic again, where the groups that already applied it skip it through their inboxes and the
//! group that failed gets another go.

use std::{collections::BTreeMap, sync::Arc};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use emporium_events::Topic;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{BatchHandler, Delivery, EventBus, InfraError, Record, SubscribeOptions, Subscription};
use crate::storage::{Db, Migration, Row, StorageError, query};

pub const DLQ_SUFFIX: &str = ".dlq";

/// The payload of a record on a `<topic>.dlq` topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub group: String,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub key: String,
    pub error: String,
    pub attempts: u32,
    pub failed_at: DateTime<Utc>,
    pub headers: BTreeMap<String, String>,
    /// The original payload: the envelope as JSON when it is JSON, else its text.
    pub envelope: serde_json::Value,
}

impl DeadLetter {
    pub fn event_type(&self) -> Option<&str> {
        self.envelope
            .get("eventType")
            .and_then(|v| v.as_str())
            .or_else(|| {
                self.headers
                    .get(super::headers::EVENT_TYPE)
                    .map(String::as_str)
            })
    }

    pub fn event_id(&self) -> Option<&str> {
        self.envelope.get("eventId").and_then(|v| v.as_str())
    }

    /// The original record, as it was first published.
    pub fn original(&self) -> Record {
        let payload = match &self.envelope {
            serde_json::Value::String(text) => text.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        };
        Record {
            topic: self.topic.clone(),
            key: self.key.clone(),
            payload,
            headers: self.headers.clone(),
        }
    }
}

/// The record that moves `delivery` to its topic's dead-letter topic.
pub fn dead_letter_record(delivery: &Delivery, group: &str, error: &str, attempts: u32) -> Record {
    let record = &delivery.record;
    let envelope = serde_json::from_slice(&record.payload).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&record.payload).into_owned())
    });
    let letter = DeadLetter {
        group: group.to_owned(),
        topic: record.topic.clone(),
        partition: delivery.partition,
        offset: delivery.offset,
        key: record.key.clone(),
        error: error.to_owned(),
        attempts,
        failed_at: Utc::now(),
        headers: record.headers.clone(),
        envelope,
    };
    Record {
        topic: format!("{}{DLQ_SUFFIX}", record.topic),
        key: record.key.clone(),
        payload: serde_json::to_vec(&letter).unwrap_or_default(),
        headers: record.headers.clone(),
    }
}

/// A dead letter as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterEntry {
    pub id: String,
    pub topic: String,
    pub event_type: Option<String>,
    pub event_id: Option<String>,
    pub group: String,
    pub error: String,
    pub attempts: u32,
    pub failed_at: DateTime<Utc>,
    pub replayed_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub letter: DeadLetter,
}

pub const MIGRATIONS: &[Migration] = &[Migration::portable(
    100,
    "dead_letters",
    // One row per (group, original record): the same failure dead-lettered twice (its batch was
    // redelivered after a crash) is one dead letter.
    "CREATE TABLE dead_letters (
        id            TEXT    PRIMARY KEY,
        grp           TEXT    NOT NULL,
        src_topic     TEXT    NOT NULL,
        src_partition INTEGER NOT NULL,
        src_offset    BIGINT  NOT NULL,
        letter        TEXT    NOT NULL,
        failed_at     BIGINT  NOT NULL,
        replayed_at   BIGINT,
        UNIQUE (grp, src_topic, src_partition, src_offset))",
)];

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("no dead letter with id {0}")]
    NotFound(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Bus(#[from] super::BusError),
}

/// Dead letters of every topic, in the operations database.
#[derive(Clone)]
pub struct DeadLetterStore {
    db: Db,
    bus: Arc<dyn EventBus>,
}

impl DeadLetterStore {
    /// `db` must have had [`MIGRATIONS`] applied.
    pub fn new(db: Db, bus: Arc<dyn EventBus>) -> Self {
        DeadLetterStore { db, bus }
    }

    /// Starts collecting the dead-letter topics of `topics` (every [`Topic`] when empty).
    pub async fn collect(&self, topics: &[String]) -> Result<Subscription, super::BusError> {
        let topics = if topics.is_empty() {
            Topic::ALL.iter().map(|t| t.as_str().to_owned()).collect()
        } else {
            topics.to_vec()
        };
        let options = SubscribeOptions {
            group: "dead-letters".to_owned(),
            topics: topics.iter().map(|t| format!("{t}{DLQ_SUFFIX}")).collect(),
            max_batch: 256,
        };
        self.bus.subscribe(options, Arc::new(self.clone())).await
    }

    /// Pending dead letters first, newest first.
    pub async fn list(&self, limit: usize) -> Result<Vec<DeadLetterEntry>, StorageError> {
        let rows = query(
            "SELECT id, letter, replayed_at FROM dead_letters
             ORDER BY replayed_at IS NOT NULL, failed_at DESC, id DESC LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(&mut self.db.reader().await?)
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    pub async fn get(&self, id: &str) -> Result<DeadLetterEntry, DeadLetterError> {
        let row = query("SELECT id, letter, replayed_at FROM dead_letters WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut self.db.reader().await?)
            .await?
            .ok_or_else(|| DeadLetterError::NotFound(id.to_owned()))?;
        Ok(entry_from_row(&row)?)
    }

    /// Publishes the original record again and marks the entry replayed.
    pub async fn replay(&self, id: &str) -> Result<DeadLetterEntry, DeadLetterError> {
        let entry = self.get(id).await?;
        self.bus.publish(&[entry.letter.original()]).await?;
        let mut tx = self.db.begin_plain().await?;
        query("UPDATE dead_letters SET replayed_at = $2 WHERE id = $1")
            .bind(id)
            .bind(Utc::now().timestamp_millis())
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        self.get(id).await
    }

    pub async fn delete(&self, id: &str) -> Result<(), DeadLetterError> {
        let mut tx = self.db.begin_plain().await?;
        let done = query("DELETE FROM dead_letters WHERE id = $1")
            .bind(id)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        if done == 0 {
            return Err(DeadLetterError::NotFound(id.to_owned()));
        }
        Ok(())
    }

    /// Dead letters not yet replayed.
    pub async fn pending(&self) -> Result<i64, StorageError> {
        query("SELECT COUNT(*) FROM dead_letters WHERE replayed_at IS NULL")
            .scalar(&mut self.db.reader().await?)
            .await
    }
}

fn entry_from_row(row: &Row) -> Result<DeadLetterEntry, StorageError> {
    let text: String = row.get(1)?;
    let letter: DeadLetter = serde_json::from_str(&text)
        .map_err(|e| StorageError::Query(format!("corrupt dead letter: {e}")))?;
    let replayed_at: Option<i64> = row.get(2)?;
    Ok(DeadLetterEntry {
        id: row.get(0)?,
        topic: letter.topic.clone(),
        event_type: letter.event_type().map(str::to_owned),
        event_id: letter.event_id().map(str::to_owned),
        group: letter.group.clone(),
        error: letter.error.clone(),
        attempts: letter.attempts,
        failed_at: letter.failed_at,
        replayed_at: replayed_at.and_then(DateTime::<Utc>::from_timestamp_millis),
        letter,
    })
}

#[async_trait]
impl BatchHandler for DeadLetterStore {
    async fn handle(&self, batch: &[Delivery]) -> Result<(), InfraError> {
        let infra = |e: StorageError| InfraError(e.to_string());
        let mut tx = self.db.begin_plain().await.map_err(infra)?;
        for delivery in batch {
            let Ok(letter) = serde_json::from_slice::<DeadLetter>(&delivery.record.payload) else {
                tracing::error!(topic = %delivery.record.topic, offset = delivery.offset,
                    "unreadable record on a dead-letter topic: skipped");
                continue;
            };
            // A replayed record fails again at a new offset: that is a new dead letter. The same
            // record dead-lettered twice by one group is not.
            query(
                "INSERT INTO dead_letters (id, grp, src_topic, src_partition, src_offset, letter, failed_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (grp, src_topic, src_partition, src_offset) DO NOTHING",
            )
            .bind(Uuid::now_v7())
            .bind(&letter.group)
            .bind(&letter.topic)
            .bind(letter.partition as i64)
            .bind(letter.offset as i64)
            .bind(serde_json::to_string(&letter).unwrap_or_default())
            .bind(letter.failed_at.timestamp_millis())
            .execute(&mut tx)
            .await
            .map_err(infra)?;
        }
        tx.commit().await.map_err(infra)?;
        Ok(())
    }
}
