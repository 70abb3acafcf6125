//! Schema migrations: the platform's tables (outbox, inbox) then a service's, each applied once,
//! in version order, in its own transaction, recorded in `schema_migrations`.

use chrono::Utc;

use super::{Conn, Dialect, StorageError, query};

/// One schema change. `postgres` may differ from `sqlite` where the dialects do.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

impl Migration {
    /// A migration whose SQL both dialects accept.
    pub const fn portable(version: i64, name: &'static str, sql: &'static str) -> Self {
        Migration {
            version,
            name,
            sqlite: sql,
            postgres: sql,
        }
    }
}

/// The platform's own tables, present in every service database. Service migrations start at 100.
pub(super) const PLATFORM_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "outbox",
        sqlite: "CREATE TABLE outbox (
            id         INTEGER PRIMARY KEY,
            topic      TEXT    NOT NULL,
            key        TEXT    NOT NULL,
            payload    BLOB    NOT NULL,
            headers    TEXT    NOT NULL,
            created_at BIGINT  NOT NULL)",
        postgres: "CREATE TABLE outbox (
            id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            topic      TEXT   NOT NULL,
            key        TEXT   NOT NULL,
            payload    BYTEA  NOT NULL,
            headers    TEXT   NOT NULL,
            created_at BIGINT NOT NULL)",
    },
    Migration::portable(
        2,
        "inbox",
        "CREATE TABLE inbox (
            consumer     TEXT   NOT NULL,
            event_id     TEXT   NOT NULL,
            processed_at BIGINT NOT NULL,
            PRIMARY KEY (consumer, event_id))",
    ),
];

/// Applies what `conn`'s database lacks of the platform's migrations and `service`'s.
pub(super) async fn apply(
    conn: &mut Conn,
    dialect: Dialect,
    service: &[Migration],
) -> Result<(), StorageError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    BIGINT PRIMARY KEY,
            name       TEXT   NOT NULL,
            applied_at BIGINT NOT NULL)",
    )
    .await?;
    let mut all: Vec<&Migration> = PLATFORM_MIGRATIONS.iter().chain(service).collect();
    all.sort_by_key(|m| m.version);
    for migration in all {
        conn.execute_batch("BEGIN").await?;
        match apply_one(conn, dialect, migration).await {
            Ok(()) => conn.execute_batch("COMMIT").await?,
            Err(e) => {
                if let Err(rollback) = conn.execute_batch("ROLLBACK").await {
                    tracing::warn!(error = %rollback, "rolling back a failed migration");
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

async fn apply_one(
    conn: &mut Conn,
    dialect: Dialect,
    migration: &Migration,
) -> Result<(), StorageError> {
    let done: Option<i64> = query("SELECT version FROM schema_migrations WHERE version = $1")
        .bind(migration.version)
        .scalar_optional(conn)
        .await?;
    if done.is_some() {
        return Ok(());
    }
    let sql = match dialect {
        Dialect::Sqlite => migration.sqlite,
        Dialect::Postgres => migration.postgres,
    };
    let failed = |e: StorageError| StorageError::Migration {
        version: migration.version,
        name: migration.name,
        message: e.to_string(),
    };
    conn.execute_batch(sql).await.map_err(failed)?;
    query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
        .bind(migration.version)
        .bind(migration.name)
        .bind(Utc::now().timestamp_millis())
        .execute(conn)
        .await
        .map_err(failed)?;
    Ok(())
}
