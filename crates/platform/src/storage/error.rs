//! The storage port's one error type, neutral of the database behind it.

/// What went wrong with a statement or its database. The split is what callers act on: a consumer
/// pauses and retries on [`StorageError::Unavailable`] (nothing is wrong with the event), and
/// retries then dead-letters on [`StorageError::Query`].
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database cannot be reached or is failing: retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A statement was refused (constraint, type, syntax): retrying will not help.
    #[error("database error: {0}")]
    Query(String),
    #[error("migration {version} ({name}) failed: {message}")]
    Migration {
        version: i64,
        name: &'static str,
        message: String,
    },
}

impl StorageError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StorageError::Unavailable(_))
    }
}

impl From<sqlx::Error> for StorageError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if is_unavailable_code(&db.code().unwrap_or_default()) => {
                StorageError::Unavailable(e.to_string())
            }
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_) => StorageError::Unavailable(e.to_string()),
            _ => StorageError::Query(e.to_string()),
        }
    }
}

/// Does this database error code mean the database (not the statement) is in trouble?
///
/// PostgreSQL codes are five characters (SQLSTATE): connection (08), insufficient resources (53),
/// operator intervention (57), system (58), serialization failure and deadlock (40001, 40P01: retry
/// the whole transaction), lock not available (55P03). SQLite codes are numbers whose low byte is the
/// primary code: BUSY 5, LOCKED 6, READONLY 8, IOERR 10, FULL 13, CANTOPEN 14.
pub(crate) fn is_unavailable_code(code: &str) -> bool {
    if code.len() == 5 {
        ["08", "53", "57", "58"]
            .iter()
            .any(|class| code.starts_with(class))
            || matches!(code, "40001" | "40P01" | "55P03")
    } else {
        code.parse::<i64>().is_ok_and(is_unavailable_sqlite_code)
    }
}

/// [`is_unavailable_code`] for a SQLite result code (extended or primary).
pub(crate) fn is_unavailable_sqlite_code(code: i64) -> bool {
    matches!(code & 0xff, 5 | 6 | 8 | 10 | 13 | 14)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_classified_by_dialect() {
        for code in [
            "5", "261", "517", "8", "1032", "10", "3850", "13", "14", "08006", "53100", "57P01",
            "40001", "40P01", "55P03",
        ] {
            assert!(
                is_unavailable_code(code),
                "{code} means the database is in trouble"
            );
        }
        for code in ["19", "2067", "1", "23505", "42P01", "22P02"] {
            assert!(
                !is_unavailable_code(code),
                "{code} is the statement's fault"
            );
        }
    }
}
