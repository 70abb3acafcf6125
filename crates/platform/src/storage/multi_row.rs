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

use super::{Conn, Query, StorageError, query};

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
    /// one row's values (after the `leading` ones, which this cannot give).
    pub async fn execute_for<'q, T>(
        &'q self,
        conn: &mut Conn,
        rows: &'q [T],
        bind: impl Fn(Query<'q>, &'q T) -> Query<'q>,
    ) -> Result<(), StorageError> {
        for chunk in chunks(rows) {
            let statement = chunk
                .iter()
                .fold(query(self.sql(chunk.len())), |statement, row| {
                    bind(statement, row)
                });
            statement.execute(conn).await?;
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
