//! The PostgreSQL adapter, on sqlx's PostgreSQL driver (prepared statements cached per
//! connection by sqlx). One pool serves transactions and reads: PostgreSQL has no single writer
//! to queue behind.

use std::{sync::Arc, time::Duration};

use sqlx::{
    Column, Connection, Executor, PgConnection, PgPool, Postgres, Row as _, TypeInfo,
    pool::PoolConnection,
    postgres::{PgConnectOptions, PgPoolOptions, PgRow},
};

use super::{Row, StorageError, Value, query::brief};

pub(super) struct Database {
    pool: PgPool,
}

impl Database {
    /// Connects to `database` on the server of `server_url`, creating the database if it is not
    /// there (the role needs CREATEDB for that).
    pub(super) async fn open(server_url: &str, database: &str) -> Result<Database, StorageError> {
        let server: PgConnectOptions = server_url
            .parse()
            .map_err(|e: sqlx::Error| StorageError::Unavailable(e.to_string()))?;
        create_database(&server, database).await?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(server.database(database))
            .await?;
        Ok(Database { pool })
    }

    pub(super) async fn begin(&self) -> Result<Handle, StorageError> {
        Ok(Handle::Tx(Some(self.pool.begin().await?)))
    }

    pub(super) async fn connection(&self) -> Result<Handle, StorageError> {
        Ok(Handle::Conn(self.pool.acquire().await?))
    }

    /// A connection of its own, outside the pool: for a session lock that must end with it.
    pub(super) async fn detached(&self) -> Result<Handle, StorageError> {
        Ok(Handle::Detached(Some(self.pool.acquire().await?.detach())))
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates `database` on the server unless it exists. Instances starting together may both try:
/// the loser's "already exists" is success.
async fn create_database(server: &PgConnectOptions, database: &str) -> Result<(), StorageError> {
    let mut conn = PgConnection::connect_with(server).await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(database)
        .fetch_optional(&mut conn)
        .await?;
    if exists.is_none() {
        match conn
            .execute(format!("CREATE DATABASE \"{database}\"").as_str())
            .await
        {
            Ok(_) => tracing::info!(database, "created PostgreSQL database"),
            // 42P04 duplicate_database; 23505 when the race is lost inside the catalog.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Err(e) = conn.close().await {
        tracing::debug!(error = %e, "closing the server connection");
    }
    Ok(())
}

pub(super) enum Handle {
    /// `None` once committed.
    Tx(Option<sqlx::Transaction<'static, Postgres>>),
    Conn(PoolConnection<Postgres>),
    /// Closed (not returned to the pool) on drop; `None` once closed.
    Detached(Option<PgConnection>),
}

impl Handle {
    fn conn(&mut self) -> Result<&mut PgConnection, StorageError> {
        match self {
            Handle::Tx(Some(tx)) => Ok(&mut **tx),
            Handle::Conn(conn) => Ok(&mut **conn),
            Handle::Detached(Some(conn)) => Ok(conn),
            Handle::Tx(None) | Handle::Detached(None) => Err(StorageError::Query(
                "statement on a finished transaction".to_owned(),
            )),
        }
    }

    pub(super) async fn commit(&mut self) -> Result<(), StorageError> {
        match self {
            Handle::Tx(tx) => match tx.take() {
                Some(tx) => Ok(tx.commit().await?),
                None => Err(StorageError::Query("committed twice".to_owned())),
            },
            _ => Err(StorageError::Query(
                "commit outside a transaction".to_owned(),
            )),
        }
    }

    /// Ends a detached session (releasing its session locks).
    pub(super) async fn close(&mut self) {
        if let Handle::Detached(conn) = self
            && let Some(conn) = conn.take()
            && let Err(e) = conn.close().await
        {
            tracing::debug!(error = %e, "closing a detached session");
        }
    }

    pub(super) async fn execute_batch(&mut self, sql: &str) -> Result<(), StorageError> {
        // A `&str` without arguments goes by the simple query protocol, which runs several
        // statements. (`sqlx::raw_sql` does the same, but its future is not `Send` for every
        // lifetime, which callers inside `async_trait` methods need.)
        sqlx::Executor::execute(self.conn()?, sql).await?;
        Ok(())
    }

    pub(super) async fn execute(
        &mut self,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<u64, StorageError> {
        Ok(bind(sql, params)?
            .execute(self.conn()?)
            .await?
            .rows_affected())
    }

    pub(super) async fn fetch_all(
        &mut self,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Vec<Row>, StorageError> {
        let rows = bind(sql, params)?.fetch_all(self.conn()?).await?;
        let Some(first) = rows.first() else {
            return Ok(Vec::new());
        };
        let columns = column_names(first);
        rows.iter().map(|row| convert(row, &columns)).collect()
    }

    pub(super) async fn fetch_optional(
        &mut self,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Option<Row>, StorageError> {
        let row = bind(sql, params)?.fetch_optional(self.conn()?).await?;
        row.map(|row| convert(&row, &column_names(&row)))
            .transpose()
    }
}

/// `sql` with `params` bound. A statement given another number of values than it uses is refused
/// here: the server would call it a protocol violation, which reads as an outage.
fn bind(
    sql: &str,
    params: Vec<Value>,
) -> Result<sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>, StorageError> {
    let highest = highest_parameter(sql);
    if highest != params.len() {
        return Err(StorageError::Query(format!(
            "{} takes {highest} parameters but {} values were bound",
            brief(sql),
            params.len()
        )));
    }
    Ok(params
        .into_iter()
        .fold(sqlx::query(sql), |query, value| match value {
            Value::Int(v) => query.bind(v),
            Value::Real(v) => query.bind(v),
            Value::Text(v) => query.bind(v),
            Value::Bytes(v) => query.bind(v),
        }))
}

/// The highest `$N` in `sql`, outside string literals, quoted identifiers and comments.
fn highest_parameter(sql: &str) -> usize {
    let mut highest = 0;
    let mut rest = sql;
    while let Some(c) = rest.chars().next() {
        let skipped = super::query::skip_non_code(rest);
        if skipped > 0 {
            rest = &rest[skipped..];
        } else if c == '$' {
            let digits = rest[1..]
                .find(|d: char| !d.is_ascii_digit())
                .map_or(rest.len() - 1, |at| at);
            if let Ok(n) = rest[1..1 + digits].parse::<usize>() {
                highest = highest.max(n);
            }
            rest = &rest[1 + digits..];
        } else {
            rest = &rest[c.len_utf8()..];
        }
    }
    highest
}

fn column_names(row: &PgRow) -> Arc<[String]> {
    row.columns().iter().map(|c| c.name().to_owned()).collect()
}

/// A row in the port's types. Integers of any width and booleans become integers; text-like
/// types become text. `NUMERIC` (what `SUM(BIGINT)` gives) is refused: cast it in the SQL.
fn convert(row: &PgRow, columns: &Arc<[String]>) -> Result<Row, StorageError> {
    let mut values = Vec::with_capacity(columns.len());
    for (i, column) in row.columns().iter().enumerate() {
        let value = match column.type_info().name() {
            "INT8" => Value::Int(row.try_get::<Option<i64>, _>(i)?),
            "INT4" => Value::Int(row.try_get::<Option<i32>, _>(i)?.map(i64::from)),
            "INT2" => Value::Int(row.try_get::<Option<i16>, _>(i)?.map(i64::from)),
            "BOOL" => Value::Int(row.try_get::<Option<bool>, _>(i)?.map(i64::from)),
            "FLOAT8" => Value::Real(row.try_get::<Option<f64>, _>(i)?),
            "FLOAT4" => Value::Real(row.try_get::<Option<f32>, _>(i)?.map(f64::from)),
            "BYTEA" => Value::Bytes(row.try_get::<Option<Vec<u8>>, _>(i)?),
            "VOID" => Value::Int(None),
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "UNKNOWN" => {
                Value::Text(row.try_get::<Option<String>, _>(i)?)
            }
            other => {
                return Err(StorageError::Query(format!(
                    "column {:?} is of type {other}, which the storage port does not read \
                     (cast it to BIGINT, TEXT, BYTEA or DOUBLE PRECISION)",
                    column.name()
                )));
            }
        };
        values.push(value);
    }
    Ok(Row::new(columns.clone(), values))
}

#[cfg(test)]
mod tests {
    use super::highest_parameter;

    #[test]
    fn parameters_are_counted_outside_literals_and_comments() {
        assert_eq!(highest_parameter("SELECT $2, $1, $2"), 2);
        assert_eq!(highest_parameter("SELECT '$9', \"$8\" -- $7\n, $3"), 3);
        assert_eq!(highest_parameter("SELECT 1"), 0);
        assert_eq!(highest_parameter("SELECT $12 + $3"), 12);
        assert_eq!(highest_parameter("/* it's */ SELECT $2 /* $9 */"), 2);
    }
}
