//! Values crossing the storage port: what a statement is given ([`Value`], through
//! [`super::Query::bind`]) and what a row holds ([`Row`], read with [`Row::get`] into any
//! [`FromValue`] type). One set of types for both adapters, so a repository never sees a driver.
//!
//! Both dialects store the same few types: `BIGINT` (also for booleans, 0 or 1), `TEXT` (also for
//! ids), `BYTEA`/`BLOB` and `DOUBLE PRECISION`/`REAL`. A `NULL` parameter keeps its column type
//! (`Value::Text(None)`), because PostgreSQL wants to know it.

use std::sync::Arc;

use uuid::Uuid;

use super::StorageError;

/// One value: a parameter or a column of a row. `None` is SQL `NULL`, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(
            self,
            Value::Int(None) | Value::Real(None) | Value::Text(None) | Value::Bytes(None)
        )
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::Int(_) => "an integer",
            Value::Real(_) => "a real",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
        }
    }
}

macro_rules! value_from {
    ($($t:ty => |$v:ident| $e:expr),* $(,)?) => {
        $(
            impl From<$t> for Value {
                fn from($v: $t) -> Self {
                    $e
                }
            }
        )*
    };
}

value_from! {
    i64 => |v| Value::Int(Some(v)),
    Option<i64> => |v| Value::Int(v),
    i32 => |v| Value::Int(Some(i64::from(v))),
    u32 => |v| Value::Int(Some(i64::from(v))),
    u16 => |v| Value::Int(Some(i64::from(v))),
    bool => |v| Value::Int(Some(i64::from(v))),
    Option<bool> => |v| Value::Int(v.map(i64::from)),
    f64 => |v| Value::Real(Some(v)),
    Option<f64> => |v| Value::Real(v),
    String => |v| Value::Text(Some(v)),
    Option<String> => |v| Value::Text(v),
    &String => |v| Value::Text(Some(v.clone())),
    &Option<String> => |v| Value::Text(v.clone()),
    &str => |v| Value::Text(Some(v.to_owned())),
    Option<&str> => |v| Value::Text(v.map(str::to_owned)),
    Option<&String> => |v| Value::Text(v.cloned()),
    Uuid => |v| Value::Text(Some(v.to_string())),
    &Uuid => |v| Value::Text(Some(v.to_string())),
    Option<Uuid> => |v| Value::Text(v.map(|v| v.to_string())),
    Vec<u8> => |v| Value::Bytes(Some(v)),
    Option<Vec<u8>> => |v| Value::Bytes(v),
    &[u8] => |v| Value::Bytes(Some(v.to_vec())),
    &Vec<u8> => |v| Value::Bytes(Some(v.clone())),
}

/// A Rust type a column can be read into. `Option<T>` reads `NULL` as `None`; the others call a
/// `NULL` an error.
pub trait FromValue: Sized {
    fn from_value(value: &Value) -> Result<Self, String>;
}

fn wrong(expected: &str, value: &Value) -> String {
    if value.is_null() {
        format!("expected {expected}, found NULL")
    } else {
        format!("expected {expected}, found {}", value.kind())
    }
}

impl FromValue for i64 {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Int(Some(v)) => Ok(*v),
            other => Err(wrong("an integer", other)),
        }
    }
}

impl FromValue for i32 {
    fn from_value(value: &Value) -> Result<Self, String> {
        let v = i64::from_value(value)?;
        i32::try_from(v).map_err(|_| format!("{v} does not fit 32 bits"))
    }
}

impl FromValue for u32 {
    fn from_value(value: &Value) -> Result<Self, String> {
        let v = i64::from_value(value)?;
        u32::try_from(v).map_err(|_| format!("{v} does not fit an unsigned 32 bits"))
    }
}

impl FromValue for u16 {
    fn from_value(value: &Value) -> Result<Self, String> {
        let v = i64::from_value(value)?;
        u16::try_from(v).map_err(|_| format!("{v} does not fit an unsigned 16 bits"))
    }
}

impl FromValue for u64 {
    fn from_value(value: &Value) -> Result<Self, String> {
        let v = i64::from_value(value)?;
        u64::try_from(v).map_err(|_| format!("{v} is negative"))
    }
}

/// Booleans are stored as integers (0 false, anything else true) on both dialects.
impl FromValue for bool {
    fn from_value(value: &Value) -> Result<Self, String> {
        Ok(i64::from_value(value)? != 0)
    }
}

impl FromValue for f64 {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Real(Some(v)) => Ok(*v),
            // SQLite stores a REAL that happens to be whole as an integer.
            Value::Int(Some(v)) => Ok(*v as f64),
            other => Err(wrong("a real", other)),
        }
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Text(Some(v)) => Ok(v.clone()),
            other => Err(wrong("text", other)),
        }
    }
}

impl FromValue for Uuid {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Text(Some(v)) => Uuid::parse_str(v).map_err(|_| format!("{v:?} is not a UUID")),
            other => Err(wrong("a UUID as text", other)),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Bytes(Some(v)) => Ok(v.clone()),
            // SQLite returns what was stored: text written into a BLOB column stays text.
            Value::Text(Some(v)) => Ok(v.clone().into_bytes()),
            other => Err(wrong("bytes", other)),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Result<Self, String> {
        if value.is_null() {
            Ok(None)
        } else {
            T::from_value(value).map(Some)
        }
    }
}

/// Which column of a row: its position (from 0) or its name.
pub trait ColumnIndex {
    fn position(&self, row: &Row) -> Option<usize>;
    fn describe(&self) -> String;
}

impl ColumnIndex for usize {
    fn position(&self, row: &Row) -> Option<usize> {
        (*self < row.values.len()).then_some(*self)
    }

    fn describe(&self) -> String {
        format!("column {self}")
    }
}

impl ColumnIndex for &str {
    fn position(&self, row: &Row) -> Option<usize> {
        row.columns.iter().position(|name| name == self)
    }

    fn describe(&self) -> String {
        format!("column {self:?}")
    }
}

/// One row of a result, the same whichever adapter produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    columns: Arc<[String]>,
    values: Vec<Value>,
}

impl Row {
    pub(super) fn new(columns: Arc<[String]>, values: Vec<Value>) -> Self {
        Row { columns, values }
    }

    /// The column at `index` (a position or a name) as a `T`; a missing column, a `NULL` where
    /// `T` is not an `Option`, or another type is a [`StorageError::Query`] naming the column.
    pub fn get<T: FromValue>(&self, index: impl ColumnIndex) -> Result<T, StorageError> {
        let Some(position) = index.position(self) else {
            return Err(StorageError::Query(format!(
                "no {} in the row",
                index.describe()
            )));
        };
        T::from_value(&self.values[position])
            .map_err(|e| StorageError::Query(format!("{}: {e}", index.describe())))
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The values as returned, in column order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: Vec<Value>) -> Row {
        let columns: Vec<String> = (0..values.len()).map(|i| format!("c{i}")).collect();
        Row::new(columns.into(), values)
    }

    #[test]
    fn columns_are_read_by_position_or_name_into_their_types() {
        let id = Uuid::now_v7();
        let row = row(vec![
            7i64.into(),
            "x".into(),
            id.into(),
            true.into(),
            Value::Text(None),
        ]);
        assert_eq!(row.get::<i64>(0).unwrap(), 7);
        assert_eq!(row.get::<String>("c1").unwrap(), "x");
        assert_eq!(row.get::<Uuid>("c2").unwrap(), id);
        assert!(row.get::<bool>(3).unwrap());
        assert_eq!(row.get::<Option<String>>("c4").unwrap(), None);
    }

    #[test]
    fn a_null_or_a_wrong_type_or_a_missing_column_is_an_error_naming_the_column() {
        let row = row(vec![Value::Int(None), "x".into()]);
        let null = row.get::<i64>(0).unwrap_err().to_string();
        assert!(null.contains("column 0") && null.contains("NULL"), "{null}");
        let wrong = row.get::<i64>("c1").unwrap_err().to_string();
        assert!(
            wrong.contains("\"c1\"") && wrong.contains("text"),
            "{wrong}"
        );
        let missing = row.get::<i64>("nope").unwrap_err().to_string();
        assert!(missing.contains("\"nope\""), "{missing}");
    }
}
