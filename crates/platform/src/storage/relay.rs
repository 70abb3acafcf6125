//! The outbox relay: publishes a database's outbox rows to the bus, in id order, then deletes them.
//!
//! A crash between publish and delete publishes those rows again on restart; consumers' inboxes make
//! that harmless. A crash before publish loses nothing: the rows are still there. The relay wakes on
//! the database's commit signal and also looks every second, for rows left by a crash or by another
//! process.
//!
//! On PostgreSQL every instance of a service runs a relay on the one database. Each batch is read,
//! published and deleted inside a transaction holding an advisory lock, so one relay publishes at a
//! time: two relays never publish the same rows (no duplicates outside crashes) nor overtake each
//! other (per-key order holds; [`super::Tx::emit`] makes per-key id order commit order). The others
//! find the lock taken and look again shortly. That caps one service's publishing at one relay's
//! pace, which is the price of order without a per-key relay.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

use super::{Conn, Db, Dialect, RELAY_LOCK, StorageError, outbox_entry, placeholders, query};
use crate::bus::EventBus;

const IDLE_LOOK: Duration = Duration::from_secs(1);
/// How soon a relay that found another instance's relay at work looks again.
const BUSY_LOOK: Duration = Duration::from_millis(50);

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

    /// Publishes at most one batch; returns how many rows it published (0 also when another
    /// instance's relay is publishing this database's outbox right now).
    pub async fn publish_batch(&self) -> Result<usize, RelayError> {
        Ok(self.try_publish_batch().await?.unwrap_or(0))
    }

    /// `None`: another relay holds this database's relay lock.
    async fn try_publish_batch(&self) -> Result<Option<usize>, RelayError> {
        if self.db.inner.outbox.is_log() {
            // The embedded bus serves this outbox as its log: nothing to publish, nothing to delete.
            return Ok(Some(0));
        }
        match self.db.dialect() {
            Dialect::Sqlite => {
                // One process per file, one relay per process: no one to take turns with. Reading
                // outside the writer keeps the single writer free while the bus is slow.
                let ids = self.publish_from(&mut self.db.reader().await?).await?;
                if !ids.is_empty() {
                    let mut tx = self.db.begin_plain().await?;
                    delete(&mut tx, &ids).await?;
                    tx.commit().await?;
                }
                Ok(Some(ids.len()))
            }
            Dialect::Postgres => {
                let mut tx = self.db.begin_plain().await?;
                let ours: bool = query("SELECT pg_try_advisory_xact_lock($1)")
                    .bind(RELAY_LOCK)
                    .scalar(&mut tx)
                    .await?;
                if !ours {
                    return Ok(None);
                }
                let ids = self.publish_from(&mut tx).await?;
                delete(&mut tx, &ids).await?;
                tx.commit().await?;
                Ok(Some(ids.len()))
            }
        }
    }

    /// Reads the oldest batch through `conn` and publishes it; returns the published rows' ids.
    async fn publish_from(&self, conn: &mut Conn) -> Result<Vec<i64>, RelayError> {
        let rows = query(
            "SELECT id, topic, key, payload, headers, created_at FROM outbox ORDER BY id LIMIT $1",
        )
        .bind(self.batch as i64)
        .fetch_all(conn)
        .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            let entry = outbox_entry(row)?;
            ids.push(entry.id as i64);
            records.push(Arc::unwrap_or_clone(entry.record));
        }
        crate::crash::point("relay.before_publish");
        self.bus.publish(&records).await?;
        crate::crash::point("relay.after_publish");
        for record in &records {
            metrics::counter!("emporium_events_published_total", "topic" => record.topic.clone())
                .increment(1);
        }
        Ok(ids)
    }

    /// Publishes until the outbox is empty (waiting its turn while another relay publishes).
    pub async fn drain(&self) -> Result<usize, RelayError> {
        let mut total = 0;
        loop {
            match self.try_publish_batch().await? {
                Some(0) => return Ok(total),
                Some(n) => total += n,
                None => tokio::time::sleep(BUSY_LOOK).await,
            }
        }
    }

    /// Runs until `stop` turns true, then publishes what is left (best effort) and returns.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut failures = 0u32;
        loop {
            // Take the wake-up before looking, so a commit in between is not missed.
            let signal = self.db.outbox_signal().notified();
            match self.try_publish_batch().await {
                Ok(Some(n)) if n >= self.batch => {
                    failures = 0;
                    continue;
                }
                Ok(None) => {
                    failures = 0;
                    tokio::select! {
                        _ = tokio::time::sleep(BUSY_LOOK) => {}
                        _ = stop.changed() => break,
                    }
                }
                Ok(Some(_)) => {
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

/// Deletes exactly what was published: with PostgreSQL a lower id can commit after a higher one
/// (of another key), so "everything up to the last id" could delete an unpublished row.
async fn delete(conn: &mut Conn, ids: &[i64]) -> Result<(), StorageError> {
    if ids.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "DELETE FROM outbox WHERE id IN ({})",
        placeholders(1, ids.len())
    );
    query(&sql)
        .bind_all(ids.iter().copied())
        .execute(conn)
        .await?;
    Ok(())
}
