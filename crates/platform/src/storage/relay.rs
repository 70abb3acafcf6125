//! The outbox relay: publishes a database's outbox rows to the bus, in id order, then deletes them.
//!
//! A crash between publish and delete publishes those rows again on restart; consumers' inboxes make
//! that harmless. A crash before publish loses nothing: the rows are still there. The relay wakes on
//! the database's commit signal and also looks every second, for rows left by a crash or by another
//! process.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use sqlx::Row;
use tokio::sync::watch;

use super::{Db, StorageError};
use crate::bus::{EventBus, Record};

const IDLE_LOOK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
}

pub struct Relay {
    db: Db,
    bus: Arc<dyn EventBus>,
    batch: usize,
}

impl Relay {
    pub fn new(db: Db, bus: Arc<dyn EventBus>, batch: usize) -> Self {
        Relay {
            db,
            bus,
            batch: batch.max(1),
        }
    }

    /// Publishes at most one batch; returns how many rows it published.
    pub async fn publish_batch(&self) -> Result<usize, RelayError> {
        let rows =
            sqlx::query("SELECT id, topic, key, payload, headers FROM outbox ORDER BY id LIMIT $1")
                .bind(self.batch as i64)
                .fetch_all(self.db.reader())
                .await
                .map_err(StorageError::from)?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            ids.push(row.get::<i64, _>(0));
            let headers: String = row.get(4);
            let headers: BTreeMap<String, String> = serde_json::from_str(&headers)
                .map_err(|e| StorageError::Query(format!("corrupt outbox headers: {e}")))?;
            records.push(Record {
                topic: row.get(1),
                key: row.get(2),
                payload: row.get(3),
                headers,
            });
        }
        crate::crash::point("relay.before_publish");
        self.bus.publish(&records).await?;
        crate::crash::point("relay.after_publish");
        for record in &records {
            metrics::counter!("emporium_events_published_total", "topic" => record.topic.clone())
                .increment(1);
        }
        // Delete exactly what was published: with PostgreSQL a lower id can commit after a higher one.
        let placeholders = (1..=ids.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!("DELETE FROM outbox WHERE id IN ({placeholders})");
        let mut delete = sqlx::query(&sql);
        for id in &ids {
            delete = delete.bind(*id);
        }
        delete
            .execute(self.db.writer())
            .await
            .map_err(StorageError::from)?;
        Ok(ids.len())
    }

    /// Publishes until the outbox is empty.
    pub async fn drain(&self) -> Result<usize, RelayError> {
        let mut total = 0;
        loop {
            let n = self.publish_batch().await?;
            total += n;
            if n == 0 {
                return Ok(total);
            }
        }
    }

    /// Runs until `stop` turns true, then publishes what is left (best effort) and returns.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut failures = 0u32;
        loop {
            // Take the wake-up before looking, so a commit in between is not missed.
            let signal = self.db.outbox_signal().notified();
            match self.publish_batch().await {
                Ok(n) if n >= self.batch => {
                    failures = 0;
                    continue;
                }
                Ok(_) => {
                    failures = 0;
                    tokio::select! {
                        _ = signal => {}
                        _ = tokio::time::sleep(IDLE_LOOK) => {}
                        _ = stop.changed() => break,
                    }
                }
                Err(e) => {
                    failures += 1;
                    let delay = Duration::from_millis(50 * 2u64.pow(failures.min(7)))
                        .min(Duration::from_secs(5));
                    tracing::warn!(db = self.db.name(), error = %e, retry_in_ms = delay.as_millis() as u64,
                        "outbox relay cannot publish; events stay in the outbox");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => break,
                    }
                }
            }
            if *stop.borrow() {
                break;
            }
        }
        if let Err(e) = self.drain().await {
            tracing::warn!(db = self.db.name(), error = %e, "outbox left for the next start");
        }
    }
}
