//! Rows from text: command-line words, CSV and JSON lines, typed by the cluster's schema;
//! and rows back to JSON objects keyed by column name.
//!
//! ```
//! use shardline::rows::{row_from_words, row_to_json};
//! use shardline::{Schema, Value};
//!
//! let schema = Schema::seed();
//! let row = row_from_words(&schema, &["42", "alice", "77"]).unwrap();
//! assert_eq!(row.values, vec![Value::Str("alice".into()), Value::Int(77)]);
//! assert_eq!(
//!     row_to_json(&schema, &row).to_string(),
//!     r#"{"Stud_id":42,"Stud_name":"alice","Stud_marks":77}"#
//! );
//! ```

use std::io::{BufRead, Read};

use serde_json::{Map, Value as Json};
use shardline_protocol::{ColumnType, Row, Schema, Value};

/// Why input does not make a row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RowError {
    /// Wrong number of values.
    #[error("{where_}a row needs {want} values ({columns}), got {got}")]
    Arity {
        /// Where in the input (empty for arguments).
        where_: String,
        /// Values the schema wants, key included.
        want: usize,
        /// Values given.
        got: usize,
        /// The column names, for the message.
        columns: String,
    },
    /// A value does not have its column's type.
    #[error("{where_}column `{column}` wants {ty}, got `{text}`")]
    Type {
        /// Where in the input.
        where_: String,
        /// The column.
        column: String,
        /// Its type.
        ty: ColumnType,
        /// What was given.
        text: String,
    },
    /// A CSV header or JSON object whose names do not match the schema.
    #[error("{where_}{reason}")]
    Columns {
        /// Where in the input.
        where_: String,
        /// What is missing or extra.
        reason: String,
    },
    /// The input is not well-formed CSV or JSON.
    #[error("{where_}{reason}")]
    Syntax {
        /// Where in the input.
        where_: String,
        /// What the parser said.
        reason: String,
    },
}

/// Parses one value for `column` of type `ty`.
pub fn parse_value(text: &str, ty: ColumnType, column: &str, where_: &str) -> Result<Value, RowError> {
    let bad = || RowError::Type { where_: where_.to_owned(), column: column.to_owned(), ty, text: text.to_owned() };
    match ty {
        ColumnType::Int => text.trim().parse().map(Value::Int).map_err(|_| bad()),
        ColumnType::Float => match text.trim().parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Value::Float(x)),
            _ => Err(bad()),
        },
        ColumnType::Str => Ok(Value::Str(text.to_owned())),
    }
}

fn column_list(schema: &Schema) -> String {
    let names: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
    names.join(", ")
}

fn row_from(schema: &Schema, words: &[&str], where_: &str) -> Result<Row, RowError> {
    if words.len() != schema.columns.len() {
        return Err(RowError::Arity {
            where_: where_.to_owned(),
            want: schema.columns.len(),
            got: words.len(),
            columns: column_list(schema),
        });
    }
    let mut values = Vec::with_capacity(words.len());
    for (word, column) in words.iter().zip(&schema.columns) {
        values.push(parse_value(word, column.ty, &column.name, where_)?);
    }
    let Value::Int(key) = values.remove(0) else { unreachable!("a validated schema's key column is an integer") };
    Ok(Row::new(key, values))
}

/// A row from words in schema order, the key first: `["42", "alice", "77"]`.
pub fn row_from_words(schema: &Schema, words: &[&str]) -> Result<Row, RowError> {
    row_from(schema, words, "")
}

/// Rows from CSV with a header row naming the schema's columns (in any order).
pub fn csv_rows<R: Read>(schema: &Schema, input: R) -> Result<impl Iterator<Item = Result<Row, RowError>>, RowError> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::Headers).from_reader(input);
    let header =
        reader.headers().map_err(|e| RowError::Syntax { where_: "CSV header: ".into(), reason: e.to_string() })?;
    let names: Vec<&str> = header.iter().collect();
    let order = column_order(schema, &names, "CSV header: ")?;
    let schema = schema.clone();
    Ok(reader.into_records().enumerate().map(move |(i, record)| {
        let where_ = format!("CSV line {}: ", i + 2);
        let record = record.map_err(|e| RowError::Syntax { where_: where_.clone(), reason: e.to_string() })?;
        if record.len() != order.len() {
            return Err(RowError::Arity {
                where_,
                want: order.len(),
                got: record.len(),
                columns: column_list(&schema),
            });
        }
        let words: Vec<&str> = order.iter().map(|&i| &record[i]).collect();
        row_from(&schema, &words, &where_)
    }))
}

/// For each schema column, its position among `names`; every column must appear once,
/// and nothing else.
fn column_order(schema: &Schema, names: &[&str], where_: &str) -> Result<Vec<usize>, RowError> {
    let err = |reason: String| RowError::Columns { where_: where_.to_owned(), reason };
    for n in names {
        if !schema.columns.iter().any(|c| c.name == *n) {
            return Err(err(format!("unknown column `{n}`; the schema has {}", column_list(schema))));
        }
    }
    schema
        .columns
        .iter()
        .map(|c| {
            let mut at = names.iter().enumerate().filter(|(_, n)| **n == c.name);
            match (at.next(), at.next()) {
                (Some((i, _)), None) => Ok(i),
                (None, _) => Err(err(format!("column `{}` is missing", c.name))),
                (Some(_), Some(_)) => Err(err(format!("column `{}` appears twice", c.name))),
            }
        })
        .collect()
}

/// Rows from JSON lines: one object a line, keyed by column name. Blank lines are skipped.
pub fn jsonl_rows<R: BufRead>(schema: &Schema, input: R) -> impl Iterator<Item = Result<Row, RowError>> {
    let schema = schema.clone();
    input.lines().enumerate().filter(|(_, line)| line.as_ref().map_or(true, |l| !l.trim().is_empty())).map(
        move |(i, line)| {
            let where_ = format!("line {}: ", i + 1);
            let syntax = |reason: String| RowError::Syntax { where_: where_.clone(), reason };
            let line = line.map_err(|e| syntax(e.to_string()))?;
            let obj: Map<String, Json> =
                serde_json::from_str(&line).map_err(|e| syntax(format!("not a JSON object: {e}")))?;
            row_from_json(&schema, &obj, &where_)
        },
    )
}

/// A row from a JSON object keyed by column name.
pub fn row_from_json(schema: &Schema, obj: &Map<String, Json>, where_: &str) -> Result<Row, RowError> {
    let names: Vec<&str> = obj.keys().map(String::as_str).collect();
    column_order(schema, &names, where_)?;
    let mut values = Vec::with_capacity(schema.columns.len());
    for column in &schema.columns {
        let v = &obj[&column.name];
        let bad = || RowError::Type {
            where_: where_.to_owned(),
            column: column.name.clone(),
            ty: column.ty,
            text: v.to_string(),
        };
        let value = match (column.ty, v) {
            (ColumnType::Int, Json::Number(n)) => Value::Int(n.as_i64().ok_or_else(bad)?),
            (ColumnType::Float, Json::Number(n)) => Value::Float(n.as_f64().ok_or_else(bad)?),
            (ColumnType::Str, Json::String(s)) => Value::Str(s.clone()),
            (ty, Json::String(s)) if ty != ColumnType::Str => parse_value(s, ty, &column.name, where_)?,
            _ => return Err(bad()),
        };
        values.push(value);
    }
    let Value::Int(key) = values.remove(0) else { unreachable!("a validated schema's key column is an integer") };
    Ok(Row::new(key, values))
}

/// A row as a JSON object keyed by column name (positional names `c1`, `c2`… for values
/// the schema does not name).
pub fn row_to_json(schema: &Schema, row: &Row) -> Json {
    let mut obj = Map::new();
    let name = |i: usize| schema.columns.get(i).map_or_else(|| format!("c{i}"), |c| c.name.clone());
    obj.insert(name(0), Json::from(row.key));
    for (i, v) in row.values.iter().enumerate() {
        let v = match v {
            Value::Int(n) => Json::from(*n),
            Value::Float(x) => serde_json::Number::from_f64(*x).map_or(Json::Null, Json::Number),
            Value::Str(s) => Json::from(s.as_str()),
        };
        obj.insert(name(i + 1), v);
    }
    Json::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_typed_by_the_schema() {
        let s = Schema::seed();
        assert_eq!(row_from_words(&s, &["7", "42", "1"]).unwrap().values[0], Value::Str("42".into()));
        let e = row_from_words(&s, &["x", "a", "1"]).unwrap_err();
        assert_eq!(e.to_string(), "column `Stud_id` wants int, got `x`");
        let e = row_from_words(&s, &["1", "a"]).unwrap_err();
        assert!(e.to_string().contains("needs 3 values"), "{e}");
    }

    #[test]
    fn csv_columns_may_come_in_any_order() {
        let text = "Stud_marks,Stud_id,Stud_name\n77,1,alice\n80,2,\"bob, jr\"\n";
        let rows: Vec<Row> = csv_rows(&Schema::seed(), text.as_bytes()).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(rows[1], Row::new(2, vec![Value::Str("bob, jr".into()), Value::Int(80)]));
        let bad = "Stud_id,Stud_name,Stud_marks\n1,a,x\n";
        let e = csv_rows(&Schema::seed(), bad.as_bytes()).unwrap().next().unwrap().unwrap_err();
        assert!(e.to_string().starts_with("CSV line 2: column `Stud_marks`"), "{e}");
        let Err(e) = csv_rows(&Schema::seed(), "id,name\n".as_bytes()) else { panic!("a wrong header is refused") };
        assert!(e.to_string().contains("unknown column `id`"), "{e}");
    }

    #[test]
    fn json_lines_round_trip() {
        let s = Schema::seed();
        let text = "{\"Stud_id\":1,\"Stud_name\":\"a\",\"Stud_marks\":5}\n\n{\"Stud_id\":2,\"Stud_name\":\"b\",\"Stud_marks\":\"6\"}\n";
        let rows: Vec<Row> = jsonl_rows(&s, text.as_bytes()).collect::<Result<_, _>>().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(row_to_json(&s, &rows[0]).to_string(), text.lines().next().unwrap());
        let e = jsonl_rows(&s, "{\"Stud_id\":1.5,\"Stud_name\":\"a\",\"Stud_marks\":5}".as_bytes())
            .next()
            .unwrap()
            .unwrap_err();
        assert!(e.to_string().contains("wants int"), "{e}");
    }
}
