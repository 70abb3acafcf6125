//! Write transactions that emit events: state, the rows written at commit and the emitted events
//! (the outbox) land together or not at all.

use std::{collections::HashSet, sync::Arc};

use chrono::{DateTime, Utc};
use emporium_events::{Envelope, Event};
use uuid::Uuid;

use super::{
    Conn, Dialect, MultiRow, StorageError, Value, chunks,
    feed::{Entry, Outbox},
    query,
};
use crate::bus::Record;

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

/// The same, for an outbox served as a log: the ids are the rows' offsets.
static OUTBOX_INSERT_RETURNING: MultiRow = MultiRow::new(
    "INSERT INTO outbox (topic, key, payload, headers, created_at) VALUES ",
    0,
    5,
    " RETURNING id",
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

/// Seed of the hash that turns an event key into its advisory lock (see [`Tx::emit`]).
const OUTBOX_KEY_LOCK_SEED: i64 = 0x656d_706f_7269;

/// An event emitted in a transaction, written to the outbox at commit.
struct OutboxRow {
    record: Record,
    /// The event's envelope, handed to in-process consumers with the record.
    envelope: Option<Arc<Envelope>>,
    /// `record.headers` as the outbox stores them (JSON).
    headers: String,
    created_at: i64,
}

/// A write transaction that can emit events. Dropping it without [`Tx::commit`] rolls back.
pub struct Tx {
    pub(super) conn: Conn,
    pub(super) dialect: Dialect,
    pub(super) context: EventContext,
    /// Emitted events, written to the outbox together at commit.
    emitted: Vec<OutboxRow>,
    /// Rows given to [`Tx::insert_at_commit`], by statement, in the order each statement got its
    /// first row.
    deferred: Vec<(&'static MultiRow, Vec<Value>)>,
    outbox: Arc<Outbox>,
}

impl Tx {
    pub(super) fn new(
        conn: Conn,
        dialect: Dialect,
        context: EventContext,
        outbox: Arc<Outbox>,
    ) -> Self {
        Tx {
            conn,
            dialect,
            context,
            emitted: Vec::new(),
            deferred: Vec::new(),
            outbox,
        }
    }

    /// The connection, for the service's own statements.
    pub fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn context(&self) -> &EventContext {
        &self.context
    }

    /// Sets the context for the next emitted events (a consumer batch moves from event to event).
    pub fn set_context(&mut self, context: EventContext) {
        self.context = context;
    }

    /// Emits `event` in this transaction: it reaches the outbox at [`Tx::commit`], with everything
    /// else the transaction emitted (a few multi-row statements of [`super::MULTI_ROW_SIZES`]
    /// rows), and so is published if and only if the transaction commits. Returns the envelope
    /// that will be published.
    pub fn emit(&mut self, event: Event) -> Result<Envelope, StorageError> {
        let envelope = Envelope::new(
            self.context.source,
            &self.context.correlation_id,
            self.context.causation_id,
            event,
        );
        let record =
            Record::from_envelope(&envelope).map_err(|e| StorageError::Query(e.to_string()))?;
        // Kept for in-process consumers only when the outbox is served as a log.
        let kept = self.outbox.is_log().then(|| Arc::new(envelope.clone()));
        self.push(record, kept)?;
        Ok(envelope)
    }

    /// Appends a record as it is (the embedded bus publishing through its own database).
    pub(crate) fn append(&mut self, record: Record) -> Result<(), StorageError> {
        self.push(record, None)
    }

    fn push(
        &mut self,
        record: Record,
        envelope: Option<Arc<Envelope>>,
    ) -> Result<(), StorageError> {
        let headers = serde_json::to_string(&record.headers)
            .map_err(|e| StorageError::Query(e.to_string()))?;
        self.emitted.push(OutboxRow {
            record,
            envelope,
            headers,
            created_at: Utc::now().timestamp_millis(),
        });
        Ok(())
    }

    /// Inserts `row` (a value per column of `statement`) at [`Tx::commit`], together with every
    /// other row the transaction gave `statement`: a few multi-row statements
    /// ([`super::MULTI_ROW_SIZES`] rows each) instead of one per row. For rows the transaction
    /// does not read back, such as an index: until the commit (or [`Tx::insert_pending_rows`])
    /// they are not in the table, and an error in them is the commit's (a consumer cannot tell
    /// which event's row failed: it retries the batch event by event, and the event it first
    /// blamed loses an attempt). One statement's rows must not update one row twice (PostgreSQL
    /// refuses `ON CONFLICT DO UPDATE` on a row twice in a statement); `ON CONFLICT DO NOTHING`
    /// is fine.
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
                .execute_for(&mut self.conn, &rows, |insert, row| {
                    insert.bind_all(row.iter().cloned())
                })
                .await?;
        }
        Ok(())
    }

    /// Writes the emitted events to the outbox, in emission order; returns them as log entries
    /// when the outbox is served as a log.
    async fn write_outbox(&mut self) -> Result<Vec<Entry>, StorageError> {
        if self.dialect == Dialect::Postgres {
            // PostgreSQL hands out outbox ids at insert, not at commit, and the relay publishes in
            // id order: two transactions emitting for one key could commit out of id order and the
            // relay publish the later event first. Holding a lock on the key from the insert until
            // commit makes the second wait for the first, so per-key id order is commit order.
            // (SQLite has one writer: its transactions never overlap.) Every transaction locks
            // its keys in one order, the keys' own, so that two cannot each wait for the other.
            let mut keys: Vec<&str> = self
                .emitted
                .iter()
                .map(|row| row.record.key.as_str())
                .collect();
            keys.sort_unstable();
            keys.dedup();
            let mut ordinal = 0i64;
            for chunk in chunks(&keys) {
                let mut lock = query(OUTBOX_KEY_LOCKS.sql(chunk.len())).bind(OUTBOX_KEY_LOCK_SEED);
                for key in chunk {
                    ordinal += 1;
                    lock = lock.bind(*key).bind(ordinal);
                }
                lock.execute(&mut self.conn).await?;
            }
        }
        let rows = std::mem::take(&mut self.emitted);
        fn bind<'q>(insert: super::Query<'q>, row: &OutboxRow) -> super::Query<'q> {
            insert
                .bind(row.record.topic.as_str())
                .bind(row.record.key.as_str())
                .bind(row.record.payload.as_slice())
                .bind(row.headers.as_str())
                .bind(row.created_at)
        }
        if !self.outbox.is_log() {
            OUTBOX_INSERT
                .execute_for(&mut self.conn, &rows, bind)
                .await?;
            return Ok(Vec::new());
        }
        // One writer: a statement's rows get consecutive ids in VALUES order (RETURNING gives
        // them in no promised order, hence the sort), and the next statement's come after.
        let mut ids = Vec::with_capacity(rows.len());
        for chunk in chunks(&rows) {
            let insert = chunk
                .iter()
                .fold(super::query(OUTBOX_INSERT_RETURNING.sql(chunk.len())), bind);
            let mut chunk_ids = insert.scalars::<i64>(&mut self.conn).await?;
            chunk_ids.sort_unstable();
            ids.extend(chunk_ids);
        }
        Ok(rows
            .into_iter()
            .zip(ids)
            .map(|(row, id)| Entry {
                id: id as u64,
                created_at: DateTime::<Utc>::from_timestamp_millis(row.created_at)
                    .unwrap_or_default(),
                record: Arc::new(row.record),
                envelope: row.envelope,
            })
            .collect())
    }

    /// Records that `consumer` applied `event_id`. Returns `false` if it already had: the caller must
    /// then skip the event.
    pub async fn record_in_inbox(
        &mut self,
        consumer: &str,
        event_id: Uuid,
    ) -> Result<bool, StorageError> {
        let inserted = query(
            "INSERT INTO inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3)
             ON CONFLICT (consumer, event_id) DO NOTHING",
        )
        .bind(consumer)
        .bind(event_id)
        .bind(Utc::now().timestamp_millis())
        .execute(&mut self.conn)
        .await?;
        Ok(inserted == 1)
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
            let mut insert = query(INBOX_INSERT.sql(chunk.len()));
            for id in chunk {
                insert = insert.bind(consumer).bind(id).bind(now);
            }
            recorded.extend(insert.scalars::<Uuid>(&mut self.conn).await?);
        }
        Ok(recorded)
    }

    /// Commits state, the rows of [`Tx::insert_at_commit`] and events together, then hands the
    /// events to the outbox's readers: the relay, or in-process consumers when the outbox is
    /// served as a log (still holding the writer, so that they learn of commits in their order).
    pub async fn commit(mut self) -> Result<(), StorageError> {
        self.insert_pending_rows().await?;
        let emitted = !self.emitted.is_empty();
        let entries = if emitted {
            self.write_outbox().await?
        } else {
            Vec::new()
        };
        self.conn.commit().await?;
        if emitted {
            crate::crash::point("outbox.after_commit");
            self.outbox.feed.push(entries);
            self.outbox.signal.notify_one();
        }
        Ok(())
    }
}
