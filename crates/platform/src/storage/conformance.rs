//! The storage port's conformance suite (feature `conformance`): what every adapter must do, one
//! `pub async fn` per property, each taking a fresh database migrated with [`MIGRATIONS`].
//! `tests/it/storage.rs` runs every check on SQLite and on PostgreSQL; the outbox, inbox and relay
//! properties built on top of the port are checked there too.

// Test support: failing loudly is its job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use uuid::Uuid;

use super::{Db, EventContext, Migration, StorageError, Value, query};

/// The tables the checks use. Both dialects take the same SQL.
pub const MIGRATIONS: &[Migration] = &[
    Migration::portable(
        100,
        "kinds",
        "CREATE TABLE kinds (
            id    TEXT PRIMARY KEY,
            n     BIGINT,
            t     TEXT,
            b     BYTEA,
            r     DOUBLE PRECISION,
            flag  BIGINT)",
    ),
    Migration::portable(
        101,
        "counters",
        "CREATE TABLE counters (name TEXT PRIMARY KEY, n BIGINT NOT NULL)",
    ),
];

fn context() -> EventContext {
    EventContext::request("conformance", "conformance")
}

/// Every type the port carries comes back as it went in, NULLs included, and reading a NULL or
/// another type into a plain type is an error that names the column.
pub async fn values_round_trip_with_their_types(db: &Db) {
    let id = Uuid::now_v7();
    let mut tx = db.begin(context()).await.unwrap();
    query("INSERT INTO kinds (id, n, t, b, r, flag) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(id)
        .bind(i64::MIN)
        .bind("ünïcødé ✓ 'quoted'")
        .bind(vec![0u8, 255, 7])
        .bind(2.5f64)
        .bind(true)
        .execute(tx.conn())
        .await
        .unwrap();
    query("INSERT INTO kinds (id, n, t, b, r, flag) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind("nulls")
        .bind(Value::Int(None))
        .bind(Value::Text(None))
        .bind(Value::Bytes(None))
        .bind(Value::Real(None))
        .bind(Option::<bool>::None)
        .execute(tx.conn())
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut reader = db.reader().await.unwrap();
    let row = query("SELECT id, n, t, b, r, flag FROM kinds WHERE id = $1")
        .bind(id)
        .fetch_one(&mut reader)
        .await
        .unwrap();
    assert_eq!(row.get::<Uuid>("id").unwrap(), id);
    assert_eq!(row.get::<i64>("n").unwrap(), i64::MIN);
    assert_eq!(row.get::<String>("t").unwrap(), "ünïcødé ✓ 'quoted'");
    assert_eq!(row.get::<Vec<u8>>("b").unwrap(), vec![0u8, 255, 7]);
    assert_eq!(row.get::<f64>("r").unwrap(), 2.5);
    assert!(row.get::<bool>("flag").unwrap());

    let nulls = query("SELECT n, t, b, r, flag FROM kinds WHERE id = $1")
        .bind("nulls")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    assert_eq!(nulls.get::<Option<i64>>("n").unwrap(), None);
    assert_eq!(nulls.get::<Option<String>>("t").unwrap(), None);
    assert_eq!(nulls.get::<Option<Vec<u8>>>("b").unwrap(), None);
    assert_eq!(nulls.get::<Option<f64>>("r").unwrap(), None);
    assert_eq!(nulls.get::<Option<bool>>("flag").unwrap(), None);
    let error = nulls.get::<i64>("n").unwrap_err();
    assert!(
        matches!(&error, StorageError::Query(m) if m.contains("\"n\"")),
        "{error}"
    );
    let error = row.get::<i64>("t").unwrap_err();
    assert!(matches!(error, StorageError::Query(_)), "{error}");

    // Aggregates come back as integers on both (cast where PostgreSQL would widen them).
    let count: i64 = query("SELECT COUNT(*) FROM kinds")
        .scalar(&mut reader)
        .await
        .unwrap();
    assert_eq!(count, 2);
    let sum: i64 = query("SELECT CAST(COALESCE(SUM(flag), 0) AS BIGINT) FROM kinds")
        .scalar(&mut reader)
        .await
        .unwrap();
    assert_eq!(sum, 1);
}

/// `$N` names the N-th bound value wherever it appears, any number of times; a statement given
/// fewer values than it uses is refused before it runs.
pub async fn parameters_are_numbered_and_may_repeat(db: &Db) {
    let mut reader = db.reader().await.unwrap();
    let row = query(
        "SELECT CAST($2 AS TEXT) AS two, CAST($1 AS BIGINT) AS one, CAST($2 AS TEXT) AS again",
    )
    .bind(41i64)
    .bind("b")
    .fetch_one(&mut reader)
    .await
    .unwrap();
    assert_eq!(row.get::<String>("two").unwrap(), "b");
    assert_eq!(row.get::<i64>("one").unwrap(), 41);
    assert_eq!(row.get::<String>("again").unwrap(), "b");

    let short = query("SELECT CAST($1 AS BIGINT) + CAST($2 AS BIGINT)")
        .bind(1i64)
        .fetch_one(&mut reader)
        .await;
    assert!(matches!(short, Err(StorageError::Query(_))), "{short:?}");
}

/// `execute` counts the rows a statement changed; `RETURNING` gives them back; `ON CONFLICT` does
/// nothing or updates.
pub async fn changes_are_counted_and_returned(db: &Db) {
    let mut tx = db.begin(context()).await.unwrap();
    let conn = tx.conn();
    for name in ["a", "b", "c"] {
        let inserted =
            query("INSERT INTO counters (name, n) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING")
                .bind(name)
                .execute(conn)
                .await
                .unwrap();
        assert_eq!(inserted, 1);
    }
    let again =
        query("INSERT INTO counters (name, n) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING")
            .bind("a")
            .execute(conn)
            .await
            .unwrap();
    assert_eq!(again, 0, "a conflict that does nothing changes nothing");
    let upserted: i64 = query(
        "INSERT INTO counters (name, n) VALUES ($1, 5)
         ON CONFLICT (name) DO UPDATE SET n = counters.n + excluded.n RETURNING n",
    )
    .bind("a")
    .scalar(conn)
    .await
    .unwrap();
    assert_eq!(upserted, 5);
    let updated = query("UPDATE counters SET n = n + 1 WHERE name <> $1")
        .bind("a")
        .execute(conn)
        .await
        .unwrap();
    assert_eq!(updated, 2);
    let returned: Vec<String> =
        query("UPDATE counters SET n = n + 10 WHERE n >= $1 RETURNING name")
            .bind(1i64)
            .scalars(conn)
            .await
            .unwrap();
    let mut returned = returned;
    returned.sort();
    assert_eq!(returned, ["a", "b", "c"]);
    let none = query("UPDATE counters SET n = 0 WHERE name = $1 RETURNING n")
        .bind("missing")
        .fetch_optional(conn)
        .await
        .unwrap();
    assert!(none.is_none());
    let deleted = query("DELETE FROM counters WHERE name = $1")
        .bind("c")
        .execute(conn)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    tx.commit().await.unwrap();
}

/// A constraint violation is the statement's fault ([`StorageError::Query`], never
/// `Unavailable`), and the transaction it happened in can be dropped, leaving nothing behind.
pub async fn a_constraint_violation_is_a_query_error(db: &Db) {
    let mut tx = db.begin(context()).await.unwrap();
    query("INSERT INTO counters (name, n) VALUES ($1, 1)")
        .bind("x")
        .execute(tx.conn())
        .await
        .unwrap();
    let duplicate = query("INSERT INTO counters (name, n) VALUES ($1, 2)")
        .bind("x")
        .execute(tx.conn())
        .await;
    assert!(
        matches!(duplicate, Err(StorageError::Query(_))),
        "{duplicate:?}"
    );
    let not_null = query("INSERT INTO counters (name, n) VALUES ($1, $2)")
        .bind("y")
        .bind(Value::Int(None))
        .execute(tx.conn())
        .await;
    assert!(
        matches!(not_null, Err(StorageError::Query(_))),
        "{not_null:?}"
    );
    let syntax = query("SELEC nothing").execute(tx.conn()).await;
    assert!(matches!(syntax, Err(StorageError::Query(_))), "{syntax:?}");
    drop(tx);
    let rows: i64 = query("SELECT COUNT(*) FROM counters")
        .scalar(&mut db.reader().await.unwrap())
        .await
        .unwrap();
    assert_eq!(rows, 0);
    // The database is usable after the abandoned transaction.
    let mut tx = db.begin(context()).await.unwrap();
    query("INSERT INTO counters (name, n) VALUES ($1, 1)")
        .bind("x")
        .execute(tx.conn())
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// A dropped transaction rolls back; a reader sees a transaction's writes only once committed; a
/// savepoint undoes part of a transaction.
pub async fn transactions_are_atomic_and_isolated(db: &Db) {
    let mut dropped = db.begin(context()).await.unwrap();
    query("INSERT INTO counters (name, n) VALUES ($1, 1)")
        .bind("dropped")
        .execute(dropped.conn())
        .await
        .unwrap();
    drop(dropped);

    let mut tx = db.begin(context()).await.unwrap();
    query("INSERT INTO counters (name, n) VALUES ($1, 1)")
        .bind("kept")
        .execute(tx.conn())
        .await
        .unwrap();
    query("SAVEPOINT part").execute(tx.conn()).await.unwrap();
    query("INSERT INTO counters (name, n) VALUES ($1, 1)")
        .bind("undone")
        .execute(tx.conn())
        .await
        .unwrap();
    query("ROLLBACK TO SAVEPOINT part")
        .execute(tx.conn())
        .await
        .unwrap();
    query("RELEASE SAVEPOINT part")
        .execute(tx.conn())
        .await
        .unwrap();
    let names = || async {
        query("SELECT name FROM counters ORDER BY name")
            .scalars::<String>(&mut db.reader().await.unwrap())
            .await
            .unwrap()
    };
    assert!(names().await.is_empty(), "uncommitted writes are not seen");
    tx.commit().await.unwrap();
    assert_eq!(names().await, ["kept"]);
}

/// Write transactions on one row never lose an update, however many tasks race: each
/// `UPDATE … RETURNING` sees the previous one's value.
pub async fn concurrent_writers_lose_no_update(db: &Db) {
    let mut tx = db.begin(context()).await.unwrap();
    query("INSERT INTO counters (name, n) VALUES ($1, 0)")
        .bind("race")
        .execute(tx.conn())
        .await
        .unwrap();
    tx.commit().await.unwrap();

    const TASKS: i64 = 8;
    const EACH: i64 = 25;
    let db = Arc::new(db.clone());
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..EACH {
                let mut tx = db.begin(context()).await.unwrap();
                let n: i64 = query("UPDATE counters SET n = n + 1 WHERE name = $1 RETURNING n")
                    .bind("race")
                    .scalar(tx.conn())
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                seen.push(n);
                tokio::task::yield_now().await;
            }
            seen
        }));
    }
    let mut seen = Vec::new();
    for task in tasks {
        seen.extend(task.await.unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=TASKS * EACH).collect::<Vec<_>>());
}

/// A database reports itself healthy, and many readers can be used at once.
pub async fn readers_work_side_by_side(db: &Db) {
    db.check().await.unwrap();
    let mut readers = Vec::new();
    for _ in 0..6 {
        readers.push(db.reader().await.unwrap());
    }
    for reader in &mut readers {
        let one: i64 = query("SELECT 1").scalar(reader).await.unwrap();
        assert_eq!(one, 1);
    }
}
