//! The storage port's conformance suite ([`emporium_platform::storage::conformance`]) on SQLite
//! and, when `EMPORIUM_TEST_DATABASE_URL` names a server, on PostgreSQL.

use emporium_platform::storage::{conformance, testing::TestDb};

macro_rules! conformance_checks {
    ($($check:ident),* $(,)?) => {
        $(
            async fn $check(db: TestDb) {
                conformance::$check(&db).await;
            }
        )*
        emporium_platform::on_both_backends!("port", conformance::MIGRATIONS; $($check),*);
    };
}

conformance_checks!(
    values_round_trip_with_their_types,
    parameters_are_numbered_and_may_repeat,
    changes_are_counted_and_returned,
    a_constraint_violation_is_a_query_error,
    transactions_are_atomic_and_isolated,
    concurrent_writers_lose_no_update,
    readers_work_side_by_side,
);

/// Under writes that never pause, the SQLite write-ahead log still starts over: a checkpoint
/// beside a busy writer never copies the last frames, and without the checkpointer taking the
/// writer now and then the log would grow by everything written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_ahead_log_stays_small_under_sustained_writes() {
    use emporium_platform::storage::{Db, EventContext, Migration, query};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.db");
    let db = Db::open_sqlite("busy", &path).await.unwrap();
    db.migrate(&[Migration::portable(
        100,
        "blobs",
        "CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB NOT NULL)",
    )])
    .await
    .unwrap();
    let blob = vec![7u8; 16 * 1024];
    let started = std::time::Instant::now();
    let mut written = 0u64;
    while started.elapsed() < std::time::Duration::from_secs(2) {
        let mut tx = db.begin(EventContext::request("busy", "")).await.unwrap();
        // A few rows rewritten over and over: the database stays small, the log does not.
        query("INSERT OR REPLACE INTO blobs (id, b) VALUES ($1, $2)")
            .bind((written / blob.len() as u64 % 8) as i64)
            .bind(blob.clone())
            .execute(tx.conn())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        written += blob.len() as u64;
    }
    // The file keeps the size it once had (up to the size limit); had the log never started
    // over, it would hold everything written.
    let wal = std::fs::metadata(dir.path().join("busy.db-wal"))
        .unwrap()
        .len();
    assert!(
        wal < written / 2,
        "the WAL is {wal} bytes after {written} bytes were written"
    );
}
