//! Cluster layouts for `init` and `add`, read from files in two shapes.
//!
//! **The seed's JSON** (the course system's `/init` and `/add` payloads), as they were:
//!
//! ```json
//! {"N": 6,
//!  "schema": {"columns": ["Stud_id", "Stud_name", "Stud_marks"],
//!             "dtypes": ["Number", "String", "Number"]},
//!  "shards": [{"Stud_id_low": 0, "Shard_id": "sh1", "Shard_size": 4096}],
//!  "servers": {"Server0": ["sh1", "sh2"]}}
//! ```
//!
//! and `{"n": 2, "new_shards": [...], "servers": {"Server4": ["sh3"], "Server[5]": ["sh2"]}}`
//! for `add` (a name like `Server[5]` asks the coordinator for a generated name).
//!
//! **Our TOML**, the same content with plain names:
//!
//! ```toml
//! n = 6                     # servers to start (at least the ones named below)
//! columns = [               # the integer key first; types: int, float, string
//!   { name = "Stud_id", type = "int" },
//!   { name = "Stud_name", type = "string" },
//!   { name = "Stud_marks", type = "int" },
//! ]
//! [[shards]]                # `new_shards` is accepted too (for add)
//! id = "sh1"
//! low = 0
//! size = 4096
//! [servers]
//! Server0 = ["sh1", "sh2"]
//! ```
//!
//! Both are read into one JSON value and parsed by the same code, so either spelling of a
//! field works in either format: `N`/`n`, `Shard_id`/`id`, `<key>_low`/`low`,
//! `Shard_size`/`size`, `schema.columns` + `schema.dtypes` or `columns` as a table.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value as Json};
use shardline_protocol::{AddServersRequest, Column, ColumnType, InitRequest, Schema, ShardId, ShardSpec};

/// Why a layout file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        reason: String,
    },
    /// The text is not valid JSON or TOML.
    #[error("not valid {format}: {reason}")]
    Syntax {
        /// `JSON` or `TOML`.
        format: &'static str,
        /// What the parser said.
        reason: String,
    },
    /// The document parses but a field is missing or wrong.
    #[error("{0}")]
    Invalid(String),
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, LayoutError> {
    Err(LayoutError::Invalid(msg.into()))
}

/// Reads a file as JSON or TOML: by its extension, else by its first character.
pub fn read_document(path: &Path) -> Result<Json, LayoutError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| LayoutError::Io { path: path.display().to_string(), reason: e.to_string() })?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let json = match ext {
        "json" => true,
        "toml" => false,
        _ => text.trim_start().starts_with('{'),
    };
    parse_document(&text, json)
}

/// Parses `text` as JSON (`json`) or TOML into one JSON value.
pub fn parse_document(text: &str, json: bool) -> Result<Json, LayoutError> {
    if json {
        serde_json::from_str(text).map_err(|e| LayoutError::Syntax { format: "JSON", reason: e.to_string() })
    } else {
        let value: toml::Table = toml::from_str(text)
            .map_err(|e| LayoutError::Syntax { format: "TOML", reason: e.to_string().trim().replace('\n', " ") })?;
        serde_json::to_value(value).map_err(|e| LayoutError::Syntax { format: "TOML", reason: e.to_string() })
    }
}

/// Reads an init layout file (seed JSON or TOML).
pub fn load_init(path: &Path) -> Result<InitRequest, LayoutError> {
    init_from(&read_document(path)?)
}

/// Reads an add layout file (seed JSON or TOML).
pub fn load_add(path: &Path) -> Result<AddServersRequest, LayoutError> {
    add_from(&read_document(path)?)
}

/// An init request from a parsed document.
pub fn init_from(doc: &Json) -> Result<InitRequest, LayoutError> {
    let top = object(doc, "the init layout")?;
    let schema = schema_from(top)?;
    let shards = match field(top, &["shards", "new_shards"]) {
        Some(list) => shards_from(list)?,
        None => return invalid("the init layout has no `shards` list"),
    };
    let servers = match field(top, &["servers"]) {
        Some(s) => servers_from(s)?,
        None => return invalid("the init layout has no `servers` table"),
    };
    let n = count(top, servers.len())?;
    Ok(InitRequest { n, schema, shards, servers })
}

/// An add request from a parsed document.
pub fn add_from(doc: &Json) -> Result<AddServersRequest, LayoutError> {
    let top = object(doc, "the add layout")?;
    let new_shards = match field(top, &["new_shards", "shards"]) {
        Some(list) => shards_from(list)?,
        None => Vec::new(),
    };
    let servers = match field(top, &["servers"]) {
        Some(s) => servers_from(s)?,
        None => BTreeMap::new(),
    };
    let n = count(top, servers.len())?;
    Ok(AddServersRequest { n, new_shards, servers })
}

fn object<'a>(doc: &'a Json, what: &str) -> Result<&'a Map<String, Json>, LayoutError> {
    doc.as_object().ok_or_else(|| LayoutError::Invalid(format!("{what} must be an object/table")))
}

fn field<'a>(obj: &'a Map<String, Json>, names: &[&str]) -> Option<&'a Json> {
    names.iter().find_map(|n| obj.get(*n))
}

fn count(top: &Map<String, Json>, named: usize) -> Result<usize, LayoutError> {
    match field(top, &["N", "n"]) {
        None => Ok(named),
        Some(n) => match n.as_u64() {
            Some(n) => Ok(n as usize),
            None => invalid(format!("`n` must be a non-negative integer, got {n}")),
        },
    }
}

fn schema_from(top: &Map<String, Json>) -> Result<Schema, LayoutError> {
    let (columns, dtypes) = match top.get("schema") {
        Some(Json::Object(s)) => (s.get("columns"), s.get("dtypes")),
        Some(_) => return invalid("`schema` must be an object with `columns` and `dtypes`"),
        None => (top.get("columns"), None),
    };
    let Some(Json::Array(columns)) = columns else {
        return invalid("the layout has no `columns` list (under `schema` or at the top)");
    };
    let mut out = Vec::new();
    for (i, c) in columns.iter().enumerate() {
        let (name, ty) = match c {
            Json::String(name) => {
                let ty = dtypes
                    .and_then(Json::as_array)
                    .and_then(|d| d.get(i))
                    .and_then(Json::as_str)
                    .ok_or_else(|| LayoutError::Invalid(format!("column `{name}` has no entry in `dtypes`")))?;
                (name.clone(), ty.to_owned())
            }
            Json::Object(o) => {
                let name = o.get("name").and_then(Json::as_str);
                let ty = field(o, &["type", "dtype"]).and_then(Json::as_str);
                match (name, ty) {
                    (Some(n), Some(t)) => (n.to_owned(), t.to_owned()),
                    _ => return invalid(format!("column {i} needs a `name` and a `type`")),
                }
            }
            other => return invalid(format!("column {i} must be a name or a table, got {other}")),
        };
        let ty = ColumnType::parse(&ty).ok_or_else(|| {
            LayoutError::Invalid(format!("column `{name}`: unknown type `{ty}` (use int, float or string)"))
        })?;
        out.push(Column { name, ty });
    }
    let schema = Schema { columns: out };
    schema.validate().map_err(|e| LayoutError::Invalid(e.to_string()))?;
    Ok(schema)
}

fn shard_id(v: &Json) -> Result<ShardId, LayoutError> {
    let parsed = match v {
        Json::String(s) => ShardId::parse(s),
        Json::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()).map(ShardId),
        _ => None,
    };
    parsed.ok_or_else(|| LayoutError::Invalid(format!("bad shard id {v} (want `sh3` or 3)")))
}

fn shards_from(list: &Json) -> Result<Vec<ShardSpec>, LayoutError> {
    let Json::Array(list) = list else {
        return invalid("`shards` must be a list");
    };
    let mut out = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let o = object(s, &format!("shard {i}"))?;
        let id = match field(o, &["Shard_id", "shard_id", "id"]) {
            Some(v) => shard_id(v)?,
            None => return invalid(format!("shard {i} has no `Shard_id`/`id`")),
        };
        let low =
            o.iter().find(|(k, _)| k.as_str() == "low" || k.to_ascii_lowercase().ends_with("_low")).map(|(_, v)| v);
        let Some(low) = low.and_then(Json::as_i64) else {
            return invalid(format!("shard {id} needs an integer `low` (or `<key>_low`)"));
        };
        let size = field(o, &["Shard_size", "shard_size", "size"]).and_then(Json::as_u64);
        let Some(size) = size else {
            return invalid(format!("shard {id} needs a positive integer `Shard_size`/`size`"));
        };
        out.push(ShardSpec { id, low, size });
    }
    Ok(out)
}

fn servers_from(servers: &Json) -> Result<BTreeMap<String, Vec<ShardId>>, LayoutError> {
    let servers = object(servers, "`servers`")?;
    let mut out = BTreeMap::new();
    for (name, shards) in servers {
        let Json::Array(shards) = shards else {
            return invalid(format!("server `{name}` must list its shards, e.g. [\"sh1\"]"));
        };
        let ids = shards.iter().map(shard_id).collect::<Result<Vec<_>, _>>()?;
        out.insert(name.clone(), ids);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_INIT: &str = r#"{"N":6,"schema":{"columns":["Stud_id","Stud_name","Stud_marks"],
        "dtypes":["Number","String","Number"]},
        "shards":[{"Stud_id_low":0,"Shard_id":"sh1","Shard_size":4096},
                  {"Stud_id_low":4096,"Shard_id":"sh2","Shard_size":4096},
                  {"Stud_id_low":8192,"Shard_id":"sh3","Shard_size":4096},
                  {"Stud_id_low":12288,"Shard_id":"sh4","Shard_size":4096}],
        "servers":{"Server0":["sh1","sh2"],"Server1":["sh3","sh4"],"Server2":["sh1","sh3"],
                   "Server3":["sh4","sh2"],"Server4":["sh1","sh4"],"Server5":["sh3","sh2"]}}"#;

    #[test]
    fn the_seed_payload_is_the_default_layout() {
        let doc = parse_document(SEED_INIT, true).unwrap();
        let init = init_from(&doc).unwrap();
        let mut want = InitRequest::seed();
        for shards in want.servers.values_mut() {
            shards.sort();
        }
        let mut got = init.clone();
        for shards in got.servers.values_mut() {
            shards.sort();
        }
        assert_eq!(got, want);
    }

    #[test]
    fn toml_says_the_same() {
        let text = r#"
            n = 2
            columns = [{ name = "id", type = "int" }, { name = "score", type = "float" }]
            [[shards]]
            id = "sh1"
            low = 0
            size = 100
            [servers]
            A = ["sh1"]
            B = [1]
        "#;
        let init = init_from(&parse_document(text, false).unwrap()).unwrap();
        assert_eq!(init.n, 2);
        assert_eq!(init.schema.columns[1].ty, ColumnType::Float);
        assert_eq!(init.servers["B"], vec![ShardId(1)]);
        assert_eq!(init.shards[0].size, 100);
    }

    #[test]
    fn the_seed_add_payload_parses() {
        let text = r#"{"n":2,"new_shards":[{"Stud_id_low":16384,"Shard_id":"sh5","Shard_size":4096}],
            "servers":{"Server4":["sh3","sh5"],"Server[5]":["sh2","sh5"]}}"#;
        let add = add_from(&parse_document(text, true).unwrap()).unwrap();
        assert_eq!(add.n, 2);
        assert_eq!(add.new_shards[0].low, 16384);
        assert_eq!(add.servers["Server[5]"], vec![ShardId(2), ShardId(5)]);
    }

    #[test]
    fn mistakes_are_named() {
        for (text, needle) in [
            (r#"{"shards":[],"servers":{}}"#, "columns"),
            (r#"{"columns":[{"name":"k","type":"blob"}],"shards":[],"servers":{}}"#, "blob"),
            (r#"{"columns":["k"],"shards":[],"servers":{}}"#, "dtypes"),
            (
                r#"{"columns":[{"name":"k","type":"int"}],"shards":[{"id":"x","low":0,"size":1}],"servers":{}}"#,
                "bad shard id",
            ),
            (r#"[1]"#, "object"),
        ] {
            let e = init_from(&parse_document(text, true).unwrap()).unwrap_err();
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
        assert!(matches!(parse_document("{", true), Err(LayoutError::Syntax { .. })));
    }
}
