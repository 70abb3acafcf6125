//! The embedded bus: every database's outbox is its log (docs/adr/0009-outbox-as-log.md).
//!
//! A service's transaction writes its events to its outbox and commits; the rows' ids are their
//! offsets in that database's log (one writer: id order is commit order), and the committed rows
//! reach the consumers of this process from memory ([`crate::storage::feed`]): no relay, no
//! second copy in another file, no read-back. A consumer that falls behind or restarts reads the
//! producer's table.
//!
//! So the bus has one log per producing database (a *source*): the databases
//! [`OutboxLog::attach`]ed, and the log's own database, which holds what is published through the
//! port ([`EventBus::publish`]: dead letters, replays, tools) and the groups' offsets. A topic's
//! records come from every source; per-key order holds because one key's events come from one
//! source, in its commit order.
//!
//! Each source's topics are split into `partitions` partitions by key ([`partition_for`]), as on
//! Kafka. One task per source routes what commits: it moves the end of each topic-partition the
//! rows belong to, which wakes exactly the consumers of that topic-partition. A group has at most
//! one member at a time in this process, with one task per source, topic and partition, so that a
//! failing event holds back only its partition. That task's position is the id after the last row
//! it has looked at, whether the row was for it or not (so a lag of zero means caught up).
//! Positions are written every [`COMMIT_INTERVAL`] (a crash redelivers at most that much, and the
//! inbox absorbs it).

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use std::panic::AssertUnwindSafe;

use async_trait::async_trait;
use futures_util::FutureExt;
use tokio::sync::watch;

use crate::storage::{
    Conn, Db, EventContext, Migration, MultiRow, StorageError, feed::Entry, query,
};

use super::{
    BatchHandler, BusError, Delivery, EventBus, PartitionLag, Record, SubscribeOptions,
    Subscription, partition_for, validate_topic,
};

/// The name of the log's own database (a source like the others).
pub const OWN_SOURCE: &str = "events";

const MIGRATIONS: &[Migration] = &[Migration::portable(
    100,
    "consumer_offsets",
    "CREATE TABLE consumer_offsets (
        grp         TEXT    NOT NULL,
        source      TEXT    NOT NULL,
        topic       TEXT    NOT NULL,
        partition   INTEGER NOT NULL,
        next_offset BIGINT  NOT NULL,
        PRIMARY KEY (grp, source, topic, partition))",
)];

/// Positions only move forward: a flush may race another (the ticker and a stopping member).
static OFFSETS_UPSERT: MultiRow = MultiRow::new(
    "INSERT INTO consumer_offsets (grp, source, topic, partition, next_offset) VALUES ",
    0,
    5,
    " ON CONFLICT (grp, source, topic, partition)
      DO UPDATE SET next_offset = MAX(consumer_offsets.next_offset, excluded.next_offset)",
);

/// How often staged positions are written. A crash loses at most this much of them, which means
/// redelivery (absorbed by the inbox), never loss.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(50);

/// How often every source's end is read from its table, for rows whose commit did not reach the
/// feed (a task stopped between its commit and telling the feed).
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Rows a task looks at per read: most belong to other partitions and topics.
const SCAN: usize = 1024;

/// A position: group, source, topic, partition.
type Key = (String, String, String, u32);

fn unavailable(e: StorageError) -> BusError {
    BusError::Unavailable(e.to_string())
}

/// The embedded bus. Cheap to clone.
#[derive(Clone)]
pub struct OutboxLog {
    inner: Arc<Inner>,
}

struct Inner {
    own: Db,
    /// Every source, the log's own database first. Subscriptions read those attached before them.
    sources: Mutex<Vec<Arc<Source>>>,
    partitions: u32,
    active_groups: Arc<Mutex<HashSet<String>>>,
    /// Positions handled but not yet written.
    staged: Mutex<HashMap<Key, u64>>,
    /// Held from taking the staged positions to writing them, so that a flush that returns has
    /// written everything staged before it began (what a stopping member relies on).
    flushing: tokio::sync::Mutex<()>,
}

impl OutboxLog {
    /// Opens (or creates) the log's own database at `path`; each source is read in `partitions`
    /// partitions.
    pub async fn open(path: &Path, partitions: u32) -> Result<Self, BusError> {
        let own = Db::open_sqlite(OWN_SOURCE, path)
            .await
            .map_err(unavailable)?;
        own.migrate(MIGRATIONS).await.map_err(unavailable)?;
        own.serve_outbox_as_log().await.map_err(unavailable)?;
        let partitions = partitions.clamp(1, 1024);
        let log = OutboxLog {
            inner: Arc::new(Inner {
                sources: Mutex::new(vec![Source::start(own.clone(), partitions)]),
                own,
                partitions,
                active_groups: Arc::new(Mutex::new(HashSet::new())),
                staged: Mutex::new(HashMap::new()),
                flushing: tokio::sync::Mutex::new(()),
            }),
        };
        let weak = Arc::downgrade(&log.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(COMMIT_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // Ends with the log: a weak reference does not keep it open.
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                if let Err(e) = inner.flush_positions().await {
                    tracing::warn!(error = %e, "cannot write consumer offsets; will retry");
                }
            }
        });
        Ok(log)
    }

    /// Serves `db`'s outbox as a source of this log: what its transactions emit is published when
    /// they commit. Attach every database before subscribing (a subscription reads the sources
    /// attached before it), and run no relay on them.
    pub async fn attach(&self, db: &Db) -> Result<(), BusError> {
        if self
            .inner
            .sources()
            .iter()
            .any(|s| s.db.name() == db.name())
        {
            return Err(BusError::Invalid(format!(
                "a source named {} is already attached",
                db.name()
            )));
        }
        db.serve_outbox_as_log().await.map_err(unavailable)?;
        self.inner
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Source::start(db.clone(), self.inner.partitions));
        Ok(())
    }

    /// Records of `topic` published through this log's own database (not the attached ones),
    /// partition `partition`, from offset `from` on, at most `limit`: for tools and tests.
    pub async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Delivery>, BusError> {
        let mut found = Vec::new();
        let mut position = from;
        while found.len() < limit {
            let entries = self
                .inner
                .own
                .read_outbox(position, SCAN)
                .await
                .map_err(unavailable)?;
            let Some(last) = entries.last() else {
                break;
            };
            position = last.id + 1;
            found.extend(
                entries
                    .iter()
                    .filter(|e| {
                        e.record.topic == topic
                            && partition_for(&e.record.key, self.inner.partitions) == partition
                    })
                    .map(|e| delivery(e, partition)),
            );
        }
        found.truncate(limit);
        Ok(found)
    }
}

/// A producing database, and the ends of its topic-partitions as its router has seen them.
struct Source {
    db: Db,
    partitions: u32,
    /// Per topic and partition: one past the last id routed there; for a pair not seen yet, where
    /// routing stood when it was first asked for (rows before may be its own).
    ends: Mutex<HashMap<(String, u32), watch::Sender<u64>>>,
    /// One past the last id routed.
    routed: AtomicU64,
}

impl Source {
    /// The source of `db`, with its router running (it stops when the source is dropped).
    fn start(db: Db, partitions: u32) -> Arc<Source> {
        let source = Arc::new(Source {
            routed: AtomicU64::new(db.outbox_feed().end()),
            db,
            partitions,
            ends: Mutex::new(HashMap::new()),
        });
        tokio::spawn(Source::route(Arc::downgrade(&source)));
        source
    }

    fn lock_ends(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), watch::Sender<u64>>> {
        // Inserts and sends only: a panic cannot leave the map half-changed.
        self.ends.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The end of a topic-partition, to wait on.
    fn end(&self, topic: &str, partition: u32) -> watch::Receiver<u64> {
        self.lock_ends()
            .entry((topic.to_owned(), partition))
            .or_insert_with(|| watch::Sender::new(self.routed.load(Ordering::Acquire)))
            .subscribe()
    }

    /// The end of a topic-partition for lag: where routing stands if it has seen none of it.
    fn end_now(&self, topic: &str, partition: u32) -> u64 {
        self.lock_ends()
            .get(&(topic.to_owned(), partition))
            .map_or_else(|| self.routed.load(Ordering::Acquire), |end| *end.borrow())
    }

    /// Moves the end of every topic-partition that committed rows belong to, as they commit; and
    /// every [`LOOK_EVERY`], the feed's end to the table's.
    async fn route(source: Weak<Source>) {
        let Some(mut feed) = source.upgrade().map(|s| s.db.outbox_feed().watch()) else {
            return;
        };
        loop {
            let Some(me) = source.upgrade() else {
                return;
            };
            let routed = me.routed.load(Ordering::Acquire);
            let end = *feed.borrow();
            if end > routed {
                match me.db.read_outbox(routed, SCAN).await {
                    // No row at all up to the end (none can be missing: the end moves only
                    // after a commit): nothing to route there.
                    Ok(entries) if entries.is_empty() => me.routed.store(end, Ordering::Release),
                    Ok(entries) => me.advance(&entries),
                    Err(e) => {
                        tracing::warn!(source = me.db.name(), error = %e, "cannot read the outbox");
                        drop(me);
                        tokio::time::sleep(LOOK_EVERY).await;
                    }
                }
                continue;
            }
            drop(me);
            let looked = tokio::select! {
                changed = feed.changed() => if changed.is_err() { return } else { false },
                _ = tokio::time::sleep(LOOK_EVERY) => true,
            };
            if looked
                && let Some(me) = source.upgrade()
                && let Err(e) = me.db.look_at_outbox_end().await
            {
                tracing::warn!(source = me.db.name(), error = %e, "cannot read the end of an outbox");
            }
        }
    }

    fn advance(&self, entries: &[Arc<Entry>]) {
        let Some(last) = entries.last() else {
            return;
        };
        let mut ends = self.lock_ends();
        for entry in entries {
            let partition = partition_for(&entry.record.key, self.partitions);
            let next = entry.id + 1;
            match ends.get(&(entry.record.topic.clone(), partition)) {
                Some(end) => {
                    end.send_if_modified(|end| {
                        let further = next > *end;
                        if further {
                            *end = next;
                        }
                        further
                    });
                }
                None => {
                    ends.insert(
                        (entry.record.topic.clone(), partition),
                        watch::Sender::new(next),
                    );
                }
            }
        }
        self.routed.store(last.id + 1, Ordering::Release);
    }
}

fn delivery(entry: &Entry, partition: u32) -> Delivery {
    Delivery {
        partition,
        offset: entry.id,
        appended_at: entry.created_at,
        record: entry.record.clone(),
        decoded: entry.envelope.clone(),
    }
}

impl Inner {
    fn sources(&self) -> Vec<Arc<Source>> {
        self.sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn lock_staged(&self) -> std::sync::MutexGuard<'_, HashMap<Key, u64>> {
        // Inserts and takes only: a panic cannot leave the map half-changed.
        self.staged.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The group's positions in every topic-partition of `topics` in every source, registering
    /// new ones (at the start), in one transaction.
    async fn positions(
        &self,
        group: &str,
        sources: &[Arc<Source>],
        topics: &[String],
    ) -> Result<HashMap<Key, u64>, BusError> {
        let mut keys = Vec::new();
        for source in sources {
            for topic in topics {
                for partition in 0..self.partitions {
                    keys.push((
                        group.to_owned(),
                        source.db.name().to_owned(),
                        topic.clone(),
                        partition,
                    ));
                }
            }
        }
        let written = async {
            let mut tx = self
                .own
                .begin(EventContext::request(OWN_SOURCE, ""))
                .await?;
            // Registering is an upsert that changes nothing already there; ids start at 1.
            let registered: Vec<(&Key, u64)> = keys.iter().map(|key| (key, 1)).collect();
            write_positions(tx.conn(), &registered).await?;
            let rows = query(
                "SELECT source, topic, partition, next_offset FROM consumer_offsets WHERE grp = $1",
            )
            .bind(group)
            .fetch_all(tx.conn())
            .await?;
            tx.commit().await?;
            rows.iter()
                .map(|row| {
                    Ok((
                        (
                            group.to_owned(),
                            row.get::<String>(0)?,
                            row.get::<String>(1)?,
                            row.get::<i64>(2)? as u32,
                        ),
                        row.get::<i64>(3)? as u64,
                    ))
                })
                .collect::<Result<HashMap<Key, u64>, StorageError>>()
        }
        .await
        .map_err(unavailable)?;
        let staged = self.lock_staged();
        Ok(keys
            .into_iter()
            .map(|key| {
                let written = written.get(&key).copied().unwrap_or(1);
                let position = staged.get(&key).map_or(written, |s| (*s).max(written));
                (key, position)
            })
            .collect())
    }

    fn stage(&self, key: &Key, next: u64) {
        self.lock_staged().insert(key.clone(), next);
    }

    /// Writes every staged position in one transaction. On failure they stay staged (unless a
    /// newer one for the same partition was staged meanwhile).
    async fn flush_positions(&self) -> Result<(), BusError> {
        let _flushing = self.flushing.lock().await;
        let staged = std::mem::take(&mut *self.lock_staged());
        if staged.is_empty() {
            return Ok(());
        }
        crate::crash::point("consumer.before_offset_commit");
        let rows: Vec<(&Key, u64)> = staged.iter().map(|(key, next)| (key, *next)).collect();
        let written = async {
            let mut tx = self
                .own
                .begin(EventContext::request(OWN_SOURCE, ""))
                .await?;
            write_positions(tx.conn(), &rows).await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = written {
            let mut current = self.lock_staged();
            for (key, next) in staged {
                current.entry(key).or_insert(next);
            }
            return Err(unavailable(e));
        }
        Ok(())
    }
}

/// Writes positions, each only forward.
async fn write_positions(conn: &mut Conn, rows: &[(&Key, u64)]) -> Result<(), StorageError> {
    OFFSETS_UPSERT
        .execute_for(
            conn,
            rows,
            |upsert, ((group, source, topic, partition), next)| {
                upsert
                    .bind(group.as_str())
                    .bind(source.as_str())
                    .bind(topic.as_str())
                    .bind(*partition as i64)
                    .bind(*next as i64)
            },
        )
        .await
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
impl EventBus for OutboxLog {
    async fn publish(&self, records: &[Record]) -> Result<(), BusError> {
        if records.is_empty() {
            return Ok(());
        }
        for record in records {
            validate_topic(&record.topic)?;
        }
        let mut tx = self
            .inner
            .own
            .begin(EventContext::request(OWN_SOURCE, ""))
            .await
            .map_err(unavailable)?;
        for record in records {
            tx.append(record.clone()).map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn subscribe(
        &self,
        options: SubscribeOptions,
        handler: Arc<dyn BatchHandler>,
    ) -> Result<Subscription, BusError> {
        options.validate()?;
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
        let sources = self.inner.sources();
        // Read (and register) the positions now, so that lag is meaningful once this returns.
        let positions = self
            .inner
            .positions(&options.group, &sources, &options.topics)
            .await?;
        let (stop_tx, _) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        for source in &sources {
            for topic in &options.topics {
                for partition in 0..self.inner.partitions {
                    let key = (
                        options.group.clone(),
                        source.db.name().to_owned(),
                        topic.clone(),
                        partition,
                    );
                    let worker = PartitionWorker {
                        position: positions.get(&key).copied().unwrap_or(1),
                        key,
                        inner: self.inner.clone(),
                        source: source.clone(),
                        max_batch: options.max_batch.max(1),
                        handler: handler.clone(),
                        stop: stop_tx.subscribe(),
                    };
                    tasks.spawn(worker.run());
                }
            }
        }
        Ok(Subscription::new(stop_tx, tasks, Some(Box::new(slot))))
    }

    /// One line per group, source, topic and partition.
    async fn lag(&self) -> Result<Vec<PartitionLag>, BusError> {
        let rows = query(
            "SELECT grp, source, topic, partition, next_offset FROM consumer_offsets
             ORDER BY 1, 2, 3, 4",
        )
        .fetch_all(&mut self.inner.own.reader().await.map_err(unavailable)?)
        .await
        .map_err(unavailable)?;
        let sources: HashMap<String, Arc<Source>> = self
            .inner
            .sources()
            .into_iter()
            .map(|source| (source.db.name().to_owned(), source))
            .collect();
        let staged = self.inner.lock_staged().clone();
        rows.into_iter()
            .map(|row| {
                let key: Key = (
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get::<i64>(3)? as u32,
                );
                let committed = staged
                    .get(&key)
                    .copied()
                    .unwrap_or(row.get::<i64>(4)? as u64);
                let (group, source, topic, partition) = key;
                Ok(PartitionLag {
                    end: sources
                        .get(&source)
                        .map_or(committed, |s| s.end_now(&topic, partition)),
                    group,
                    topic,
                    partition,
                    committed,
                })
            })
            .collect::<Result<_, StorageError>>()
            .map_err(unavailable)
    }

    async fn check(&self) -> Result<(), BusError> {
        self.inner.own.check().await.map_err(unavailable)
    }

    fn name(&self) -> &'static str {
        "outbox-log"
    }
}

/// Delivers one topic-partition of one source to one group, in order.
struct PartitionWorker {
    /// The next id to look at.
    position: u64,
    /// Group, source, topic, partition.
    key: Key,
    inner: Arc<Inner>,
    source: Arc<Source>,
    max_batch: usize,
    handler: Arc<dyn BatchHandler>,
    stop: watch::Receiver<bool>,
}

impl PartitionWorker {
    async fn run(self) {
        let inner = self.inner.clone();
        self.deliver().await;
        // A stopping member leaves its position written, so the next member resumes after it.
        if let Err(e) = inner.flush_positions().await {
            tracing::warn!(error = %e, "offsets left unwritten at stop; those records will be redelivered");
        }
    }

    /// The next batch from `self.position` on, and the position after the rows looked at for it.
    async fn next_batch(&self) -> Result<(Vec<Delivery>, u64), StorageError> {
        let (_, _, topic, partition) = &self.key;
        let entries = self.source.db.read_outbox(self.position, SCAN).await?;
        let mut batch = Vec::new();
        let mut next = self.position;
        for entry in &entries {
            let ours = entry.record.topic == *topic
                && partition_for(&entry.record.key, self.source.partitions) == *partition;
            if ours {
                if batch.len() == self.max_batch {
                    break;
                }
                batch.push(delivery(entry, *partition));
            }
            next = entry.id + 1;
        }
        Ok((batch, next))
    }

    async fn deliver(mut self) {
        let (group, _, topic, partition) = self.key.clone();
        let source = self.source.db.name().to_owned();
        let mut end = self.source.end(&topic, partition);
        let mut pause = Pause::default();
        loop {
            if *self.stop.borrow() {
                return;
            }
            let position = self.position;
            let routed = tokio::select! {
                biased;
                _ = self.stop.changed() => return,
                end = end.wait_for(|end| *end > position) => match end {
                    Ok(end) => *end,
                    Err(_) => return,
                },
            };
            let (batch, next) = match self.next_batch().await {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(%group, %source, %topic, error = %e, "cannot read the outbox");
                    if !pause.wait(&mut self.stop).await {
                        return;
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                // Nothing for this partition. No row at all from the position on means none up to
                // what was routed (committed rows are visible to a new read), so skip to there.
                let next = if next == self.position { routed } else { next };
                self.inner.stage(&self.key, next);
                self.position = next;
                continue;
            }
            let handled = AssertUnwindSafe(self.handler.handle(&batch))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    let message = super::panic_message(panic.as_ref());
                    tracing::error!(%group, %source, %topic, partition, panic = %message,
                        "batch handler panicked");
                    Err(super::InfraError(format!("handler panicked: {message}")))
                });
            match handled {
                Ok(()) => {
                    self.inner.stage(&self.key, next);
                    self.position = next;
                    pause = Pause::default();
                }
                Err(e) => {
                    tracing::warn!(%group, %source, %topic, partition, error = %e,
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
