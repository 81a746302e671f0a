//! The data model every process shares: schema, values, rows, shards and servers.
//!
//! A cluster holds one table. Its first column is the integer shard key (the seed's
//! `Stud_id`); a [`Row`] carries that key apart from the other columns so that routing
//! never has to look inside the values.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The type of one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ColumnType {
    /// A signed 64-bit integer.
    Int,
    /// A 64-bit IEEE float.
    Float,
    /// A UTF-8 string.
    Str,
}

impl ColumnType {
    /// Parses the names users write in configs: `int`, `integer`, `float`, `str`, `string`.
    pub fn parse(name: &str) -> Option<ColumnType> {
        match name.to_ascii_lowercase().as_str() {
            "int" | "integer" | "number" | "i64" => Some(ColumnType::Int),
            "float" | "double" | "real" | "f64" => Some(ColumnType::Float),
            "str" | "string" | "text" | "varchar" => Some(ColumnType::Str),
            _ => None,
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ColumnType::Int => "int",
            ColumnType::Float => "float",
            ColumnType::Str => "string",
        })
    }
}

/// One named, typed column.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Column {
    /// The column's name, unique within the schema.
    pub name: String,
    /// The column's type.
    pub ty: ColumnType,
}

/// The table's schema; column 0 is the integer shard key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Schema {
    /// All columns, the key first.
    pub columns: Vec<Column>,
}

/// Why a schema or a row does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// A schema needs at least the key column.
    #[error("a schema needs at least one column (the integer key)")]
    Empty,
    /// The first column must be an integer.
    #[error("the first column `{0}` is the shard key and must be an integer")]
    KeyNotInt(String),
    /// Two columns share a name.
    #[error("column `{0}` appears twice")]
    DuplicateColumn(String),
    /// A row has the wrong number of columns.
    #[error("row has {got} columns, the schema has {want}")]
    Arity {
        /// Columns in the row, key included.
        got: usize,
        /// Columns in the schema, key included.
        want: usize,
    },
    /// A value has the wrong type for its column.
    #[error("column `{column}` wants {want}, got {got}")]
    Type {
        /// The column's name.
        column: String,
        /// The column's type.
        want: ColumnType,
        /// What the value was.
        got: ColumnType,
    },
}

impl Schema {
    /// The seed's schema: `Stud_id` int key, `Stud_name` string, `Stud_marks` int.
    pub fn seed() -> Schema {
        Schema::new(&[("Stud_id", ColumnType::Int), ("Stud_name", ColumnType::Str), ("Stud_marks", ColumnType::Int)])
    }

    /// Builds a schema from (name, type) pairs without validating it.
    pub fn new(columns: &[(&str, ColumnType)]) -> Schema {
        Schema { columns: columns.iter().map(|(name, ty)| Column { name: (*name).to_owned(), ty: *ty }).collect() }
    }

    /// Checks the schema itself: non-empty, integer key, unique names.
    pub fn validate(&self) -> Result<(), SchemaError> {
        let key = self.columns.first().ok_or(SchemaError::Empty)?;
        if key.ty != ColumnType::Int {
            return Err(SchemaError::KeyNotInt(key.name.clone()));
        }
        for (i, c) in self.columns.iter().enumerate() {
            if self.columns[..i].iter().any(|o| o.name == c.name) {
                return Err(SchemaError::DuplicateColumn(c.name.clone()));
            }
        }
        Ok(())
    }

    /// Checks a row against the schema, widening integers in float columns.
    pub fn check_row(&self, row: &mut Row) -> Result<(), SchemaError> {
        let want = self.columns.len();
        let got = row.values.len() + 1;
        if got != want {
            return Err(SchemaError::Arity { got, want });
        }
        for (value, column) in row.values.iter_mut().zip(&self.columns[1..]) {
            match (column.ty, &*value) {
                (ColumnType::Float, Value::Int(i)) => *value = Value::Float(*i as f64),
                (want, v) if v.ty() != want => {
                    return Err(SchemaError::Type { column: column.name.clone(), want, got: v.ty() })
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// One cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
}

impl Value {
    /// The column type this value fits.
    pub fn ty(&self) -> ColumnType {
        match self {
            Value::Int(_) => ColumnType::Int,
            Value::Float(_) => ColumnType::Float,
            Value::Str(_) => ColumnType::Str,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Str(s) => f.write_str(s),
        }
    }
}

/// One row: the shard key and the other columns in schema order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The shard key (column 0).
    pub key: i64,
    /// Columns 1.. in schema order.
    pub values: Vec<Value>,
}

impl Row {
    /// Builds a row from its key and other columns.
    pub fn new(key: i64, values: Vec<Value>) -> Row {
        Row { key, values }
    }
}

/// A shard's number; shown to people as `sh<N>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sh{}", self.0)
    }
}

impl ShardId {
    /// Parses `sh3` or `3`.
    pub fn parse(s: &str) -> Option<ShardId> {
        let digits = s.strip_prefix("sh").unwrap_or(s);
        digits.parse().ok().map(ShardId)
    }
}

/// A shard's identity and key range `[low, low + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShardSpec {
    /// The shard's number.
    pub id: ShardId,
    /// The lowest key it owns.
    pub low: i64,
    /// How many keys it owns.
    pub size: u64,
}

impl ShardSpec {
    /// Whether `key` falls in this shard's range.
    pub fn contains(&self, key: i64) -> bool {
        key >= self.low && ((key as i128) < self.low as i128 + self.size as i128)
    }

    /// The highest key the shard owns, or `None` for an empty shard.
    pub fn high(&self) -> Option<i64> {
        let high = self.low as i128 + self.size as i128 - 1;
        (self.size > 0).then(|| high.min(i64::MAX as i128) as i64)
    }

    /// Whether `[low, high]` (inclusive) overlaps this shard.
    pub fn overlaps(&self, low: i64, high: i64) -> bool {
        self.high().is_some_and(|h| low <= h && high >= self.low)
    }
}

/// A replica's log position: the (term, index) of its last entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogPosition {
    /// Term of the entry.
    pub term: u64,
    /// Index of the entry (1-based; 0 means "empty log").
    pub index: u64,
}

/// Where a server listens, by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServerAddr {
    /// The server's name, e.g. `Server0`.
    pub name: String,
    /// Its `host:port`.
    pub addr: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_schema_is_valid_and_checks_rows() {
        let schema = Schema::seed();
        schema.validate().unwrap();
        let mut good = Row::new(1, vec![Value::Str("alice".into()), Value::Int(77)]);
        schema.check_row(&mut good).unwrap();
        let mut short = Row::new(1, vec![Value::Str("alice".into())]);
        assert_eq!(schema.check_row(&mut short), Err(SchemaError::Arity { got: 2, want: 3 }));
        let mut wrong = Row::new(1, vec![Value::Int(3), Value::Int(77)]);
        assert!(matches!(schema.check_row(&mut wrong), Err(SchemaError::Type { .. })));
    }

    #[test]
    fn ints_widen_into_float_columns() {
        let schema = Schema::new(&[("k", ColumnType::Int), ("x", ColumnType::Float)]);
        let mut row = Row::new(1, vec![Value::Int(2)]);
        schema.check_row(&mut row).unwrap();
        assert_eq!(row.values, vec![Value::Float(2.0)]);
    }

    #[test]
    fn bad_schemas_are_refused() {
        assert_eq!(Schema { columns: vec![] }.validate(), Err(SchemaError::Empty));
        let s = Schema::new(&[("k", ColumnType::Str)]);
        assert!(matches!(s.validate(), Err(SchemaError::KeyNotInt(_))));
        let s = Schema::new(&[("k", ColumnType::Int), ("k", ColumnType::Int)]);
        assert!(matches!(s.validate(), Err(SchemaError::DuplicateColumn(_))));
    }

    #[test]
    fn shard_ranges_are_half_open() {
        let s = ShardSpec { id: ShardId(1), low: 4096, size: 4096 };
        assert!(s.contains(4096) && s.contains(8191) && !s.contains(8192) && !s.contains(4095));
        assert!(s.overlaps(0, 4096) && s.overlaps(8191, 9000) && !s.overlaps(8192, 9000));
        let top = ShardSpec { id: ShardId(2), low: i64::MAX, size: 10 };
        assert!(top.contains(i64::MAX));
        assert_eq!(top.high(), Some(i64::MAX));
    }

    #[test]
    fn shard_ids_print_and_parse() {
        assert_eq!(ShardId(3).to_string(), "sh3");
        assert_eq!(ShardId::parse("sh3"), Some(ShardId(3)));
        assert_eq!(ShardId::parse("7"), Some(ShardId(7)));
        assert_eq!(ShardId::parse("shx"), None);
    }
}
