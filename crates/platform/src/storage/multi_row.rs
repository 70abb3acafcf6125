//! Multi-row statements: `INSERT … VALUES (…), (…), …` with a row count from a few fixed sizes, so
//! that a batch of rows costs a few statements (and few prepared statements exist) instead of one
//! statement per row.
//!
//! ```
//! use emporium_platform::storage::{MultiRow, chunks};
//!
//! static INSERT: MultiRow = MultiRow::new("INSERT INTO t (a, b) VALUES ", 0, 2, "");
//! let rows: Vec<u32> = (0..70).collect();
//! let sizes: Vec<usize> = chunks(&rows).map(|chunk| chunk.len()).collect();
//! assert_eq!(sizes, [64, 4, 2]);
//! assert_eq!(INSERT.sql(4), "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), ($5, $6), ($7, $8)");
//! ```

use sqlx::{Connection, Database, Executor, IntoArguments, query::Query};

/// Rows per multi-row statement, largest first: a few fixed sizes, so that few statements are
/// prepared, and every small count up to 4 (an order's lines) in one.
pub const MULTI_ROW_SIZES: [usize; 6] = [64, 16, 4, 3, 2, 1];

/// `items` cut into consecutive chunks of [`MULTI_ROW_SIZES`], each the largest that fits.
pub fn chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        let size = MULTI_ROW_SIZES
            .iter()
            .copied()
            .find(|size| *size <= rest.len())?;
        let (chunk, later) = rest.split_at(size);
        rest = later;
        Some(chunk)
    })
}

/// A statement with one `(…)` group of `columns` parameters per row, built once per size in
/// [`MULTI_ROW_SIZES`]: `head`, the groups joined by commas, then `tail`. The rows' parameters
/// follow the `leading` ones `head` uses itself.
pub struct MultiRow {
    head: &'static str,
    leading: usize,
    columns: usize,
    tail: &'static str,
    built: std::sync::OnceLock<Vec<String>>,
}

impl MultiRow {
    pub const fn new(
        head: &'static str,
        leading: usize,
        columns: usize,
        tail: &'static str,
    ) -> Self {
        MultiRow {
            head,
            leading,
            columns,
            tail,
            built: std::sync::OnceLock::new(),
        }
    }

    /// Parameters per row.
    pub fn columns(&self) -> usize {
        self.columns
    }

    /// Parameters before the rows' (used by `head` itself).
    pub(super) fn leading(&self) -> usize {
        self.leading
    }

    /// Runs this statement for every one of `rows`, [`chunks`] of them at a time; `bind` binds
    /// one row's values (after the `leading` ones, which this cannot give). On any sqlx
    /// connection: the services' `Any` ones and the event log's SQLite one.
    pub async fn execute_for<'q, C, DB, T>(
        &'q self,
        conn: &mut C,
        rows: &'q [T],
        bind: impl Fn(
            Query<'q, DB, <DB as Database>::Arguments<'q>>,
            &'q T,
        ) -> Query<'q, DB, <DB as Database>::Arguments<'q>>,
    ) -> Result<(), sqlx::Error>
    where
        C: Connection<Database = DB>,
        DB: Database,
        <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
        for<'c> &'c mut C: Executor<'c, Database = DB>,
    {
        for chunk in chunks(rows) {
            let query = chunk
                .iter()
                .fold(sqlx::query(self.sql(chunk.len())), |query, row| {
                    bind(query, row)
                });
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// The statement for `rows` rows (one of [`MULTI_ROW_SIZES`]; empty for any other count).
    pub fn sql(&self, rows: usize) -> &str {
        let built = self.built.get_or_init(|| {
            MULTI_ROW_SIZES
                .iter()
                .map(|&n| {
                    let groups = (0..n)
                        .map(|row| {
                            let params = (1..=self.columns)
                                .map(|column| {
                                    format!("${}", self.leading + row * self.columns + column)
                                })
                                .collect::<Vec<_>>()
                                .join(", ");
                            format!("({params})")
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!("{}{groups}{}", self.head, self.tail)
                })
                .collect()
        });
        MULTI_ROW_SIZES
            .iter()
            .position(|n| *n == rows)
            .map_or("", |i| built[i].as_str())
    }
}

/// One value of a row given to [`crate::storage::Tx::insert_at_commit`]: a column's type, and
/// `None` for SQL `NULL` (typed, so that PostgreSQL takes it for the column).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(Some(v))
    }
}

impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        Value::Int(v)
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(Some(v))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(Some(v.to_owned()))
    }
}

impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Self {
        Value::Text(v.map(str::to_owned))
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(Some(v))
    }
}
