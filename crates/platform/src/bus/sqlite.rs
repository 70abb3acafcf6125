//! The embedded event log: the bus port on one SQLite file.
//!
//! Records live in one table keyed by `(topic, partition, offset)`; each group's next offset per
//! partition lives in `group_offsets`. One writer connection appends (SQLite has one writer anyway),
//! a small pool of readers serves consumers. Offsets are assigned in memory under the append lock and
//! published to consumers through a `watch` channel per partition after the transaction commits, so
//! a consumer wakes the moment its partition grows: no polling.
//!
//! One process owns the file. In this process a group has at most one member at a time, which owns
//! every partition of its topics and runs one task per partition (the parallelism Kafka gets from
//! several members comes here from the partitions).

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    path::Path,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use std::panic::AssertUnwindSafe;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use sqlx::{
    Row, Sqlite, SqliteConnection,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};
use tokio::sync::watch;

use crate::storage::{MultiRow, chunks};

use super::{
    BatchHandler, BusError, Delivery, EventBus, PartitionLag, Record, SubscribeOptions,
    Subscription, partition_for, validate_topic,
};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS topics (
    name       TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    topic       TEXT    NOT NULL,
    partition   INTEGER NOT NULL,
    offset      INTEGER NOT NULL,
    key         TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    headers     TEXT    NOT NULL,
    appended_at INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_offsets (
    grp         TEXT    NOT NULL,
    topic       TEXT    NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, partition)
) WITHOUT ROWID;
"#;

/// The embedded, durable event log.
#[derive(Clone)]
pub struct SqliteEventLog {
    inner: Arc<Inner>,
}

struct Inner {
    writer: SqlitePool,
    reader: SqlitePool,
    default_partitions: u32,
    /// Held while offsets are assigned and written, so that they are dense and in commit order.
    append: tokio::sync::Mutex<()>,
    /// Per topic, per partition: the next offset to assign, watched by that partition's consumers.
    topics: Mutex<HashMap<String, Vec<watch::Sender<u64>>>>,
    active_groups: Arc<Mutex<HashSet<String>>>,
    /// Offsets handled but not yet written, by (group, topic, partition). One task writes them all
    /// in one transaction every [`COMMIT_INTERVAL`], so that commits do not compete with appends for
    /// the single writer one partition at a time.
    staged: Mutex<HashMap<(String, String, u32), u64>>,
    /// Held from taking the staged offsets to writing them, so that a flush that returns has written
    /// everything staged before it began (what a stopping member relies on).
    flushing: tokio::sync::Mutex<()>,
    /// Partitions whose in-memory end may be wrong (see `ResyncOnDrop`).
    stale: Mutex<Vec<(String, u32)>>,
    /// The last records appended to each partition, so that consumers keeping up are served from
    /// memory instead of reading back what was just written. Always a contiguous run of offsets.
    tails: Mutex<HashMap<(String, u32), VecDeque<Delivery>>>,
}

/// Records kept in memory per partition for consumers that keep up.
const TAIL: usize = 256;

static RECORDS_INSERT: MultiRow = MultiRow::new(
    "INSERT INTO records (topic, partition, offset, key, payload, headers, appended_at) VALUES ",
    0,
    7,
    "",
);

/// Offsets only move forward: a flush may race another (the ticker and a stopping member). The
/// rows exist (a group's first read inserts them); the upsert form lets one statement write many.
static OFFSETS_UPSERT: MultiRow = MultiRow::new(
    "INSERT INTO group_offsets (grp, topic, partition, next_offset) VALUES ",
    0,
    4,
    " ON CONFLICT (grp, topic, partition)
      DO UPDATE SET next_offset = MAX(group_offsets.next_offset, excluded.next_offset)",
);

/// How often staged offsets are written. A crash loses at most this much of commits, which means
/// redelivery (absorbed by the inbox), never loss.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(50);

/// Runs `statement` for every one of `rows`, [`chunks`] of them at a time.
async fn execute_for<'q, T>(
    statement: &'q MultiRow,
    conn: &mut SqliteConnection,
    rows: &'q [T],
    bind: impl Fn(
        sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
        &'q T,
    ) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
) -> Result<(), sqlx::Error> {
    for chunk in chunks(rows) {
        let query = chunk
            .iter()
            .fold(sqlx::query(statement.sql(chunk.len())), |query, row| {
                bind(query, row)
            });
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

fn unavailable(e: sqlx::Error) -> BusError {
    BusError::Unavailable(e.to_string())
}

/// Options shared by every SQLite file Emporium opens: WAL, so readers never block the writer;
/// `synchronous = NORMAL`, durable against a process crash (what `kill -9` tests), not against
/// power loss of the last transactions; a busy timeout instead of immediate `SQLITE_BUSY`.
pub fn sqlite_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        // Statement journals in memory: as files, one was created and deleted per spill.
        .pragma("temp_store", "memory")
}

impl SqliteEventLog {
    /// Opens (or creates) the log at `path`; topics created on first use get `default_partitions`.
    pub async fn open(path: &Path, default_partitions: u32) -> Result<Self, BusError> {
        let options = sqlite_options(path);
        // No ping on acquire: sqlx already pings a connection when it is released (dropping a
        // broken one), so a second ping on the way out is only a round trip to its thread.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(unavailable)?;
        sqlx::raw_sql(SCHEMA)
            .execute(&writer)
            .await
            .map_err(unavailable)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options.read_only(true))
            .await
            .map_err(unavailable)?;

        let mut topics: HashMap<String, Vec<watch::Sender<u64>>> = HashMap::new();
        for row in sqlx::query("SELECT name, partitions FROM topics")
            .fetch_all(&writer)
            .await
            .map_err(unavailable)?
        {
            let name: String = row.get(0);
            let partitions: i64 = row.get(1);
            topics.insert(
                name,
                (0..partitions).map(|_| watch::Sender::new(0)).collect(),
            );
        }
        for row in sqlx::query(
            "SELECT topic, partition, MAX(offset) + 1 FROM records GROUP BY topic, partition",
        )
        .fetch_all(&writer)
        .await
        .map_err(unavailable)?
        {
            let topic: String = row.get(0);
            let partition: i64 = row.get(1);
            let end: i64 = row.get(2);
            if let Some(end_tx) = topics
                .get(&topic)
                .and_then(|parts| parts.get(partition as usize))
            {
                end_tx.send_replace(end as u64);
            }
        }
        let log = SqliteEventLog {
            inner: Arc::new(Inner {
                writer,
                reader,
                default_partitions: default_partitions.max(1),
                append: tokio::sync::Mutex::new(()),
                topics: Mutex::new(topics),
                active_groups: Arc::new(Mutex::new(HashSet::new())),
                staged: Mutex::new(HashMap::new()),
                flushing: tokio::sync::Mutex::new(()),
                stale: Mutex::new(Vec::new()),
                tails: Mutex::new(HashMap::new()),
            }),
        };
        let flusher = Arc::downgrade(&log.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(COMMIT_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // Ends with the log: a weak reference does not keep it open.
                let Some(inner) = flusher.upgrade() else {
                    return;
                };
                if let Err(e) = inner.flush_commits().await {
                    tracing::warn!(error = %e, "cannot write consumer offsets; will retry");
                }
            }
        });
        Ok(log)
    }

    /// Creates the topic with `partitions` partitions if it does not exist yet; returns its count.
    pub async fn create_topic(&self, topic: &str, partitions: u32) -> Result<u32, BusError> {
        validate_topic(topic)?;
        if let Some(n) = self.inner.partitions(topic) {
            return Ok(n);
        }
        let _append = self.inner.append.lock().await;
        if let Some(n) = self.inner.partitions(topic) {
            return Ok(n);
        }
        let partitions = partitions.clamp(1, 1024);
        sqlx::query("INSERT OR IGNORE INTO topics (name, partitions) VALUES ($1, $2)")
            .bind(topic)
            .bind(partitions as i64)
            .execute(&self.inner.writer)
            .await
            .map_err(unavailable)?;
        self.inner.lock_topics().insert(
            topic.to_owned(),
            (0..partitions).map(|_| watch::Sender::new(0)).collect(),
        );
        Ok(partitions)
    }

    async fn ensure_topics<'a>(
        &self,
        topics: impl Iterator<Item = &'a str>,
    ) -> Result<(), BusError> {
        for topic in topics {
            if self.inner.partitions(topic).is_none() {
                self.create_topic(topic, self.inner.default_partitions)
                    .await?;
            }
        }
        Ok(())
    }

    /// Records of one partition from `from` on, at most `limit` (what consumers and tools read).
    pub async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Delivery>, BusError> {
        self.inner.read(topic, partition, from, limit).await
    }
}

impl Inner {
    fn lock_topics(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<watch::Sender<u64>>>> {
        // The map is only ever left consistent: a panic while holding it cannot leave half an update.
        self.topics.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn partitions(&self, topic: &str) -> Option<u32> {
        self.lock_topics().get(topic).map(|p| p.len() as u32)
    }

    fn end_watch(&self, topic: &str, partition: u32) -> Option<watch::Receiver<u64>> {
        self.lock_topics()
            .get(topic)
            .and_then(|p| p.get(partition as usize))
            .map(watch::Sender::subscribe)
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Delivery>, BusError> {
        if let Some(fresh) = self.read_tail(topic, partition, from, limit) {
            return Ok(fresh);
        }
        let rows = sqlx::query(
            "SELECT offset, key, payload, headers, appended_at FROM records
             WHERE topic = $1 AND partition = $2 AND offset >= $3
             ORDER BY offset LIMIT $4",
        )
        .bind(topic)
        .bind(partition as i64)
        .bind(from as i64)
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await
        .map_err(unavailable)?;
        rows.into_iter()
            .map(|row| {
                let headers: String = row.get(3);
                let headers: BTreeMap<String, String> = serde_json::from_str(&headers)
                    .map_err(|e| BusError::Unavailable(format!("corrupt headers in log: {e}")))?;
                let appended_at: i64 = row.get(4);
                Ok(Delivery {
                    partition,
                    offset: row.get::<i64, _>(0) as u64,
                    appended_at: DateTime::<Utc>::from_timestamp_millis(appended_at)
                        .unwrap_or_default(),
                    record: Record {
                        topic: topic.to_owned(),
                        key: row.get(1),
                        payload: row.get(2),
                        headers,
                    },
                })
            })
            .collect()
    }

    async fn committed(&self, group: &str, topic: &str, partition: u32) -> Result<u64, BusError> {
        sqlx::query(
            "INSERT OR IGNORE INTO group_offsets (grp, topic, partition, next_offset) VALUES ($1, $2, $3, 0)",
        )
        .bind(group)
        .bind(topic)
        .bind(partition as i64)
        .execute(&self.writer)
        .await
        .map_err(unavailable)?;
        let next: i64 = sqlx::query_scalar(
            "SELECT next_offset FROM group_offsets WHERE grp = $1 AND topic = $2 AND partition = $3",
        )
        .bind(group)
        .bind(topic)
        .bind(partition as i64)
        .fetch_one(&self.writer)
        .await
        .map_err(unavailable)?;
        Ok(self
            .staged_offset(group, topic, partition)
            .map_or(next as u64, |staged| staged.max(next as u64)))
    }

    /// The records from `from` on, if the in-memory tail holds `from`.
    fn read_tail(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> Option<Vec<Delivery>> {
        let tails = self.tails.lock().unwrap_or_else(PoisonError::into_inner);
        let tail = tails.get(&(topic.to_owned(), partition))?;
        let first = tail.front()?.offset;
        let end = tail.back()?.offset + 1;
        if from < first || from >= end {
            return None;
        }
        Some(
            tail.iter()
                .skip((from - first) as usize)
                .take(limit)
                .cloned()
                .collect(),
        )
    }

    /// Remembers committed records at the end of their partition's tail.
    fn push_tail(&self, committed: Vec<Delivery>) {
        let mut tails = self.tails.lock().unwrap_or_else(PoisonError::into_inner);
        for delivery in committed {
            let tail = tails
                .entry((delivery.record.topic.clone(), delivery.partition))
                .or_default();
            // A gap (an interrupted append committed rows it never remembered): start afresh.
            if tail
                .back()
                .is_some_and(|last| last.offset + 1 != delivery.offset)
            {
                tail.clear();
            }
            if tail.len() == TAIL {
                tail.pop_front();
            }
            tail.push_back(delivery);
        }
    }

    /// Re-reads the end of every stale partition from the file. Call with the append lock held.
    async fn resync_stale(&self) {
        let stale = std::mem::take(&mut *self.stale.lock().unwrap_or_else(PoisonError::into_inner));
        for (topic, partition) in stale {
            let end: Result<i64, _> = sqlx::query_scalar(
                "SELECT COALESCE(MAX(offset) + 1, 0) FROM records WHERE topic = $1 AND partition = $2",
            )
            .bind(&topic)
            .bind(partition as i64)
            .fetch_one(&self.writer)
            .await;
            match end {
                Ok(end) => {
                    if let Some(end_tx) = self
                        .lock_topics()
                        .get(&topic)
                        .and_then(|p| p.get(partition as usize))
                    {
                        end_tx.send_replace(end as u64);
                    }
                }
                Err(e) => {
                    tracing::error!(topic, partition, error = %e, "cannot re-read a partition's end");
                    self.stale
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((topic, partition));
                }
            }
        }
    }

    fn stage_commit(&self, group: &str, topic: &str, partition: u32, next: u64) {
        self.staged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((group.to_owned(), topic.to_owned(), partition), next);
    }

    /// Writes every staged offset in one transaction. On failure they stay staged (unless a newer
    /// offset for the same partition was staged meanwhile).
    async fn flush_commits(&self) -> Result<(), BusError> {
        let _flushing = self.flushing.lock().await;
        let staged =
            std::mem::take(&mut *self.staged.lock().unwrap_or_else(PoisonError::into_inner));
        if staged.is_empty() {
            return Ok(());
        }
        crate::crash::point("consumer.before_offset_commit");
        let written = async {
            let mut tx = self.writer.begin().await?;
            let rows: Vec<_> = staged.iter().collect();
            execute_for(
                &OFFSETS_UPSERT,
                &mut tx,
                &rows,
                |upsert, ((group, topic, partition), next)| {
                    upsert
                        .bind(group)
                        .bind(topic)
                        .bind(*partition as i64)
                        .bind(**next as i64)
                },
            )
            .await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = written {
            let mut current = self.staged.lock().unwrap_or_else(PoisonError::into_inner);
            for (key, next) in staged {
                current.entry(key).or_insert(next);
            }
            return Err(unavailable(e));
        }
        Ok(())
    }

    /// Committed offsets as the group will see them: written ones overlaid with staged ones.
    fn staged_offset(&self, group: &str, topic: &str, partition: u32) -> Option<u64> {
        self.staged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(group.to_owned(), topic.to_owned(), partition))
            .copied()
    }
}

/// Marks partitions stale when an append did not finish normally (an error, or the caller's future
/// dropped mid-way), and has their ends re-read from the file: by a task at once, so that consumers
/// of rows that did commit are woken, and by the next append before it assigns offsets.
struct ResyncOnDrop {
    inner: Option<Arc<Inner>>,
    partitions: Vec<(String, u32)>,
}

impl Drop for ResyncOnDrop {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        inner
            .stale
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .append(&mut self.partitions);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _append = inner.append.lock().await;
                inner.resync_stale().await;
            });
        }
    }
}

/// Releases a group's single-member slot when its subscription ends.
struct GroupSlot {
    group: String,
    active: Arc<Mutex<HashSet<String>>>,
}

impl Drop for GroupSlot {
    fn drop(&mut self) {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.group);
    }
}

#[async_trait]
impl EventBus for SqliteEventLog {
    async fn publish(&self, records: &[Record]) -> Result<(), BusError> {
        if records.is_empty() {
            return Ok(());
        }
        for record in records {
            validate_topic(&record.topic)?;
        }
        self.ensure_topics(records.iter().map(|r| r.topic.as_str()))
            .await?;

        let _append = self.inner.append.lock().await;
        self.inner.resync_stale().await;
        // Place every record (partition, offset) under one look at the topics. `ends` are the next
        // offsets as they will be once this call commits; the watches move only after the commit.
        let mut ends: HashMap<(&str, u32), u64> = HashMap::new();
        let mut placed = Vec::with_capacity(records.len());
        {
            let topics = self.inner.lock_topics();
            for record in records {
                let parts = topics.get(&record.topic).ok_or_else(|| {
                    BusError::Unavailable(format!("topic {} vanished", record.topic))
                })?;
                let partition = partition_for(&record.key, parts.len() as u32);
                let end = ends
                    .entry((record.topic.as_str(), partition))
                    .or_insert_with(|| parts.get(partition as usize).map_or(0, |w| *w.borrow()));
                let headers = serde_json::to_string(&record.headers)
                    .map_err(|e| BusError::Invalid(e.to_string()))?;
                placed.push((record, partition, *end, headers));
                *end += 1;
            }
        }
        // From here until the ends are advanced, an error or a cancelled call (the caller's future
        // dropped) may leave the in-memory ends out of step with the file; the guard then re-reads
        // them. Declared after `_append`, it drops first and its task takes the lock after us.
        let mut guard = ResyncOnDrop {
            inner: Some(self.inner.clone()),
            partitions: ends.keys().map(|(t, p)| ((*t).to_owned(), *p)).collect(),
        };
        let now = Utc::now().timestamp_millis();
        let mut tx = self.inner.writer.begin().await.map_err(unavailable)?;
        // Multi-row INSERTs in a few fixed sizes, so that only a few statements are ever prepared.
        execute_for(
            &RECORDS_INSERT,
            &mut tx,
            &placed,
            |insert, (record, partition, offset, headers)| {
                insert
                    .bind(&record.topic)
                    .bind(*partition as i64)
                    .bind(*offset as i64)
                    .bind(&record.key)
                    .bind(&record.payload)
                    .bind(headers)
                    .bind(now)
            },
        )
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        let appended_at = DateTime::<Utc>::from_timestamp_millis(now).unwrap_or_default();
        self.inner.push_tail(
            placed
                .iter()
                .map(|(record, partition, offset, _)| Delivery {
                    partition: *partition,
                    offset: *offset,
                    appended_at,
                    record: (*record).clone(),
                })
                .collect(),
        );
        let topics = self.inner.lock_topics();
        for ((topic, partition), end) in ends {
            if let Some(end_tx) = topics.get(topic).and_then(|p| p.get(partition as usize)) {
                end_tx.send_replace(end);
            }
        }
        guard.inner = None;
        Ok(())
    }

    async fn subscribe(
        &self,
        options: SubscribeOptions,
        handler: Arc<dyn BatchHandler>,
    ) -> Result<Subscription, BusError> {
        if options.topics.is_empty() {
            return Err(BusError::Invalid("a subscription needs a topic".into()));
        }
        let slot = {
            let mut active = self
                .inner
                .active_groups
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !active.insert(options.group.clone()) {
                return Err(BusError::GroupBusy(options.group));
            }
            GroupSlot {
                group: options.group.clone(),
                active: self.inner.active_groups.clone(),
            }
        };
        self.ensure_topics(options.topics.iter().map(String::as_str))
            .await?;
        let (stop_tx, _) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        for topic in &options.topics {
            let partitions = self.inner.partitions(topic).unwrap_or(0);
            for partition in 0..partitions {
                // Read (and register) the position now, so that lag is meaningful once this returns.
                let position = self
                    .inner
                    .committed(&options.group, topic, partition)
                    .await?;
                let worker = PartitionWorker {
                    position,
                    inner: self.inner.clone(),
                    group: options.group.clone(),
                    topic: topic.clone(),
                    partition,
                    max_batch: options.max_batch.max(1),
                    handler: handler.clone(),
                    stop: stop_tx.subscribe(),
                };
                tasks.spawn(worker.run());
            }
        }
        Ok(Subscription::new(stop_tx, tasks, Some(Box::new(slot))))
    }

    async fn lag(&self) -> Result<Vec<PartitionLag>, BusError> {
        let rows = sqlx::query(
            "SELECT grp, topic, partition, next_offset FROM group_offsets ORDER BY 1, 2, 3",
        )
        .fetch_all(&self.inner.reader)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let topic: String = row.get(1);
                let partition = row.get::<i64, _>(2) as u32;
                let end = self
                    .inner
                    .end_watch(&topic, partition)
                    .map(|w| *w.borrow())
                    .unwrap_or(0);
                let group: String = row.get(0);
                let committed = self
                    .inner
                    .staged_offset(&group, &topic, partition)
                    .unwrap_or(row.get::<i64, _>(3) as u64);
                PartitionLag {
                    group,
                    topic,
                    partition,
                    end,
                    committed,
                }
            })
            .collect())
    }

    async fn check(&self) -> Result<(), BusError> {
        sqlx::query("SELECT 1")
            .execute(&self.inner.reader)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn name(&self) -> &'static str {
        "sqlite-log"
    }
}

/// Delivers one partition to one group, in order, committing after each handled batch.
struct PartitionWorker {
    /// The next offset to deliver.
    position: u64,
    inner: Arc<Inner>,
    group: String,
    topic: String,
    partition: u32,
    max_batch: usize,
    handler: Arc<dyn BatchHandler>,
    stop: watch::Receiver<bool>,
}

impl PartitionWorker {
    async fn run(self) {
        let inner = self.inner.clone();
        self.deliver().await;
        // A stopping member leaves its position written, so the next member resumes after it.
        if let Err(e) = inner.flush_commits().await {
            tracing::warn!(error = %e, "offsets left unwritten at stop; those records will be redelivered");
        }
    }

    async fn deliver(mut self) {
        let Some(mut end) = self.inner.end_watch(&self.topic, self.partition) else {
            return;
        };
        let mut pause = Pause::default();
        let mut position = self.position;
        loop {
            if *self.stop.borrow() {
                return;
            }
            tokio::select! {
                biased;
                _ = self.stop.changed() => return,
                changed = end.wait_for(|end| *end > position) => if changed.is_err() { return },
            }
            let batch = match self
                .inner
                .read(&self.topic, self.partition, position, self.max_batch)
                .await
            {
                Ok(batch) if !batch.is_empty() => batch,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(group = %self.group, topic = %self.topic, error = %e, "cannot read the log");
                    if !pause.wait(&mut self.stop).await {
                        return;
                    }
                    continue;
                }
            };
            let next = batch.last().map_or(position, |d| d.offset + 1);
            let handled = AssertUnwindSafe(self.handler.handle(&batch))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    let message = super::panic_message(panic.as_ref());
                    tracing::error!(group = %self.group, topic = %self.topic, partition = self.partition,
                        panic = %message, "batch handler panicked");
                    Err(super::InfraError(format!("handler panicked: {message}")))
                });
            match handled {
                Ok(()) => {
                    self.inner
                        .stage_commit(&self.group, &self.topic, self.partition, next);
                    position = next;
                    pause = Pause::default();
                }
                Err(e) => {
                    tracing::warn!(group = %self.group, topic = %self.topic, partition = self.partition, error = %e,
                        "batch not handled, pausing the partition before redelivery");
                    if !pause.wait(&mut self.stop).await {
                        return;
                    }
                }
            }
        }
    }
}

/// Backoff for infrastructure trouble: 50 ms doubling to 5 s. Returns `false` when asked to stop.
#[derive(Default)]
struct Pause {
    attempts: u32,
}

impl Pause {
    async fn wait(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let delay = Duration::from_millis(50 * 2u64.saturating_pow(self.attempts.min(7)))
            .min(Duration::from_secs(5));
        self.attempts += 1;
        tokio::select! {
            _ = stop.changed() => false,
            _ = tokio::time::sleep(delay) => !*stop.borrow(),
        }
    }
}
