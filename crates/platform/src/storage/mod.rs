//! Service storage: the storage port, its two adapters, and the two tables that make events
//! reliable — the **outbox** (events written in the same transaction as the state they describe)
//! and the **inbox** (event ids a consumer has applied, written in the same transaction as the
//! effect).
//!
//! The common path is one call each way:
//! - a use case opens [`Db::begin`], changes its tables through [`Tx::conn`], calls [`Tx::emit`]
//!   for each event and [`Tx::commit`]s: state and events land together or not at all, and the
//!   [`relay`] publishes them;
//! - a consumer implements [`crate::bus::consumer::EventHandler`] and gets a [`Tx`] in which the
//!   event's id is already recorded in the inbox; what it emits carries the event's correlation id and
//!   names it as the cause.
//!
//! Repositories write [`query`]s in SQL that SQLite and PostgreSQL both accept (`$1` parameters,
//! `ON CONFLICT`, `RETURNING`) and read [`Row`]s into typed values; they never see a driver.
//! Migrations may differ per dialect. The adapters:
//! - **SQLite** on rusqlite ([`sqlite`]): statements run inline with cached prepared statements,
//!   one writer per database behind an async mutex, a few readers, checkpoints on a thread of
//!   their own;
//! - **PostgreSQL** on sqlx ([`postgres`]): one pool. Several instances of a service share its
//!   database, so what SQLite gets for free from its single writer is made explicit there, with
//!   advisory locks: migrations run one instance at a time ([`Db::migrate`]), transactions
//!   emitting events for one key commit in the order they got their outbox ids ([`Tx::emit`]),
//!   and one relay at a time publishes ([`relay`]).
//!
//! What both adapters promise is checked by one suite, [`conformance`], run on each.

#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
pub mod feed;
mod migrate;
mod multi_row;
mod postgres;
mod query;
pub mod relay;
mod sqlite;
#[cfg(feature = "conformance")]
pub mod testing;
mod tx;
mod value;

use std::{path::Path, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::bus::Record;
use feed::{Entry, Feed, Outbox};

pub use error::StorageError;
pub use migrate::Migration;
pub use multi_row::{MULTI_ROW_SIZES, MultiRow, chunks};
pub use query::{Conn, Query, placeholders, query};
pub use tx::{EventContext, Tx};
pub use value::{ColumnIndex, FromValue, Row, Value};

use query::ConnInner;

/// PostgreSQL advisory lock keys (any 64-bit numbers, the same in every instance; advisory locks
/// are per database). Migrations and the relay take theirs; emitting locks a hash of the event key,
/// seeded so that it is unlikely to meet the two constants.
const MIGRATION_LOCK: i64 = 0x656d_706f_7269_0001;
pub(crate) const RELAY_LOCK: i64 = 0x656d_706f_7269_0002;

/// Which SQL dialect a database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// `emporium_<name>`, the database of service `name` on a PostgreSQL server. Names are plain
/// lowercase identifiers, so the database name never needs quoting rules beyond double quotes.
fn postgres_database_name(name: &str) -> Result<String, StorageError> {
    let plain = !name.is_empty()
        && name.len() <= 54
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !plain {
        return Err(StorageError::Query(format!(
            "service name {name:?} cannot name a PostgreSQL database: use 1 to 54 of a-z, 0-9, _"
        )));
    }
    Ok(format!("emporium_{name}"))
}

/// A service's database. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    backend: Backend,
    outbox: Arc<Outbox>,
}

enum Backend {
    Sqlite(sqlite::Database),
    Postgres(postgres::Database),
}

impl Db {
    /// Opens (creating if needed) the SQLite database of service `name` at `path`.
    pub async fn open_sqlite(name: &str, path: &Path) -> Result<Db, StorageError> {
        let db = Db::new(name, Backend::Sqlite(sqlite::Database::open(path)?));
        db.migrate(&[]).await?;
        Ok(db)
    }

    /// Opens the PostgreSQL database of service `name` on the server at `server_url`
    /// (`postgres://user:password@host:port/db`): database `emporium_<name>`, created through the
    /// server URL's own database if missing (the role needs CREATEDB for that), then migrated.
    pub async fn open_postgres(name: &str, server_url: &str) -> Result<Db, StorageError> {
        let database = postgres_database_name(name)?;
        let db = Db::new(
            name,
            Backend::Postgres(postgres::Database::open(server_url, &database).await?),
        );
        db.migrate(&[]).await?;
        Ok(db)
    }

    fn new(name: &str, backend: Backend) -> Db {
        Db {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                backend,
                outbox: Arc::new(Outbox::new()),
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn dialect(&self) -> Dialect {
        match self.inner.backend {
            Backend::Sqlite(_) => Dialect::Sqlite,
            Backend::Postgres(_) => Dialect::Postgres,
        }
    }

    /// A connection for reads outside a transaction (it goes back to its pool when dropped).
    pub async fn reader(&self) -> Result<Conn, StorageError> {
        let inner = match &self.inner.backend {
            Backend::Sqlite(db) => ConnInner::Sqlite(db.reader()?),
            Backend::Postgres(db) => ConnInner::Postgres(db.connection().await?),
        };
        Ok(Conn { inner })
    }

    /// A transaction without events, for the platform's own bookkeeping (the relay's deletes).
    pub(crate) async fn begin_plain(&self) -> Result<Conn, StorageError> {
        let inner = match &self.inner.backend {
            Backend::Sqlite(db) => ConnInner::Sqlite(db.begin().await?),
            Backend::Postgres(db) => ConnInner::Postgres(db.begin().await?),
        };
        Ok(Conn { inner })
    }

    /// Starts a write transaction on behalf of `context` (who acts, and why).
    pub async fn begin(&self, context: EventContext) -> Result<Tx, StorageError> {
        Ok(Tx::new(
            self.begin_plain().await?,
            self.dialect(),
            context,
            self.inner.outbox.clone(),
        ))
    }

    /// Applies the platform's migrations and then `service`'s, each once, in version order.
    ///
    /// On PostgreSQL, instances starting together take turns: a session advisory lock is held for
    /// the whole run, so the second finds the first's migrations recorded instead of racing it.
    pub async fn migrate(&self, service: &[Migration]) -> Result<(), StorageError> {
        match &self.inner.backend {
            Backend::Sqlite(db) => {
                let mut conn = Conn {
                    inner: ConnInner::Sqlite(db.writer().await),
                };
                migrate::apply(&mut conn, Dialect::Sqlite, service).await
            }
            Backend::Postgres(db) => {
                let mut conn = Conn {
                    inner: ConnInner::Postgres(db.detached().await?),
                };
                query("SELECT 1 FROM pg_advisory_lock($1)")
                    .bind(MIGRATION_LOCK)
                    .execute(&mut conn)
                    .await?;
                let applied = migrate::apply(&mut conn, Dialect::Postgres, service).await;
                // Ending the session releases the lock whatever happened above.
                if let ConnInner::Postgres(handle) = &mut conn.inner {
                    handle.close().await;
                }
                applied
            }
        }
    }

    /// What `/health` reports: `SELECT 1`, and for SQLite, that the file is still where it was
    /// opened (an open connection keeps working on a deleted file, silently writing data nobody
    /// will find again).
    pub async fn check(&self) -> Result<(), StorageError> {
        if let Backend::Sqlite(db) = &self.inner.backend
            && !db.path().is_file()
        {
            return Err(StorageError::Unavailable(format!(
                "database file {} is gone",
                db.path().display()
            )));
        }
        query("SELECT 1").execute(&mut self.reader().await?).await?;
        Ok(())
    }

    /// Rows waiting in the outbox for a relay (none when the outbox is served as a log: a row is
    /// published when it commits).
    pub async fn outbox_backlog(&self) -> Result<i64, StorageError> {
        if self.inner.outbox.is_log() {
            return Ok(0);
        }
        query("SELECT COUNT(*) FROM outbox")
            .scalar(&mut self.reader().await?)
            .await
    }

    /// How long the oldest row has waited in the outbox (`None` when it is empty). A relay that
    /// cannot publish (the bus is down) shows as an age that keeps growing.
    pub async fn oldest_outbox_age(&self) -> Result<Option<Duration>, StorageError> {
        if self.inner.outbox.is_log() {
            return Ok(None);
        }
        let oldest: Option<i64> = query("SELECT MIN(created_at) FROM outbox")
            .scalar(&mut self.reader().await?)
            .await?;
        Ok(oldest.map(|created_at| {
            let age = Utc::now().timestamp_millis().saturating_sub(created_at);
            Duration::from_millis(u64::try_from(age).unwrap_or(0))
        }))
    }

    /// Has `consumer` applied the event with this id?
    pub async fn inbox_contains(
        &self,
        consumer: &str,
        event_id: Uuid,
    ) -> Result<bool, StorageError> {
        let found: Option<i64> = query("SELECT 1 FROM inbox WHERE consumer = $1 AND event_id = $2")
            .bind(consumer)
            .bind(event_id)
            .scalar_optional(&mut self.reader().await?)
            .await?;
        Ok(found.is_some())
    }

    /// Whether the embedded bus serves this outbox as its log (no relay must run on it).
    pub fn is_outbox_log(&self) -> bool {
        self.inner.outbox.is_log()
    }

    pub(crate) fn outbox_signal(&self) -> &tokio::sync::Notify {
        &self.inner.outbox.signal
    }

    /// Serves this (SQLite) database's outbox as a log from now on (the embedded bus): rows are
    /// kept, each commit's rows reach [`Db::outbox_feed`], and no relay must run on it.
    pub(crate) async fn serve_outbox_as_log(&self) -> Result<(), StorageError> {
        if self.dialect() != Dialect::Sqlite {
            return Err(StorageError::Query(format!(
                "the outbox of {} is on PostgreSQL: a relay publishes it",
                self.name()
            )));
        }
        self.inner.outbox.serve_as_log();
        self.look_at_outbox_end().await
    }

    /// Moves the feed's end to the table's (rows committed without passing the feed: another
    /// process, or a commit whose task stopped before it could tell).
    pub(crate) async fn look_at_outbox_end(&self) -> Result<(), StorageError> {
        let last: i64 = query("SELECT COALESCE(MAX(id), 0) FROM outbox")
            .scalar(&mut self.reader().await?)
            .await?;
        self.inner.outbox.feed.advance_to(last as u64 + 1);
        Ok(())
    }

    pub(crate) fn outbox_feed(&self) -> &Feed {
        &self.inner.outbox.feed
    }

    /// Outbox rows from id `from` on, at most `limit`, in id order: from memory when the feed
    /// still holds them.
    pub(crate) async fn read_outbox(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Entry>>, StorageError> {
        if let Some(entries) = self.inner.outbox.feed.read_tail(from, limit) {
            return Ok(entries);
        }
        let rows = query(
            "SELECT id, topic, key, payload, headers, created_at FROM outbox
             WHERE id >= $1 ORDER BY id LIMIT $2",
        )
        .bind(from as i64)
        .bind(limit as i64)
        .fetch_all(&mut self.reader().await?)
        .await?;
        rows.iter()
            .map(|row| outbox_entry(row).map(Arc::new))
            .collect()
    }

    /// Closes the pools (PostgreSQL). SQLite's connections close when the last clone of this
    /// `Db` is dropped, after a last checkpoint.
    pub async fn close(&self) {
        if let Backend::Postgres(db) = &self.inner.backend {
            db.close().await;
        }
    }
}

/// An outbox row read with `SELECT id, topic, key, payload, headers, created_at`.
pub(crate) fn outbox_entry(row: &Row) -> Result<Entry, StorageError> {
    let headers: String = row.get(4)?;
    Ok(Entry {
        id: row.get::<i64>(0)? as u64,
        created_at: DateTime::<Utc>::from_timestamp_millis(row.get(5)?).unwrap_or_default(),
        record: Arc::new(Record {
            topic: row.get(1)?,
            key: row.get(2)?,
            payload: row.get(3)?,
            headers: serde_json::from_str(&headers)
                .map_err(|e| StorageError::Query(format!("corrupt outbox headers: {e}")))?,
        }),
        envelope: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_disk_is_unavailability_not_a_bad_event() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite("full", &dir.path().join("full.db"))
            .await
            .unwrap();
        db.migrate(&[Migration::portable(
            100,
            "blobs",
            "CREATE TABLE blobs (b BLOB)",
        )])
        .await
        .unwrap();
        let mut error = None;
        for _ in 0..100 {
            let mut tx = db.begin_plain().await.unwrap();
            // Per connection: cap the writer's file size.
            tx.execute_batch("PRAGMA max_page_count = 40")
                .await
                .unwrap();
            let inserted = query("INSERT INTO blobs (b) VALUES ($1)")
                .bind(vec![7u8; 8192])
                .execute(&mut tx)
                .await;
            match inserted {
                Ok(_) => tx.commit().await.unwrap(),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let error = error.expect("the database filled up");
        assert!(error.is_unavailable(), "{error}");
    }
}
