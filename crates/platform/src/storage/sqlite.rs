//! The SQLite adapter, on rusqlite: statements run inline on the calling thread with cached
//! prepared statements (microseconds each), never handed to another thread.
//!
//! - **One writer per database**, behind an async mutex: a write transaction takes it for its whole
//!   length (`BEGIN IMMEDIATE` … `COMMIT`), and since every statement inside runs without waiting,
//!   no other task's work ever sits inside another's transaction. Transactions queue on the mutex,
//!   in arrival order, instead of failing with `SQLITE_BUSY`.
//! - **Readers**: a few connections kept for queries outside transactions; WAL lets them read while
//!   the writer writes.
//! - **Checkpoints off the writer**: the writer never checkpoints (`wal_autocheckpoint = 0`); a
//!   background thread does, `PASSIVE` (it never waits for the writer nor makes it wait), every
//!   [`CHECKPOINT_EVERY`]. A commit that had to copy the WAL into the database file itself was what
//!   set the placement tail (docs/BENCHMARKS.md).
//!
//! See docs/adr/0008-storage-port.md for the choices and what they were measured against.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use rusqlite::{
    Connection, OpenFlags,
    types::{ToSqlOutput, ValueRef},
};
use tokio::sync::OwnedMutexGuard;

use super::{Row, StorageError, Value, query::brief};

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// WAL frames (pages) past which the checkpointer holds the writer to let the WAL start over:
/// SQLite's own automatic checkpoint threshold.
const WAL_RESTART_FRAMES: i64 = 1000;
/// Bytes a WAL that grew larger is cut back to when it starts over.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;
/// Prepared statements kept per connection (each service has a few dozen).
const STATEMENT_CACHE: usize = 128;
/// How long a write transaction waits for another process's write lock before giving up.
const BUSY_WAIT: Duration = Duration::from_secs(10);
const BUSY_RETRY: Duration = Duration::from_millis(10);
/// How long a statement may block its thread on a lock in SQLite's busy handler: short, because
/// that thread is an async runtime's (the writer's waits happen in [`Database::begin`], asleep).
const BUSY_TIMEOUT: Duration = Duration::from_millis(100);
/// Reader connections kept open when idle.
const IDLE_READERS: usize = 4;

/// Page cache per connection, KiB (SQLite's default is 2,000). The writer's holds the pages every
/// transaction touches; readers mostly do point lookups. (Smaller ones saved ~16 MB of the peak:
/// docs/BENCHMARKS.md.)
const WRITER_CACHE_KIB: u32 = 2048;
const READER_CACHE_KIB: u32 = 512;

pub(super) struct Database {
    path: PathBuf,
    writer: Arc<tokio::sync::Mutex<Connection>>,
    readers: Arc<ReaderPool>,
    /// Dropped with the database: the checkpointer then does a last checkpoint and stops.
    _checkpointer: mpsc::Sender<()>,
}

impl Database {
    pub(super) fn open(path: &Path) -> Result<Database, StorageError> {
        let writer = open_connection(path, WRITER_CACHE_KIB, Create::Yes)?;
        // The database is in WAL mode for good once set; the writer sets it first.
        let mode: String = writer
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StorageError::Unavailable(format!(
                "{} cannot use a write-ahead log (journal mode {mode})",
                path.display()
            )));
        }
        writer
            .execute_batch(&format!(
                "PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {};",
                WAL_SIZE_LIMIT
            ))
            .map_err(error)?;
        // The writer never waits in SQLite's busy handler (on a runtime thread): `begin` retries
        // asleep instead, and inside a write transaction WAL mode needs no further lock.
        writer.busy_timeout(Duration::ZERO).map_err(error)?;
        let writer = Arc::new(tokio::sync::Mutex::new(writer));
        let checkpointer = checkpointer(path, writer.clone())?;
        Ok(Database {
            path: path.to_owned(),
            writer,
            readers: Arc::new(ReaderPool {
                path: path.to_owned(),
                idle: Mutex::new(Vec::new()),
            }),
            _checkpointer: checkpointer,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The writer, for a transaction (`BEGIN IMMEDIATE` is issued here; dropping the handle
    /// without committing rolls back).
    ///
    /// Another process holding the database's write lock (an operator's `sqlite3` shell, a
    /// backup) makes `BEGIN IMMEDIATE` busy: it is retried here, asleep, for up to [`BUSY_WAIT`]
    /// (then [`StorageError::Unavailable`]) instead of blocking the thread in SQLite's busy
    /// handler, so the rest of the process runs on meanwhile.
    pub(super) async fn begin(&self) -> Result<Handle, StorageError> {
        let guard = self.writer.clone().lock_owned().await;
        if !guard.is_autocommit() {
            // A transaction whose end failed (its ROLLBACK or COMMIT errored) must not swallow
            // this one: every BEGIN would fail until it ends.
            guard.execute_batch("ROLLBACK").map_err(error)?;
        }
        let deadline = tokio::time::Instant::now() + BUSY_WAIT;
        loop {
            match guard.execute_batch("BEGIN IMMEDIATE") {
                Ok(()) => return Ok(Handle::Tx(WriteTx { guard, open: true })),
                Err(e) if is_busy(&e) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(BUSY_RETRY).await;
                }
                Err(e) => return Err(error(e)),
            }
        }
    }

    /// The writer outside a transaction (migrations run their own).
    pub(super) async fn writer(&self) -> Handle {
        Handle::Writer(self.writer.clone().lock_owned().await)
    }

    pub(super) fn reader(&self) -> Result<Handle, StorageError> {
        Ok(Handle::Reader(self.readers.acquire()?))
    }
}

/// Whether opening may create the file: only the writer's first open does, so that a reader or the
/// checkpointer finding the file deleted fails (and `/health` says so) instead of starting an
/// empty database beside the one the writer still holds.
#[derive(PartialEq)]
enum Create {
    Yes,
    No,
}

fn open_connection(
    path: &Path,
    cache_kib: u32,
    create: Create,
) -> Result<Connection, StorageError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    if create == Create::Yes {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags).map_err(error)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.busy_timeout(BUSY_TIMEOUT).map_err(error)?;
    // NORMAL in WAL mode: a commit is durable against a process crash (kill -9) at once, and
    // against power loss from the next checkpoint; no fsync per commit.
    // Temporary tables, indices and statement journals in memory: as files, each is created and
    // deleted again, which costs more than the work it holds.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -{cache_kib};"
    ))
    .map_err(error)?;
    Ok(conn)
}

/// Starts the thread that checkpoints `path`'s WAL; it stops, after a last checkpoint, when the
/// returned sender is dropped.
///
/// A checkpoint beside a busy writer never catches up with it: the WAL can only start over once
/// every frame in it is copied, and a writer appending all the time always has new ones, so the
/// WAL would grow without end (hundreds of MB in seconds at the max rate, with every new block
/// zeroed by the file system and every page lookup searching a bigger index). So when a
/// checkpoint leaves more than [`WAL_RESTART_FRAMES`] frames in the WAL, the checkpointer takes
/// the writer for a second one, which copies only what was appended meanwhile; the next write
/// transaction then starts the WAL over.
fn checkpointer(
    path: &Path,
    writer: Arc<tokio::sync::Mutex<Connection>>,
) -> Result<mpsc::Sender<()>, StorageError> {
    let conn = open_connection(path, 64, Create::No)?;
    let (stop, stopped) = mpsc::channel::<()>();
    let name = format!(
        "checkpoint-{}",
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            loop {
                let last = match stopped.recv_timeout(CHECKPOINT_EVERY) {
                    Err(mpsc::RecvTimeoutError::Timeout) | Ok(()) => false,
                    Err(mpsc::RecvTimeoutError::Disconnected) => true,
                };
                crate::crash::point("storage.checkpoint");
                if checkpoint(&conn).is_some_and(|frames| frames > WAL_RESTART_FRAMES) {
                    let _writer = writer.blocking_lock();
                    checkpoint(&conn);
                }
                if last {
                    break;
                }
            }
        })
        .map_err(|e| StorageError::Unavailable(format!("cannot start the checkpointer: {e}")))?;
    Ok(stop)
}

/// Copies what it can of the WAL into the database file without waiting for anyone; returns how
/// many frames the WAL holds (`None` if the checkpoint failed).
fn checkpoint(conn: &Connection) -> Option<i64> {
    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        row.get::<_, i64>(1)
    }) {
        Ok(frames) => Some(frames),
        Err(e) => {
            tracing::debug!(error = %e, "checkpoint");
            None
        }
    }
}

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    fn acquire(self: &Arc<Self>) -> Result<PooledReader, StorageError> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let conn = open_connection(&self.path, READER_CACHE_KIB, Create::No)?;
                conn.execute_batch("PRAGMA query_only = ON;")
                    .map_err(error)?;
                conn
            }
        };
        Ok(PooledReader {
            conn: Some(conn),
            pool: self.clone(),
        })
    }
}

pub(super) struct PooledReader {
    conn: Option<Connection>,
    pool: Arc<ReaderPool>,
}

impl Drop for PooledReader {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && let Ok(mut idle) = self.pool.idle.lock()
            && idle.len() < IDLE_READERS
        {
            idle.push(conn);
        }
    }
}

/// The writer inside a transaction: rolled back on drop unless committed.
pub(super) struct WriteTx {
    guard: OwnedMutexGuard<Connection>,
    open: bool,
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if self.open
            && let Err(e) = self.guard.execute_batch("ROLLBACK")
        {
            // The connection is unusable if its transaction cannot end: a later BEGIN fails and
            // says so, which is better than going on inside this one.
            tracing::warn!(error = %e, "rolling back an abandoned transaction");
        }
    }
}

pub(super) enum Handle {
    Tx(WriteTx),
    Writer(OwnedMutexGuard<Connection>),
    Reader(PooledReader),
}

impl Handle {
    fn conn(&self) -> Result<&Connection, StorageError> {
        match self {
            Handle::Tx(tx) => Ok(&tx.guard),
            Handle::Writer(guard) => Ok(guard),
            Handle::Reader(reader) => reader
                .conn
                .as_ref()
                .ok_or_else(|| StorageError::Unavailable("reader connection is gone".into())),
        }
    }

    pub(super) fn commit(&mut self) -> Result<(), StorageError> {
        match self {
            Handle::Tx(tx) if tx.open => {
                tx.guard.execute_batch("COMMIT").map_err(error)?;
                tx.open = false;
                Ok(())
            }
            _ => Err(StorageError::Query(
                "commit outside a transaction".to_owned(),
            )),
        }
    }

    pub(super) fn execute_batch(&mut self, sql: &str) -> Result<(), StorageError> {
        self.conn()?.execute_batch(sql).map_err(error)
    }

    pub(super) fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StorageError> {
        let conn = self.conn()?;
        run(conn, sql, params, 0, &mut Vec::new())?;
        Ok(conn.changes())
    }

    /// Up to `max` rows of `sql`'s result.
    pub(super) fn fetch(
        &mut self,
        sql: &str,
        params: &[Value],
        max: usize,
    ) -> Result<Vec<Row>, StorageError> {
        let mut rows = Vec::new();
        run(self.conn()?, sql, params, max, &mut rows)?;
        Ok(rows)
    }
}

/// Runs `sql` with `params`, keeping up to `max` of its rows in `out`. A DML statement with
/// `RETURNING` makes all its changes at its first step, so stopping early changes nothing.
fn run(
    conn: &Connection,
    sql: &str,
    params: &[Value],
    max: usize,
    out: &mut Vec<Row>,
) -> Result<(), StorageError> {
    let mut statement = conn.prepare_cached(&numbered(sql)).map_err(error)?;
    // `?N` is parameter N (`numbered`), so parameter N takes the N-th value.
    let count = statement.parameter_count();
    if count != params.len() {
        return Err(StorageError::Query(format!(
            "{} takes {count} parameters but {} values were bound",
            brief(sql),
            params.len()
        )));
    }
    for (index, value) in params.iter().enumerate() {
        statement
            .raw_bind_parameter(index + 1, to_sql(value))
            .map_err(error)?;
    }
    let columns: Option<Arc<[String]>> = (max > 0 && statement.column_count() > 0).then(|| {
        statement
            .column_names()
            .into_iter()
            .map(str::to_owned)
            .collect()
    });
    let width = statement.column_count();
    let mut rows = statement.raw_query();
    while let Some(row) = rows.next().map_err(error)? {
        let Some(columns) = &columns else {
            continue;
        };
        if out.len() >= max {
            break;
        }
        let mut values = Vec::with_capacity(width);
        for i in 0..width {
            values.push(from_sql(row.get_ref(i).map_err(error)?)?);
        }
        out.push(Row::new(columns.clone(), values));
    }
    Ok(())
}

/// `sql` with every `$N` parameter written `?N`, which SQLite binds at index N (it numbers `$N`,
/// a named parameter to it, by first appearance, and finding each name's index costs a search of
/// the statement's names per parameter). Quoted text, quoted names and comments are left alone.
fn numbered(sql: &str) -> std::borrow::Cow<'_, str> {
    if !sql.contains('$') {
        return std::borrow::Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(c) = rest.chars().next() {
        let skipped = super::query::skip_non_code(rest);
        if skipped > 0 {
            out.push_str(&rest[..skipped]);
            rest = &rest[skipped..];
        } else if c == '$' && rest[1..].starts_with(|d: char| d.is_ascii_digit()) {
            out.push('?');
            rest = &rest[1..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    std::borrow::Cow::Owned(out)
}

fn to_sql(value: &Value) -> ToSqlOutput<'_> {
    ToSqlOutput::Borrowed(match value {
        Value::Int(Some(v)) => ValueRef::Integer(*v),
        Value::Real(Some(v)) => ValueRef::Real(*v),
        Value::Text(Some(v)) => ValueRef::Text(v.as_bytes()),
        Value::Bytes(Some(v)) => ValueRef::Blob(v),
        Value::Int(None) | Value::Real(None) | Value::Text(None) | Value::Bytes(None) => {
            ValueRef::Null
        }
    })
}

fn from_sql(value: ValueRef<'_>) -> Result<Value, StorageError> {
    Ok(match value {
        ValueRef::Null => Value::Int(None),
        ValueRef::Integer(v) => Value::Int(Some(v)),
        ValueRef::Real(v) => Value::Real(Some(v)),
        ValueRef::Text(v) => {
            Value::Text(Some(String::from_utf8(v.to_vec()).map_err(|_| {
                StorageError::Query("text column is not UTF-8".to_owned())
            })?))
        }
        ValueRef::Blob(v) => Value::Bytes(Some(v.to_vec())),
    })
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(failure, _) if failure.extended_code & 0xff == 5)
}

/// SQLite's errors, classified as [`super::StorageError`] wants (see
/// [`super::error::is_unavailable_code`]).
pub(super) fn error(e: rusqlite::Error) -> StorageError {
    match &e {
        rusqlite::Error::SqliteFailure(failure, _)
            if super::error::is_unavailable_sqlite_code(i64::from(failure.extended_code)) =>
        {
            StorageError::Unavailable(e.to_string())
        }
        _ => StorageError::Query(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn dollar_parameters_become_numbered_ones_outside_quotes_and_comments() {
        assert_eq!(numbered("SELECT $2, $1, $2"), "SELECT ?2, ?1, ?2");
        assert_eq!(
            numbered("SELECT '$1', \"$2\" -- $3\n, $4, $x"),
            "SELECT '$1', \"$2\" -- $3\n, ?4, $x"
        );
        assert_eq!(numbered("SELECT 1"), "SELECT 1");
        assert_eq!(
            numbered("/* order's */ UPDATE t SET a = $2 WHERE id = $1 /* $3 */"),
            "/* order's */ UPDATE t SET a = ?2 WHERE id = ?1 /* $3 */"
        );
        assert_eq!(numbered("SELECT 'it''s $1', $1"), "SELECT 'it''s $1', ?1");
    }
}
