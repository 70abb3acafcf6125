//! Test support (feature `conformance`): a fresh service database on SQLite or on PostgreSQL for
//! one test, and [`on_both_backends!`](crate::on_both_backends), which runs a list of tests once on
//! each. Every service's repository tests use it, so "passes on SQLite" and "passes on PostgreSQL"
//! mean the same tests.
//!
//! PostgreSQL runs when `EMPORIUM_TEST_DATABASE_URL` names a server (`scripts/dev-services` starts
//! one and prints it); without it each PostgreSQL test says it is skipped and passes, so a plain
//! `cargo test` needs no server. Each test gets a database of its own, dropped and recreated at its
//! start (so tests and test binaries run in parallel, and a failed run can be inspected with
//! `psql -l` until the next one).

// Test support: failing loudly is its job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ops::Deref;

use sqlx::Connection;

use emporium_events::Envelope;

use super::{Db, EventContext, Migration, query};

/// The variable naming the PostgreSQL server the tests may use.
pub const DATABASE_URL_VARIABLE: &str = "EMPORIUM_TEST_DATABASE_URL";

/// A migrated service database made for one test. Derefs to [`Db`], so a test passes `&db` where
/// a `&Db` is wanted; keep it (not a clone of the `Db`) alive for the test's length: on SQLite it
/// owns the temporary directory holding the file.
pub struct TestDb {
    db: Db,
    backend: Backend,
}

enum Backend {
    Sqlite { _dir: tempfile::TempDir },
    Postgres { server: String, name: String },
}

impl Deref for TestDb {
    type Target = Db;

    fn deref(&self) -> &Db {
        &self.db
    }
}

impl TestDb {
    /// Another instance of the service on the same database, as another process would open it;
    /// `None` on SQLite, whose file belongs to one process.
    pub async fn another_instance(&self) -> Option<Db> {
        match &self.backend {
            Backend::Sqlite { .. } => None,
            Backend::Postgres { server, name } => {
                Some(Db::open_postgres(name, server).await.unwrap())
            }
        }
    }
}

/// The events `db`'s transactions emitted since the last call, oldest first, taken out of the
/// outbox by one statement (a read then a delete would lose what a running task emits between the
/// two). Through a transaction: readers are read-only.
pub async fn take_emitted(db: &Db) -> Vec<Envelope> {
    let mut tx = db
        .begin(EventContext::request("test", "test"))
        .await
        .unwrap();
    let mut rows: Vec<(i64, Vec<u8>)> = query("DELETE FROM outbox RETURNING id, payload")
        .fetch_all(tx.conn())
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0).unwrap(), row.get(1).unwrap()))
        .collect();
    tx.commit().await.unwrap();
    rows.sort_by_key(|(id, _)| *id);
    rows.iter()
        .map(|(_, payload)| Envelope::from_json(payload).unwrap())
        .collect()
}

/// A fresh SQLite database of `service` in a temporary directory, with `migrations` applied.
pub async fn sqlite(service: &str, migrations: &[Migration]) -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_sqlite(service, &dir.path().join(format!("{service}.db")))
        .await
        .unwrap();
    db.migrate(migrations).await.unwrap();
    TestDb {
        db,
        backend: Backend::Sqlite { _dir: dir },
    }
}

/// A fresh PostgreSQL database of `service` for the test `test` (any string unique among every
/// test binary's tests, e.g. its `module_path!()` and name), with `migrations` applied; `None`,
/// after saying so on stderr, when [`DATABASE_URL_VARIABLE`] is not set.
pub async fn postgres(service: &str, test: &str, migrations: &[Migration]) -> Option<TestDb> {
    let Ok(server) = std::env::var(DATABASE_URL_VARIABLE) else {
        eprintln!(
            "skipped: {test} on PostgreSQL needs {DATABASE_URL_VARIABLE} \
             (run scripts/dev-services; .ci/run does)"
        );
        return None;
    };
    let name = database_name(service, test);
    let mut conn = sqlx::PgConnection::connect(&server).await.unwrap();
    sqlx::raw_sql(&format!(
        "DROP DATABASE IF EXISTS \"emporium_{name}\" WITH (FORCE)"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let db = Db::open_postgres(&name, &server).await.unwrap();
    db.migrate(migrations).await.unwrap();
    Some(TestDb {
        db,
        backend: Backend::Postgres { server, name },
    })
}

/// `it_<service>_<test>`, cut to fit PostgreSQL's 63-byte names once [`Db::open_postgres`] has
/// put `emporium_` in front, and made unique again by a hash of the whole `test` (which a cut
/// may have shortened into another test's name).
fn database_name(service: &str, test: &str) -> String {
    const HEAD: usize = 54 - 1 - 8;
    let short_test = test.rsplit("::").next().unwrap_or(test);
    let mut head: String = format!("it_{service}_{short_test}")
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '_',
        })
        .collect();
    head.truncate(HEAD);
    format!("{head}_{:08x}", crc32fast::hash(test.as_bytes()))
}

/// Runs each listed test once on a fresh SQLite database (`sqlite::<name>`) and once on a fresh
/// PostgreSQL database (`postgres::<name>`, skipped without a server). Each test is an
/// `async fn <name>(db: T)` in the invoking module, where `T` is [`TestDb`] or a fixture with
/// `From<TestDb>`; the service name and migrations are expressions in that module's scope:
///
/// ```ignore
/// emporium_platform::on_both_backends!(NAME, store::MIGRATIONS; a_test, another_test);
/// ```
///
/// Tests run on a two-thread runtime, so the ones racing transactions really race.
#[macro_export]
macro_rules! on_both_backends {
    ($service:expr, $migrations:expr; $($name:ident),* $(,)?) => {
        async fn open_sqlite_for_test() -> $crate::storage::testing::TestDb {
            $crate::storage::testing::sqlite($service, $migrations).await
        }

        async fn open_postgres_for_test(
            test: &str,
        ) -> ::std::option::Option<$crate::storage::testing::TestDb> {
            $crate::storage::testing::postgres($service, test, $migrations).await
        }

        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::open_sqlite_for_test().await.into()).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let test = concat!(module_path!(), "::", stringify!($name));
                    if let Some(db) = super::open_postgres_for_test(test).await {
                        super::$name(db.into()).await;
                    }
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::database_name;

    #[test]
    fn database_names_fit_postgres_and_stay_apart() {
        let long = "a_very_long_test_name_that_goes_on_and_on_past_any_limit_there_is";
        let one = database_name("recommendations", &format!("emporium_x::tests::{long}_1"));
        let two = database_name("recommendations", &format!("emporium_x::tests::{long}_2"));
        assert_eq!(one.len(), 54, "{one}");
        assert_ne!(one, two);
        assert!(one.starts_with("it_recommendations_a_very_long"), "{one}");
        let other_crate = database_name("orders", "emporium_y::tests::postgres::Same");
        assert!(other_crate.starts_with("it_orders_same_"), "{other_crate}");
        assert_ne!(
            database_name("orders", "emporium_y::tests::same"),
            database_name("orders", "emporium_z::tests::same"),
        );
    }
}
