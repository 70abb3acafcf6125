//! Crash tests: a real child process runs a producer → outbox → relay → log → consumer → inbox
//! pipeline and is killed with SIGKILL at a named crash point; a second run
//! without the crash point finishes the work. Every event must then have taken effect exactly once.
//!
//! The child is this very test binary, re-executed to run the ignored `child_process` test, so it
//! uses exactly the platform code under test.

use std::{os::unix::process::ExitStatusExt, path::Path, sync::Arc, time::Duration};

use async_trait::async_trait;
use emporium_events::{Envelope, Event, ProductDeleted};
use emporium_platform::{
    bus::{
        EventBus, RetryPolicy, SqliteEventLog,
        consumer::{Consumer, EventHandler, HandlerError},
    },
    storage::{Db, EventContext, Migration, Tx, query, relay::Relay},
};
use uuid::Uuid;

const COMMANDS: usize = 200;
const CHILD_DIR: &str = "EMPORIUM_CRASH_CHILD_DIR";

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
async fn run_pipeline(dir: &Path) {
    let producer = Db::open_sqlite("producer", &dir.join("producer.db"))
        .await
        .unwrap();
    producer.migrate(PRODUCER).await.unwrap();
    let consumer_db = Db::open_sqlite("consumer", &dir.join("consumer.db"))
        .await
        .unwrap();
    consumer_db.migrate(CONSUMER).await.unwrap();
    let bus: Arc<dyn EventBus> = Arc::new(
        SqliteEventLog::open(&dir.join("events.db"), 4)
            .await
            .unwrap(),
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let relay = tokio::spawn(Relay::new(producer.clone(), bus.clone(), 16).run(stop_rx));
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
    stop_tx.send(true).unwrap();
    relay.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of the crash tests; they run it"]
async fn child_process() {
    let dir = std::env::var_os(CHILD_DIR)
        .expect("run by the crash tests, which set EMPORIUM_CRASH_CHILD_DIR");
    run_pipeline(Path::new(&dir)).await;
}

/// Runs the pipeline in a child process; `crash_at` makes it abort there.
async fn run_child(dir: &Path, crash_at: Option<&str>) -> std::process::ExitStatus {
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
    outbox: i64,
    published: i64,
    committed: i64,
    effects: i64,
    distinct_effects: i64,
}

async fn census(dir: &Path) -> Census {
    let producer = Db::open_sqlite("producer", &dir.join("producer.db"))
        .await
        .unwrap();
    producer.migrate(PRODUCER).await.unwrap();
    let consumer = Db::open_sqlite("consumer", &dir.join("consumer.db"))
        .await
        .unwrap();
    consumer.migrate(CONSUMER).await.unwrap();
    let log = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.join("events.db").display()))
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
    let census = Census {
        commands: one("SELECT COUNT(*) FROM commands", &producer).await,
        outbox: producer.outbox_backlog().await.unwrap(),
        published: sqlx::query_scalar("SELECT COUNT(*) FROM records WHERE topic = 'product-events'")
            .fetch_one(&log)
            .await
            .unwrap_or(0),
        committed: sqlx::query_scalar(
            "SELECT COALESCE(SUM(next_offset), 0) FROM group_offsets WHERE grp = 'effects' AND topic = 'product-events'",
        )
        .fetch_one(&log)
        .await
        .unwrap_or(0),
        effects: one("SELECT COUNT(*) FROM effects", &consumer).await,
        distinct_effects: one("SELECT COUNT(DISTINCT product_id) FROM effects", &consumer).await,
    };
    producer.close().await;
    consumer.close().await;
    log.close().await;
    census
}

/// Crash at `point`, check that the crash left the state `left_behind` expects, recover, and check
/// that every command took effect exactly once.
async fn crash_and_recover(point: &str, left_behind: impl Fn(&Census) -> bool) {
    let dir = tempfile::tempdir().unwrap();
    let status = run_child(dir.path(), Some(point)).await;
    assert_eq!(
        status.signal(),
        Some(9),
        "the child should have been killed at {point} (SIGKILL), got {status:?}"
    );
    let after_crash = census(dir.path()).await;
    assert!(
        left_behind(&after_crash),
        "the crash at {point} did not leave the state it is meant to test: {after_crash:?}"
    );

    run_child(dir.path(), None).await;
    let end = census(dir.path()).await;
    let n = COMMANDS as i64;
    assert_eq!(end.commands, n, "{end:?}");
    assert_eq!(end.outbox, 0, "the outbox is empty: {end:?}");
    assert_eq!(end.distinct_effects, n, "every event took effect: {end:?}");
    assert_eq!(end.effects, n, "no event took effect twice: {end:?}");
    assert_eq!(
        end.committed, end.published,
        "consumer lag is zero: {end:?}"
    );
}

#[tokio::test]
async fn a_crash_between_the_state_commit_and_the_publish_loses_nothing() {
    // State and outbox rows committed, not yet on the log.
    crash_and_recover("relay.before_publish:3", |c| {
        c.commands > c.published && c.outbox > 0
    })
    .await;
}

#[tokio::test]
async fn a_crash_right_after_a_commit_loses_nothing() {
    // Killed right after the 50th commit, before the relay is woken for it. The relay may still have
    // picked the row up (woken by an earlier commit) before the kill landed: only the commit count is
    // certain here.
    crash_and_recover("outbox.after_commit:50", |c| c.commands >= 50).await;
}

#[tokio::test]
async fn a_crash_between_publish_and_outbox_cleanup_duplicates_nothing() {
    // Published, but still in the outbox: the restart publishes those rows again.
    crash_and_recover("relay.after_publish:3", |c| {
        c.outbox > 0 && c.published + c.outbox > c.commands
    })
    .await;
}

#[tokio::test]
async fn a_crash_at_a_checkpoint_loses_nothing() {
    // Killed as a checkpointer is about to copy the write-ahead log into a database file (the
    // third checkpoint of the two databases' checkpointers, ~500 ms in): what was committed is in
    // the log, and the next open recovers it.
    crash_and_recover("storage.checkpoint:3", |c| c.commands > 0).await;
}

#[tokio::test]
async fn a_crash_between_the_effect_and_the_offset_commit_duplicates_nothing() {
    // Effects committed beyond the committed offset: the restart redelivers them to the inbox.
    // Offsets are flushed on a timer, so how many flushes a run makes depends on the machine's
    // speed; the first flush with anything staged always happens (the run waits for zero lag), so
    // it is the one point that is certain to be reached.
    crash_and_recover("consumer.before_offset_commit:1", |c| {
        c.effects > c.committed
    })
    .await;
}
