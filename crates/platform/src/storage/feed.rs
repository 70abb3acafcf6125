//! A SQLite database's outbox served as a log (embedded mode; docs/adr/0009-outbox-as-log.md).
//!
//! The single writer commits transactions one after another, and an outbox row's id is handed out
//! inside its transaction, so id order is commit order: the id is the row's offset in its
//! database's log. What a transaction committed is remembered here, in memory, as it commits (still
//! holding the writer, so in commit order), and the database's end moves on: in-process readers
//! that keep up are served from memory, without reading back what was just written. A reader that
//! falls behind the tail, or starts after a restart, reads the table.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
};

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, watch};

use emporium_events::Envelope;

use crate::bus::Record;

/// Rows kept in memory per database for readers that keep up.
const TAIL: usize = 512;

/// What a database's commits tell the rest of the process about its outbox.
pub(crate) struct Outbox {
    /// Rung after a commit that wrote outbox rows: wakes the relay at once.
    pub(crate) signal: Notify,
    /// Set when the embedded bus serves this outbox as a log: rows stay, and commits feed `feed`.
    as_log: AtomicBool,
    pub(crate) feed: Feed,
}

impl Outbox {
    pub(crate) fn new() -> Outbox {
        Outbox {
            signal: Notify::new(),
            as_log: AtomicBool::new(false),
            feed: Feed::new(),
        }
    }

    pub(crate) fn is_log(&self) -> bool {
        self.as_log.load(Ordering::Acquire)
    }

    pub(crate) fn serve_as_log(&self) {
        self.as_log.store(true, Ordering::Release);
    }
}

/// A committed outbox row: its offset (id) and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: u64,
    pub created_at: DateTime<Utc>,
    pub record: Arc<Record>,
    /// The envelope the record was made from, when it was emitted in this process.
    pub envelope: Option<Arc<Envelope>>,
}

/// The database's log end and its most recent entries.
pub(crate) struct Feed {
    /// One past the last committed id: the first id a reader waits for.
    end: watch::Sender<u64>,
    /// The newest committed entries, ids contiguous.
    tail: Mutex<VecDeque<Arc<Entry>>>,
}

impl Feed {
    pub(crate) fn new() -> Feed {
        Feed {
            end: watch::Sender::new(1),
            tail: Mutex::new(VecDeque::new()),
        }
    }

    fn lock_tail(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Entry>>> {
        // Pushes and pops only: a panic cannot leave the queue half-changed.
        self.tail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers what a transaction committed (ids ascending) and moves the end past it. Called
    /// with the writer still held, so calls come in commit order.
    pub(crate) fn push(&self, committed: Vec<Entry>) {
        let Some(last) = committed.last().map(|entry| entry.id) else {
            return;
        };
        {
            let mut tail = self.lock_tail();
            for entry in committed {
                // A gap (rows committed without being remembered): what is older is unusable.
                if tail.back().is_some_and(|back| back.id + 1 != entry.id) {
                    tail.clear();
                }
                if tail.len() == TAIL {
                    tail.pop_front();
                }
                tail.push_back(Arc::new(entry));
            }
        }
        self.advance_to(last + 1);
    }

    /// Moves the end to `end` if it is further (a look at the table found rows not pushed here).
    pub(crate) fn advance_to(&self, end: u64) {
        self.end.send_if_modified(|current| {
            let further = end > *current;
            if further {
                *current = end;
            }
            further
        });
    }

    pub(crate) fn end(&self) -> u64 {
        *self.end.borrow()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.end.subscribe()
    }

    /// The entries from id `from` on (at most `limit`), if the tail holds `from`.
    pub(crate) fn read_tail(&self, from: u64, limit: usize) -> Option<Vec<Arc<Entry>>> {
        let tail = self.lock_tail();
        let first = tail.front()?.id;
        let back = tail.back()?.id;
        if from < first || from > back {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64) -> Entry {
        Entry {
            id,
            created_at: Utc::now(),
            record: Arc::new(Record {
                topic: "t".into(),
                key: "k".into(),
                payload: id.to_string().into_bytes(),
                headers: Default::default(),
            }),
            envelope: None,
        }
    }

    fn ids(entries: Option<Vec<Arc<Entry>>>) -> Option<Vec<u64>> {
        entries.map(|entries| entries.iter().map(|e| e.id).collect())
    }

    #[test]
    fn the_tail_serves_contiguous_ids_and_the_end_follows() {
        let feed = Feed::new();
        assert_eq!(feed.end(), 1);
        feed.push(vec![entry(1), entry(2)]);
        feed.push(vec![entry(3)]);
        assert_eq!(feed.end(), 4);
        assert_eq!(ids(feed.read_tail(2, 10)), Some(vec![2, 3]));
        assert_eq!(ids(feed.read_tail(1, 1)), Some(vec![1]));
        assert_eq!(ids(feed.read_tail(4, 10)), None, "not committed yet");
        // A gap: only what follows it is served from memory.
        feed.push(vec![entry(7)]);
        assert_eq!(feed.end(), 8);
        assert_eq!(ids(feed.read_tail(3, 10)), None);
        assert_eq!(ids(feed.read_tail(7, 10)), Some(vec![7]));
    }

    #[test]
    fn the_tail_keeps_the_newest_entries_only() {
        let feed = Feed::new();
        feed.push((1..=TAIL as u64 + 10).map(entry).collect());
        assert_eq!(ids(feed.read_tail(1, 1)), None);
        assert_eq!(ids(feed.read_tail(11, 1)), Some(vec![11]));
        feed.advance_to(5);
        assert_eq!(feed.end(), TAIL as u64 + 11, "the end never moves back");
    }
}
