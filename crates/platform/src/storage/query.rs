//! Statements and the connections they run on.
//!
//! A repository writes `query("… $1 …").bind(x).fetch_optional(conn).await?` against a [`Conn`],
//! which is a transaction's ([`super::Tx::conn`]) or a reader's ([`super::Db::reader`]); it never
//! names a driver. SQL uses `$1`-style parameters, which both dialects read (a parameter may appear
//! more than once, in any order).
//!
//! On SQLite a statement runs right there, on the calling task's thread, with a cached prepared
//! statement: the `async` resolves without ever waiting (no hand-off to another thread). On
//! PostgreSQL it is a round trip to the server through sqlx.

use super::{Row, StorageError, Value, postgres, sqlite};

/// A connection a statement can run on: a write transaction's or a reader's.
pub struct Conn {
    pub(super) inner: ConnInner,
}

pub(super) enum ConnInner {
    Sqlite(sqlite::Handle),
    Postgres(postgres::Handle),
}

impl Conn {
    /// Commits the transaction this connection is in (an error outside one).
    pub(crate) async fn commit(&mut self) -> Result<(), StorageError> {
        match &mut self.inner {
            ConnInner::Sqlite(handle) => handle.commit(),
            ConnInner::Postgres(handle) => handle.commit().await,
        }
    }

    /// Runs `sql`, which may hold several statements and takes no parameters (schema changes).
    pub async fn execute_batch(&mut self, sql: &str) -> Result<(), StorageError> {
        match &mut self.inner {
            ConnInner::Sqlite(handle) => handle.execute_batch(sql),
            ConnInner::Postgres(handle) => handle.execute_batch(sql).await,
        }
    }
}

/// A statement and its parameters, `$1` first. Built with [`query`].
#[must_use = "a query does nothing until it is executed or fetched"]
pub struct Query<'q> {
    pub(super) sql: &'q str,
    pub(super) params: Vec<Value>,
}

/// The statement `sql`, to [`Query::bind`] parameters to and run.
pub fn query(sql: &str) -> Query<'_> {
    Query {
        sql,
        params: Vec::new(),
    }
}

impl<'q> Query<'q> {
    /// Binds the next parameter (`$1`, then `$2`, …).
    pub fn bind(mut self, value: impl Into<Value>) -> Self {
        self.params.push(value.into());
        self
    }

    /// Binds every value of `values`, in order.
    pub fn bind_all<V: Into<Value>>(mut self, values: impl IntoIterator<Item = V>) -> Self {
        self.params.extend(values.into_iter().map(Into::into));
        self
    }

    /// Runs the statement; returns how many rows it changed (inserted, updated or deleted).
    pub async fn execute(self, conn: &mut Conn) -> Result<u64, StorageError> {
        match &mut conn.inner {
            ConnInner::Sqlite(handle) => handle.execute(self.sql, &self.params),
            ConnInner::Postgres(handle) => handle.execute(self.sql, self.params).await,
        }
    }

    /// Every row the statement returns.
    pub async fn fetch_all(self, conn: &mut Conn) -> Result<Vec<Row>, StorageError> {
        match &mut conn.inner {
            ConnInner::Sqlite(handle) => handle.fetch(self.sql, &self.params, usize::MAX),
            ConnInner::Postgres(handle) => handle.fetch_all(self.sql, self.params).await,
        }
    }

    /// The first row, if any (the statement runs to its end, so an `UPDATE … RETURNING` changes
    /// every row it matches).
    pub async fn fetch_optional(self, conn: &mut Conn) -> Result<Option<Row>, StorageError> {
        match &mut conn.inner {
            ConnInner::Sqlite(handle) => {
                Ok(handle.fetch(self.sql, &self.params, 1)?.into_iter().next())
            }
            ConnInner::Postgres(handle) => handle.fetch_optional(self.sql, self.params).await,
        }
    }

    /// The first row; none is a [`StorageError::Query`].
    pub async fn fetch_one(self, conn: &mut Conn) -> Result<Row, StorageError> {
        let sql = self.sql;
        self.fetch_optional(conn)
            .await?
            .ok_or_else(|| StorageError::Query(format!("no row returned by {}", brief(sql))))
    }

    /// The first column of the first row.
    pub async fn scalar<T: super::FromValue>(self, conn: &mut Conn) -> Result<T, StorageError> {
        self.fetch_one(conn).await?.get(0)
    }

    /// The first column of the first row, if there is a row.
    pub async fn scalar_optional<T: super::FromValue>(
        self,
        conn: &mut Conn,
    ) -> Result<Option<T>, StorageError> {
        self.fetch_optional(conn)
            .await?
            .map(|row| row.get(0))
            .transpose()
    }

    /// The first column of every row.
    pub async fn scalars<T: super::FromValue>(
        self,
        conn: &mut Conn,
    ) -> Result<Vec<T>, StorageError> {
        self.fetch_all(conn)
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect()
    }
}

/// The start of `sql`, for error messages.
pub(super) fn brief(sql: &str) -> String {
    let flat: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

/// How many bytes at the start of `sql` are a quoted string or name, or a comment (`--` to the end of
/// the line, `/* … */`): text in which a `$1` is not a parameter. 0 when `sql` starts with code.
/// An unterminated one runs to the end.
pub(super) fn skip_non_code(sql: &str) -> usize {
    let end_of = |from: usize, closing: &str| {
        sql[from..]
            .find(closing)
            .map_or(sql.len(), |at| from + at + closing.len())
    };
    if sql.starts_with("--") {
        end_of(2, "\n")
    } else if sql.starts_with("/*") {
        end_of(2, "*/")
    } else if let Some(quote @ ('\'' | '"')) = sql.chars().next() {
        // A doubled quote inside is two quoted strings back to back: the same to a scanner.
        end_of(1, if quote == '\'' { "'" } else { "\"" })
    } else {
        0
    }
}

/// `$from, $from+1, …` for `n` parameters: for `IN (…)` lists.
pub fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}
