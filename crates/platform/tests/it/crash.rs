//! Crash tests: a real child process runs a producer → outbox → consumer → inbox pipeline on the
//! embedded log, and is killed with SIGKILL at a named crash point; a second run without the crash
//! point finishes the work. Every event must then have taken effect exactly once. The pipeline
//! runs two ways: with the producer's outbox served as the log (embedded mode), and with a relay
//! publishing it (what a PostgreSQL database's outbox gets).
//!
//! The child is this very test binary, re-executed to run the ignored `child_process` test, so it
//! uses exactly the platform code under test.

use std::{os::unix::process::ExitStatusExt, path::Path, sync::Arc, time::Duration};

use async_trait::async_trait;
use emporium_events::{Envelope, Event, ProductDeleted};
use emporium_platform::{
    bus::{
        EventBus, OutboxLog, RetryPolicy,
        consumer::{Consumer, EventHandler, HandlerError},
        partition_for,
    },
    storage::{Db, EventContext, Migration, Tx, query, relay::Relay},
};
use uuid::Uuid;

const COMMANDS: usize = 200;
const CHILD_DIR: &str = "EMPORIUM_CRASH_CHILD_DIR";
const CHILD_MODE: &str = "EMPORIUM_CRASH_CHILD_MODE";
const PARTITIONS: u32 = 4;

/// How the producer's events reach the log.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Its outbox is the log (embedded mode).
    AsLog,
    /// A relay publishes its outbox to the log's own database.
    Relayed,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::AsLog => "as-log",
            Mode::Relayed => "relayed",
        }
    }
}

const PRODUCER: &[Migration] = &[Migration::portable(
    100,
    "commands",
    "CREATE TABLE commands (n BIGINT PRIMARY KEY, product_id TEXT NOT NULL)",
)];
// No uniqueness on purpose: an event applied twice would show as two rows.
const CONSUMER: &[Migration] = &[Migration::portable(
    100,
    "effects",
    "CREATE TABLE effects (product_id TEXT NOT NULL, event_id TEXT NOT NULL)",
)];

struct Effects;

#[async_trait]
impl EventHandler for Effects {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> Result<(), HandlerError> {
        if let Event::ProductDeleted(deleted) = &event.event {
            query("INSERT INTO effects (product_id, event_id) VALUES ($1, $2)")
                .bind(deleted.product_id)
                .bind(event.event_id)
                .execute(tx.conn())
                .await?;
        }
        Ok(())
    }
}

/// The whole pipeline, idempotent from any state a crash leaves: commands already done are skipped.
async fn run_pipeline(dir: &Path, mode: Mode) {
    let producer = Db::open_sqlite("producer", &dir.join("producer.db"))
        .await
        .unwrap();
    producer.migrate(PRODUCER).await.unwrap();
    let consumer_db = Db::open_sqlite("consumer", &dir.join("consumer.db"))
        .await
        .unwrap();
    consumer_db.migrate(CONSUMER).await.unwrap();
    let log = OutboxLog::open(&dir.join("events.db"), PARTITIONS)
        .await
        .unwrap();
    if mode == Mode::AsLog {
        log.attach(&producer).await.unwrap();
    }
    let bus: Arc<dyn EventBus> = Arc::new(log);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let relay = (mode == Mode::Relayed)
        .then(|| tokio::spawn(Relay::new(producer.clone(), bus.clone(), 16).run(stop_rx)));
    let retry = RetryPolicy {
        max_attempts: 3,
        backoff: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
    };
    let subscription = Consumer::new(
        "consumer",
        "effects",
        consumer_db.clone(),
        bus.clone(),
        Effects,
        retry,
    )
    .spawn(&["product-events"], 16)
    .await
    .unwrap();

    for n in 0..COMMANDS {
        let product_id = Uuid::from_u128(n as u128 + 1);
        let mut tx = producer
            .begin(EventContext::request("producer", format!("command-{n}")))
            .await
            .unwrap();
        let inserted = query(
            "INSERT INTO commands (n, product_id) VALUES ($1, $2) ON CONFLICT (n) DO NOTHING",
        )
        .bind(n as i64)
        .bind(product_id)
        .execute(tx.conn())
        .await
        .unwrap();
        if inserted == 1 {
            tx.emit(Event::ProductDeleted(ProductDeleted { product_id }))
                .unwrap();
        }
        tx.commit().await.unwrap();
    }

    for _ in 0..3000 {
        let applied: i64 = query("SELECT COUNT(DISTINCT product_id) FROM effects")
            .scalar(&mut consumer_db.reader().await.unwrap())
            .await
            .unwrap();
        let lag: u64 = bus.lag().await.unwrap().iter().map(|l| l.lag()).sum();
        if applied as usize >= COMMANDS && lag == 0 && producer.outbox_backlog().await.unwrap() == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A run killed at a checkpoint must live long enough to reach one: the checkpointers run
    // every 250 ms.
    if std::env::var("EMPORIUM_CRASH_AT").is_ok_and(|at| at.starts_with("storage.checkpoint")) {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    subscription.stop().await;
    stop_tx.send_replace(true);
    if let Some(relay) = relay {
        relay.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of the crash tests; they run it"]
async fn child_process() {
    let dir = std::env::var_os(CHILD_DIR)
        .expect("run by the crash tests, which set EMPORIUM_CRASH_CHILD_DIR");
    let mode = match std::env::var(CHILD_MODE).as_deref() {
        Ok("relayed") => Mode::Relayed,
        _ => Mode::AsLog,
    };
    run_pipeline(Path::new(&dir), mode).await;
}

/// Runs the pipeline in a child process; `crash_at` makes it abort there.
async fn run_child(dir: &Path, mode: Mode, crash_at: Option<&str>) -> std::process::ExitStatus {
    let mut command = tokio::process::Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "crash::child_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .env(CHILD_MODE, mode.name())
        .env_remove("EMPORIUM_CRASH_AT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some(point) = crash_at {
        command.env("EMPORIUM_CRASH_AT", point);
    }
    let child = command.spawn().unwrap();
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the child finished in time")
        .unwrap();
    if crash_at.is_none() {
        assert!(
            output.status.success(),
            "the recovery run failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output.status
}

/// What the files say, read from outside the (dead) child.
#[derive(Debug)]
struct Census {
    commands: i64,
    /// Rows a relay has still to publish (none when the outbox is the log).
    unpublished: i64,
    /// Events on the log.
    published: i64,
    /// Of those, the ones before the consumer group's committed position in their partition.
    committed: i64,
    effects: i64,
    distinct_effects: i64,
}

async fn census(dir: &Path, mode: Mode) -> Census {
    let producer = Db::open_sqlite("producer", &dir.join("producer.db"))
        .await
        .unwrap();
    producer.migrate(PRODUCER).await.unwrap();
    let consumer = Db::open_sqlite("consumer", &dir.join("consumer.db"))
        .await
        .unwrap();
    consumer.migrate(CONSUMER).await.unwrap();
    let events = Db::open_sqlite("events", &dir.join("events.db"))
        .await
        .unwrap();
    let one = |sql: &'static str, db: &Db| {
        let db = db.clone();
        async move {
            query(sql)
                .scalar::<i64>(&mut db.reader().await.unwrap())
                .await
                .unwrap()
        }
    };
    // The log's own database keeps the positions (absent until the first run created the table).
    let positions: std::collections::HashMap<u32, i64> = query(
        "SELECT partition, next_offset FROM consumer_offsets
         WHERE grp = 'effects' AND topic = 'product-events' AND source = $1",
    )
    .bind(match mode {
        Mode::AsLog => "producer",
        Mode::Relayed => "events",
    })
    .fetch_all(&mut events.reader().await.unwrap())
    .await
    .unwrap_or_default()
    .iter()
    .map(|row| {
        (
            row.get::<i64>(0).unwrap() as u32,
            row.get::<i64>(1).unwrap(),
        )
    })
    .collect();
    let log = match mode {
        Mode::AsLog => &producer,
        Mode::Relayed => &events,
    };
    let on_log: Vec<(i64, String)> =
        query("SELECT id, key FROM outbox WHERE topic = 'product-events'")
            .fetch_all(&mut log.reader().await.unwrap())
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0).unwrap(), row.get(1).unwrap()))
            .collect();
    let census = Census {
        commands: one("SELECT COUNT(*) FROM commands", &producer).await,
        unpublished: match mode {
            Mode::AsLog => 0,
            Mode::Relayed => one("SELECT COUNT(*) FROM outbox", &producer).await,
        },
        published: on_log.len() as i64,
        committed: on_log
            .iter()
            .filter(|(id, key)| {
                positions
                    .get(&partition_for(key, PARTITIONS))
                    .is_some_and(|next| id < next)
            })
            .count() as i64,
        effects: one("SELECT COUNT(*) FROM effects", &consumer).await,
        distinct_effects: one("SELECT COUNT(DISTINCT product_id) FROM effects", &consumer).await,
    };
    producer.close().await;
    consumer.close().await;
    events.close().await;
    census
}

/// Crash at `point`, check that the crash left the state `left_behind` expects, recover, and check
/// that every command took effect exactly once.
async fn crash_and_recover(mode: Mode, point: &str, left_behind: impl Fn(&Census) -> bool) {
    let dir = tempfile::tempdir().unwrap();
    let status = run_child(dir.path(), mode, Some(point)).await;
    assert_eq!(
        status.signal(),
        Some(9),
        "the child should have been killed at {point} (SIGKILL), got {status:?}"
    );
    let after_crash = census(dir.path(), mode).await;
    assert!(
        left_behind(&after_crash),
        "the crash at {point} did not leave the state it is meant to test: {after_crash:?}"
    );

    run_child(dir.path(), mode, None).await;
    let end = census(dir.path(), mode).await;
    let n = COMMANDS as i64;
    assert_eq!(end.commands, n, "{end:?}");
    assert_eq!(end.unpublished, 0, "nothing is left to publish: {end:?}");
    if mode == Mode::AsLog {
        assert_eq!(end.published, n, "each event is on the log once: {end:?}");
    }
    assert_eq!(end.distinct_effects, n, "every event took effect: {end:?}");
    assert_eq!(end.effects, n, "no event took effect twice: {end:?}");
    assert_eq!(
        end.committed, end.published,
        "consumer lag is zero: {end:?}"
    );
}

#[tokio::test]
async fn a_crash_right_after_a_commit_loses_nothing() {
    // Killed right after the producer's 50th commit, before the consumers of this process are
    // told of it: the restarted consumer finds the rows in the producer's outbox.
    crash_and_recover(Mode::AsLog, "outbox.after_commit:50", |c| c.commands >= 50).await;
}

#[tokio::test]
async fn a_crash_between_a_consumer_commit_and_its_acknowledgement_duplicates_nothing() {
    // The consumer's transaction (its effects, its inbox rows) committed, the position not staged:
    // the restart redelivers those events, and the inbox skips them.
    crash_and_recover(Mode::AsLog, "consumer.after_commit:3", |c| {
        c.effects > c.committed
    })
    .await;
}

#[tokio::test]
async fn a_crash_at_a_checkpoint_loses_nothing() {
    // Killed as a checkpointer is about to copy the write-ahead log into a database file (the
    // third checkpoint of the databases' checkpointers): what was committed is in the log, and
    // the next open recovers it.
    crash_and_recover(Mode::AsLog, "storage.checkpoint:3", |c| c.commands > 0).await;
}

#[tokio::test]
async fn a_crash_between_the_effect_and_the_offset_commit_duplicates_nothing() {
    // Effects committed beyond the committed position: the restart redelivers them to the inbox.
    // Positions are flushed on a timer, so how many flushes a run makes depends on the machine's
    // speed; the first flush with anything staged always happens (the run waits for zero lag), so
    // it is the one point that is certain to be reached.
    crash_and_recover(Mode::AsLog, "consumer.before_offset_commit:1", |c| {
        c.effects > c.committed
    })
    .await;
}

#[tokio::test]
async fn a_relayed_outbox_loses_nothing_when_the_crash_precedes_the_publish() {
    // State and outbox rows committed, not yet on the log.
    crash_and_recover(Mode::Relayed, "relay.before_publish:3", |c| {
        c.commands > c.published && c.unpublished > 0
    })
    .await;
}

#[tokio::test]
async fn a_relayed_outbox_duplicates_nothing_when_the_crash_follows_the_publish() {
    // Published, but still in the outbox: the restart publishes those rows again, and the
    // consumer's inbox absorbs the copies.
    crash_and_recover(Mode::Relayed, "relay.after_publish:3", |c| {
        c.unpublished > 0 && c.published + c.unpublished > c.commands
    })
    .await;
}
