//! Service storage: one database per service, migrations, and the two tables that make events
//! reliable — the **outbox** (events written in the same transaction as the state they describe) and
//! the **inbox** (event ids a consumer has applied, written in the same transaction as the effect).
//!
//! The common path is one call each way:
//! - a use case opens [`Db::begin`], changes its tables, calls [`Tx::emit`] for each event and
//!   [`Tx::commit`]s: state and events land together or not at all, and the [`relay`] publishes them;
//! - a consumer implements [`crate::bus::consumer::EventHandler`] and gets a [`Tx`] in which the
//!   event's id is already recorded in the inbox; what it emits carries the event's correlation id and
//!   names it as the cause.
//!
//! Queries use sqlx's `Any` driver and SQL that SQLite and PostgreSQL both accept (`$1` parameters,
//! `ON CONFLICT`, `RETURNING`), so one repository serves both; migrations may differ per dialect.
//!
//! On PostgreSQL several instances of a service share its database, so what SQLite gets for free
//! from its single writer is made explicit there, with advisory locks: migrations run one instance
//! at a time ([`Db::migrate`]), transactions emitting events for one key commit in the order they
//! got their outbox ids ([`Tx::emit`]), and one relay at a time publishes ([`relay`]).

mod multi_row;
pub mod relay;
#[cfg(feature = "conformance")]
pub mod testing;

use std::{collections::HashSet, path::Path, sync::Arc, time::Duration};

use chrono::Utc;
use emporium_events::{Envelope, Event};
use sqlx::{
    Any, AnyConnection, AnyPool, Connection, Executor,
    any::{AnyConnectOptions, AnyPoolOptions},
};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::bus::Record;

pub use multi_row::{MULTI_ROW_SIZES, MultiRow, Value, chunks};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database cannot be reached or is failing: retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A statement was refused (constraint, type, syntax): retrying will not help.
    #[error("database error: {0}")]
    Query(String),
    #[error("migration {version} ({name}) failed: {message}")]
    Migration {
        version: i64,
        name: &'static str,
        message: String,
    },
}

impl StorageError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StorageError::Unavailable(_))
    }
}

impl From<sqlx::Error> for StorageError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if is_unavailable_code(&db.code().unwrap_or_default()) => {
                StorageError::Unavailable(e.to_string())
            }
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_) => StorageError::Unavailable(e.to_string()),
            _ => StorageError::Query(e.to_string()),
        }
    }
}

/// Does this database error code mean the database (not the statement) is in trouble?
///
/// PostgreSQL codes are five characters (SQLSTATE): connection (08), insufficient resources (53),
/// operator intervention (57), system (58), serialization failure and deadlock (40001, 40P01: retry
/// the whole transaction), lock not available (55P03). SQLite codes are numbers whose low byte is the
/// primary code: BUSY 5, LOCKED 6, READONLY 8, IOERR 10, FULL 13, CANTOPEN 14.
fn is_unavailable_code(code: &str) -> bool {
    if code.len() == 5 {
        ["08", "53", "57", "58"]
            .iter()
            .any(|class| code.starts_with(class))
            || matches!(code, "40001" | "40P01" | "55P03")
    } else {
        code.parse::<i64>()
            .is_ok_and(|n| matches!(n & 0xff, 5 | 6 | 8 | 10 | 13 | 14))
    }
}

/// Which SQL dialect a database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// One schema change. `postgres` may differ from `sqlite` where the dialects do.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

impl Migration {
    /// A migration whose SQL both dialects accept.
    pub const fn portable(version: i64, name: &'static str, sql: &'static str) -> Self {
        Migration {
            version,
            name,
            sqlite: sql,
            postgres: sql,
        }
    }
}

/// The platform's own tables, present in every service database. Service migrations start at 100.
const PLATFORM_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "outbox",
        sqlite: "CREATE TABLE outbox (
            id         INTEGER PRIMARY KEY,
            topic      TEXT    NOT NULL,
            key        TEXT    NOT NULL,
            payload    BLOB    NOT NULL,
            headers    TEXT    NOT NULL,
            created_at BIGINT  NOT NULL)",
        postgres: "CREATE TABLE outbox (
            id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            topic      TEXT   NOT NULL,
            key        TEXT   NOT NULL,
            payload    BYTEA  NOT NULL,
            headers    TEXT   NOT NULL,
            created_at BIGINT NOT NULL)",
    },
    Migration::portable(
        2,
        "inbox",
        "CREATE TABLE inbox (
            consumer     TEXT   NOT NULL,
            event_id     TEXT   NOT NULL,
            processed_at BIGINT NOT NULL,
            PRIMARY KEY (consumer, event_id))",
    ),
];

/// PostgreSQL advisory lock keys (any 64-bit numbers, the same in every instance; advisory locks
/// are per database). Migrations and the relay take theirs; emitting locks a hash of the event key,
/// seeded so that it is unlikely to meet the two constants.
const MIGRATION_LOCK: i64 = 0x656d_706f_7269_0001;
pub(crate) const RELAY_LOCK: i64 = 0x656d_706f_7269_0002;
const OUTBOX_KEY_LOCK_SEED: i64 = 0x656d_706f_7269;

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

/// Creates `database` on the server unless it exists. Instances starting together may both try:
/// the loser's "already exists" is success.
async fn create_postgres_database(
    server: &AnyConnectOptions,
    database: &str,
) -> Result<(), StorageError> {
    let mut conn = AnyConnection::connect_with(server).await?;
    let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(database)
        .fetch_optional(&mut conn)
        .await?;
    if exists.is_none() {
        match conn
            .execute(format!("CREATE DATABASE \"{database}\"").as_str())
            .await
        {
            Ok(_) => tracing::info!(database, "created PostgreSQL database"),
            // 42P04 duplicate_database; 23505 when the race is lost inside the catalog.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Err(e) = conn.close().await {
        tracing::debug!(error = %e, "closing the server connection");
    }
    Ok(())
}

/// A service's database. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    name: Arc<str>,
    dialect: Dialect,
    /// SQLite: the file, which must still be there for the database to be healthy.
    file: Option<Arc<Path>>,
    /// SQLite: one connection, so that write transactions queue instead of failing with BUSY.
    /// PostgreSQL: the same pool as `reader`.
    writer: AnyPool,
    reader: AnyPool,
    /// Rung after a commit that wrote outbox rows: wakes the relay at once.
    outbox_signal: Arc<Notify>,
}

impl Db {
    /// Opens (creating if needed) the SQLite database of service `name` at `path`.
    pub async fn open_sqlite(name: &str, path: &Path) -> Result<Db, StorageError> {
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let options: AnyConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| StorageError::Unavailable(e.to_string()))?;
        let pool = |max| {
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(30))
                // sqlx pings a connection when it goes back to the pool (and drops it if broken);
                // pinging it again on the way out is one more round trip to its worker thread per
                // transaction for nothing. See BENCHMARKS.md, "Where the time goes".
                .test_before_acquire(false)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        // See bus::sqlite::sqlite_options for why these settings.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
                             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                        Ok(())
                    })
                })
                .connect_with(options.clone())
        };
        let writer = pool(1).await?;
        let reader = pool(4).await?;
        let db = Db {
            name: name.into(),
            dialect: Dialect::Sqlite,
            file: Some(path.into()),
            writer,
            reader,
            outbox_signal: Arc::new(Notify::new()),
        };
        db.migrate(&[]).await?;
        Ok(db)
    }

    /// Opens the PostgreSQL database of service `name` on the server at `server_url`
    /// (`postgres://user:password@host:port/db`): database `emporium_<name>`, created through the
    /// server URL's own database if missing (the role needs CREATEDB for that), then migrated.
    pub async fn open_postgres(name: &str, server_url: &str) -> Result<Db, StorageError> {
        sqlx::any::install_default_drivers();
        let database = postgres_database_name(name)?;
        let server: AnyConnectOptions = server_url
            .parse()
            .map_err(|e: sqlx::Error| StorageError::Unavailable(e.to_string()))?;
        create_postgres_database(&server, &database).await?;
        let mut options = server;
        options.database_url.set_path(&format!("/{database}"));
        // One pool for reads and writes: PostgreSQL has no single-writer limit to queue behind.
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        let db = Db {
            name: name.into(),
            dialect: Dialect::Postgres,
            file: None,
            writer: pool.clone(),
            reader: pool,
            outbox_signal: Arc::new(Notify::new()),
        };
        db.migrate(&[]).await?;
        Ok(db)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// For reads outside a transaction.
    pub fn reader(&self) -> &AnyPool {
        &self.reader
    }

    /// Applies the platform's migrations and then `service`'s, each once, in version order.
    ///
    /// On PostgreSQL, instances starting together take turns: a session advisory lock is held for
    /// the whole run, so the second finds the first's migrations recorded instead of racing it.
    pub async fn migrate(&self, service: &[Migration]) -> Result<(), StorageError> {
        let mut conn = self.writer.acquire().await?;
        match self.dialect {
            Dialect::Sqlite => self.apply_migrations(&mut conn, service).await,
            Dialect::Postgres => {
                sqlx::query("SELECT 1 FROM pg_advisory_lock($1)")
                    .bind(MIGRATION_LOCK)
                    .execute(&mut *conn)
                    .await?;
                let applied = self.apply_migrations(&mut conn, service).await;
                // Ending the session releases the lock whatever happened above; returned to the
                // pool, a connection whose unlock failed would keep it.
                if let Err(e) = conn.detach().close().await {
                    tracing::debug!(db = %self.name, error = %e, "closing the migration session");
                }
                applied
            }
        }
    }

    async fn apply_migrations(
        &self,
        conn: &mut AnyConnection,
        service: &[Migration],
    ) -> Result<(), StorageError> {
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version    BIGINT PRIMARY KEY,
                name       TEXT   NOT NULL,
                applied_at BIGINT NOT NULL)",
        )
        .await?;
        let mut all: Vec<&Migration> = PLATFORM_MIGRATIONS.iter().chain(service).collect();
        all.sort_by_key(|m| m.version);
        for migration in all {
            let mut tx = conn.begin().await?;
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(migration.version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if done.is_some() {
                continue;
            }
            let sql = match self.dialect {
                Dialect::Sqlite => migration.sqlite,
                Dialect::Postgres => migration.postgres,
            };
            let failed = |e: sqlx::Error| StorageError::Migration {
                version: migration.version,
                name: migration.name,
                message: e.to_string(),
            };
            (&mut *tx).execute(sql).await.map_err(failed)?;
            sqlx::query(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(migration.version)
            .bind(migration.name)
            .bind(Utc::now().timestamp_millis())
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Starts a write transaction on behalf of `context` (who acts, and why).
    pub async fn begin(&self, context: EventContext) -> Result<Tx, StorageError> {
        Ok(Tx {
            tx: self.writer.begin().await?,
            dialect: self.dialect,
            context,
            outbox: Vec::new(),
            deferred: Vec::new(),
            signal: self.outbox_signal.clone(),
        })
    }

    /// What `/health` reports: `SELECT 1` through the writer, and for SQLite, that the file is
    /// still where it was opened (an open connection keeps working on a deleted file, silently
    /// writing data nobody will find again).
    pub async fn check(&self) -> Result<(), StorageError> {
        if let Some(file) = &self.file
            && !file.is_file()
        {
            return Err(StorageError::Unavailable(format!(
                "database file {} is gone",
                file.display()
            )));
        }
        self.writer.execute("SELECT 1").await?;
        Ok(())
    }

    /// Rows waiting in the outbox.
    pub async fn outbox_backlog(&self) -> Result<i64, StorageError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(&self.reader)
            .await?)
    }

    /// How long the oldest row has waited in the outbox (`None` when it is empty). A relay that
    /// cannot publish (the bus is down) shows as an age that keeps growing.
    pub async fn oldest_outbox_age(&self) -> Result<Option<Duration>, StorageError> {
        let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(created_at) FROM outbox")
            .fetch_one(&self.reader)
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
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM inbox WHERE consumer = $1 AND event_id = $2")
                .bind(consumer)
                .bind(event_id.to_string())
                .fetch_optional(&self.reader)
                .await?;
        Ok(found.is_some())
    }

    pub(crate) fn outbox_signal(&self) -> &Notify {
        &self.outbox_signal
    }

    pub(crate) fn writer(&self) -> &AnyPool {
        &self.writer
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// Who causes the events a transaction emits.
#[derive(Debug, Clone)]
pub struct EventContext {
    /// The emitting service (`source` in the envelope).
    pub source: &'static str,
    pub correlation_id: String,
    /// The event being handled, when a consumer emits.
    pub causation_id: Option<Uuid>,
}

impl EventContext {
    /// For a use case started by a request carrying `correlation_id`.
    pub fn request(source: &'static str, correlation_id: impl Into<String>) -> Self {
        EventContext {
            source,
            correlation_id: correlation_id.into(),
            causation_id: None,
        }
    }

    /// For a consumer handling `cause`.
    pub fn caused_by(source: &'static str, cause: &Envelope) -> Self {
        EventContext {
            source,
            correlation_id: cause.correlation_id.clone(),
            causation_id: Some(cause.event_id),
        }
    }
}

static INBOX_INSERT: MultiRow = MultiRow::new(
    "INSERT INTO inbox (consumer, event_id, processed_at) VALUES ",
    0,
    3,
    " ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id",
);

static OUTBOX_INSERT: MultiRow = MultiRow::new(
    "INSERT INTO outbox (topic, key, payload, headers, created_at) VALUES ",
    0,
    5,
    "",
);

/// PostgreSQL: takes the transaction-scoped advisory lock of each key (see [`Tx::emit`]) in the
/// order of the rows' ordinals (`(key, ordinal)` rows). The sort is in the inner query and the
/// locking in the outer one, which keeps its input's order; the lock function is volatile, so it
/// is neither dropped nor moved before the sort.
static OUTBOX_KEY_LOCKS: MultiRow = MultiRow::new(
    "SELECT 1 FROM (SELECT pg_advisory_xact_lock(hashtextextended(key, $1)) FROM (
       SELECT key FROM (VALUES ",
    1,
    2,
    ") AS keys (key, ordinal) ORDER BY ordinal) AS sorted) AS locked",
);

/// An event emitted in a transaction, written to the outbox at commit.
struct OutboxRow {
    topic: String,
    key: String,
    payload: Vec<u8>,
    headers: String,
    created_at: i64,
}

/// A write transaction that can emit events. Dropping it without [`Tx::commit`] rolls back.
pub struct Tx {
    tx: sqlx::Transaction<'static, Any>,
    dialect: Dialect,
    context: EventContext,
    /// Emitted events, written to the outbox together at commit.
    outbox: Vec<OutboxRow>,
    /// Rows given to [`Tx::insert_at_commit`], by statement, in the order each statement got its
    /// first row.
    deferred: Vec<(&'static MultiRow, Vec<Value>)>,
    signal: Arc<Notify>,
}

impl Tx {
    /// The connection, for the service's own statements.
    pub fn conn(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }

    pub fn context(&self) -> &EventContext {
        &self.context
    }

    /// Emits `event` in this transaction: it reaches the outbox at [`Tx::commit`], with everything
    /// else the transaction emitted (a few multi-row statements of [`MULTI_ROW_SIZES`] rows), and so
    /// is published if and only if the transaction commits. Returns the envelope that will be published.
    pub fn emit(&mut self, event: Event) -> Result<Envelope, StorageError> {
        let envelope = Envelope::new(
            self.context.source,
            &self.context.correlation_id,
            self.context.causation_id,
            event,
        );
        let record =
            Record::from_envelope(&envelope).map_err(|e| StorageError::Query(e.to_string()))?;
        let headers = serde_json::to_string(&record.headers)
            .map_err(|e| StorageError::Query(e.to_string()))?;
        self.outbox.push(OutboxRow {
            topic: record.topic,
            key: record.key,
            payload: record.payload,
            headers,
            created_at: Utc::now().timestamp_millis(),
        });
        Ok(envelope)
    }

    /// Inserts `row` (a value per column of `statement`) at [`Tx::commit`], together with every
    /// other row the transaction gave `statement`: a few multi-row statements ([`MULTI_ROW_SIZES`]
    /// rows each) instead of one per row. For rows the transaction does not read back, such as an
    /// index: until the commit (or [`Tx::insert_pending_rows`]) they are not in the table, and an
    /// error in them is the commit's (a consumer cannot tell which event's row failed: it retries
    /// the batch event by event, and the event it first blamed loses an attempt).
    /// One statement's rows must not update one row twice (PostgreSQL refuses `ON CONFLICT DO
    /// UPDATE` on a row twice in a statement); `ON CONFLICT DO NOTHING` is fine.
    pub fn insert_at_commit(
        &mut self,
        statement: &'static MultiRow,
        row: Vec<Value>,
    ) -> Result<(), StorageError> {
        if statement.leading() != 0 || statement.columns() == 0 || row.len() != statement.columns()
        {
            return Err(StorageError::Query(format!(
                "{} values for a statement of {} columns per row and {} leading parameters",
                row.len(),
                statement.columns(),
                statement.leading()
            )));
        }
        match self
            .deferred
            .iter_mut()
            .find(|(known, _)| std::ptr::eq(*known, statement))
        {
            Some((_, values)) => values.extend(row),
            None => self.deferred.push((statement, row)),
        }
        Ok(())
    }

    /// Writes the rows given to [`Tx::insert_at_commit`] so far, now: for a transaction that must
    /// read them back before it commits.
    pub async fn insert_pending_rows(&mut self) -> Result<(), StorageError> {
        for (statement, values) in std::mem::take(&mut self.deferred) {
            let rows: Vec<&[Value]> = values.chunks(statement.columns()).collect();
            statement
                .execute_for(&mut *self.tx, &rows, |insert, row| {
                    row.iter().fold(insert, |insert, value| match value {
                        Value::Int(v) => insert.bind(*v),
                        Value::Text(v) => insert.bind(v.as_deref()),
                        Value::Bytes(v) => insert.bind(v.as_deref()),
                    })
                })
                .await?;
        }
        Ok(())
    }

    /// Writes the emitted events to the outbox, in emission order.
    async fn write_outbox(&mut self) -> Result<(), StorageError> {
        if self.dialect == Dialect::Postgres {
            // PostgreSQL hands out outbox ids at insert, not at commit, and the relay publishes in
            // id order: two transactions emitting for one key could commit out of id order and the
            // relay publish the later event first. Holding a lock on the key from the insert until
            // commit makes the second wait for the first, so per-key id order is commit order.
            // (SQLite has one writer: its transactions never overlap.) Every transaction locks
            // its keys in one order, the keys' own, so that two cannot each wait for the other.
            let mut keys: Vec<&str> = self.outbox.iter().map(|row| row.key.as_str()).collect();
            keys.sort_unstable();
            keys.dedup();
            let mut ordinal = 0i64;
            for chunk in chunks(&keys) {
                let mut lock =
                    sqlx::query(OUTBOX_KEY_LOCKS.sql(chunk.len())).bind(OUTBOX_KEY_LOCK_SEED);
                for key in chunk {
                    ordinal += 1;
                    lock = lock.bind(*key).bind(ordinal);
                }
                lock.execute(&mut *self.tx).await?;
            }
        }
        let rows = std::mem::take(&mut self.outbox);
        OUTBOX_INSERT
            .execute_for(&mut *self.tx, &rows, |insert, row| {
                insert
                    .bind(row.topic.as_str())
                    .bind(row.key.as_str())
                    .bind(row.payload.as_slice())
                    .bind(row.headers.as_str())
                    .bind(row.created_at)
            })
            .await?;
        Ok(())
    }

    /// Records that `consumer` applied `event_id`. Returns `false` if it already had: the caller must
    /// then skip the event.
    pub async fn record_in_inbox(
        &mut self,
        consumer: &str,
        event_id: Uuid,
    ) -> Result<bool, StorageError> {
        let inserted = sqlx::query(
            "INSERT INTO inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3)
             ON CONFLICT (consumer, event_id) DO NOTHING",
        )
        .bind(consumer)
        .bind(event_id.to_string())
        .bind(Utc::now().timestamp_millis())
        .execute(&mut *self.tx)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// Records that `consumer` applied each of `event_ids`, with one statement per up to 64 ids
    /// instead of one per id. Returns the ids recorded now; the others it had already (the caller
    /// must skip those), and an id given twice is returned once.
    pub async fn record_all_in_inbox(
        &mut self,
        consumer: &str,
        event_ids: &[Uuid],
    ) -> Result<HashSet<Uuid>, StorageError> {
        let mut ids: Vec<Uuid> = event_ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let now = Utc::now().timestamp_millis();
        let mut recorded = HashSet::with_capacity(ids.len());
        for chunk in chunks(&ids) {
            let mut insert = sqlx::query_scalar::<_, String>(INBOX_INSERT.sql(chunk.len()));
            for id in chunk {
                insert = insert.bind(consumer).bind(id.to_string()).bind(now);
            }
            for id in insert.fetch_all(&mut *self.tx).await? {
                recorded.insert(
                    Uuid::parse_str(&id)
                        .map_err(|e| StorageError::Query(format!("inbox event id {id}: {e}")))?,
                );
            }
        }
        Ok(recorded)
    }

    /// Sets the context for the next emitted events (a consumer batch moves from event to event).
    pub fn set_context(&mut self, context: EventContext) {
        self.context = context;
    }

    /// Commits state, the rows of [`Tx::insert_at_commit`] and events together, then wakes the
    /// relay.
    pub async fn commit(mut self) -> Result<(), StorageError> {
        self.insert_pending_rows().await?;
        let emitted = !self.outbox.is_empty();
        if emitted {
            self.write_outbox().await?;
        }
        self.tx.commit().await?;
        if emitted {
            crate::crash::point("outbox.after_commit");
            self.signal.notify_one();
        }
        Ok(())
    }
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
        // The writer pool has one connection: cap its file size.
        sqlx::query("PRAGMA max_page_count = 40")
            .execute(db.writer())
            .await
            .unwrap();
        let mut error = None;
        for _ in 0..100 {
            if let Err(e) = sqlx::query("INSERT INTO blobs (b) VALUES ($1)")
                .bind(vec![7u8; 8192])
                .execute(db.writer())
                .await
            {
                error = Some(StorageError::from(e));
                break;
            }
        }
        let error = error.expect("the database filled up");
        assert!(error.is_unavailable(), "{error}");
    }

    #[test]
    fn error_codes_are_classified_by_dialect() {
        for code in [
            "5", "261", "517", "8", "1032", "10", "3850", "13", "14", "08006", "53100", "57P01",
            "40001", "40P01", "55P03",
        ] {
            assert!(
                is_unavailable_code(code),
                "{code} means the database is in trouble"
            );
        }
        for code in ["19", "2067", "1", "23505", "42P01", "22P02"] {
            assert!(
                !is_unavailable_code(code),
                "{code} is the statement's fault"
            );
        }
    }
}
