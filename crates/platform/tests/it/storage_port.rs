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
