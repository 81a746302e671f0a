//! How the CLI prints: aligned tables for people, JSON for programs.

use serde_json::{json, Value as Json};
use shardline::rows::row_to_json;
use shardline::{Row, Schema, ShardCommit, ShardRows, Topology, Value, WriteResult};

/// Lays out `rows` under `header` in columns padded to their widest cell.
pub(crate) fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            } else {
                widths.push(cell.chars().count());
            }
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            out.push_str(cell);
            if i + 1 < cells.len() {
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&line(&rule));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// One cell: strings shown as they are, except control characters escaped.
fn cell(v: &Value) -> String {
    match v {
        Value::Str(s) if s.chars().any(char::is_control) => s.chars().flat_map(char::escape_default).collect(),
        v => v.to_string(),
    }
}

/// Column names from the schema (positional names where it has none).
pub(crate) fn header(schema: Option<&Schema>, width: usize) -> Vec<String> {
    (0..width)
        .map(|i| schema.and_then(|s| s.columns.get(i)).map_or_else(|| format!("c{i}"), |c| c.name.clone()))
        .collect()
}

/// Rows as a table with the schema's column names.
pub(crate) fn rows_table(schema: Option<&Schema>, rows: &[Row]) -> String {
    let width = schema.map_or_else(|| rows.first().map_or(1, |r| r.values.len() + 1), |s| s.columns.len());
    let cells: Vec<Vec<String>> =
        rows.iter().map(|r| std::iter::once(r.key.to_string()).chain(r.values.iter().map(cell)).collect()).collect();
    table(&header(schema, width), &cells)
}

/// Rows as a JSON array of objects keyed by column name.
pub(crate) fn rows_json(schema: Option<&Schema>, rows: &[Row]) -> Json {
    let empty = Schema { columns: vec![] };
    let schema = schema.unwrap_or(&empty);
    Json::Array(rows.iter().map(|r| row_to_json(schema, r)).collect())
}

/// A server's rows by shard, as JSON.
pub(crate) fn server_rows_json(schema: Option<&Schema>, server: &str, shards: &[ShardRows]) -> Json {
    let shards: Vec<Json> =
        shards.iter().map(|s| json!({"shard": s.shard.to_string(), "rows": rows_json(schema, &s.rows)})).collect();
    json!({"server": server, "shards": shards})
}

fn commit_json(c: &ShardCommit) -> Json {
    json!({
        "shard": c.shard.to_string(),
        "term": c.term,
        "index": c.index,
        "replicas": c.replicas,
        "rows": c.rows,
    })
}

/// A write's commits as JSON.
pub(crate) fn write_json(result: &WriteResult) -> Json {
    json!({
        "rows": result.rows(),
        "commits": result.commits.iter().map(commit_json).collect::<Vec<_>>(),
    })
}

/// A write's commits as a table.
pub(crate) fn write_text(verb: &str, result: &WriteResult) -> String {
    let rows: Vec<Vec<String>> = result
        .commits
        .iter()
        .map(|c| {
            vec![c.shard.to_string(), c.rows.to_string(), c.term.to_string(), c.index.to_string(), c.replicas.join(",")]
        })
        .collect();
    let header: Vec<String> = ["shard", "rows", "term", "log index", "replicas"].map(String::from).to_vec();
    format!("{verb} {} row{}\n{}", result.rows(), if result.rows() == 1 { "" } else { "s" }, table(&header, &rows))
}

/// The topology as JSON.
pub(crate) fn topology_json(t: &Topology) -> Json {
    let schema = t
        .schema
        .as_ref()
        .map(|s| s.columns.iter().map(|c| json!({"name": c.name, "type": c.ty.to_string()})).collect::<Vec<_>>());
    let shards: Vec<Json> = t
        .shards
        .iter()
        .map(|s| {
            json!({
                "id": s.spec.id.to_string(),
                "low": s.spec.low,
                "high": s.spec.high(),
                "size": s.spec.size,
                "term": s.term,
                "primary": s.primary,
                "replicas": s.replicas,
                "readable": s.readable,
            })
        })
        .collect();
    let servers: Vec<Json> = t
        .servers
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "addr": s.addr,
                "healthy": s.healthy,
                "last_heartbeat_ms": s.last_heartbeat_ms,
            })
        })
        .collect();
    let copies: Vec<Json> = t
        .copies
        .iter()
        .map(|c| {
            let p = &c.progress;
            json!({
                "shard": c.shard.to_string(),
                "server": c.server,
                "direction": format!("{:?}", p.direction).to_lowercase(),
                "peer": p.peer,
                "upto": p.upto,
                "rows": p.copied.rows,
                "bytes": p.copied.bytes,
                "total_rows": p.total.rows,
                "total_bytes": p.total.bytes,
            })
        })
        .collect();
    json!({"version": t.version, "schema": schema, "shards": shards, "servers": servers, "copies": copies})
}

/// The topology as tables: schema, shards, servers.
pub(crate) fn topology_text(t: &Topology) -> String {
    let mut out = format!("topology version {}\n", t.version);
    match &t.schema {
        None => {
            out.push_str("not initialized: run `shardline init --config FILE`\n");
            return out;
        }
        Some(s) => {
            let cols: Vec<String> = s.columns.iter().map(|c| format!("{} ({})", c.name, c.ty)).collect();
            out.push_str(&format!("schema: {}\n\n", cols.join(", ")));
        }
    }
    let h = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let shards: Vec<Vec<String>> = t
        .shards
        .iter()
        .map(|s| {
            let high = s.spec.high().map_or("-".into(), |h| h.to_string());
            vec![
                s.spec.id.to_string(),
                format!("{}..={high}", s.spec.low),
                s.term.to_string(),
                s.primary.clone().unwrap_or_else(|| "NONE".into()),
                s.replicas.join(","),
                format!("{}/{}", s.readable.len(), s.replicas.len()),
            ]
        })
        .collect();
    out.push_str(&table(&h(&["shard", "keys", "term", "primary", "replicas", "readable"]), &shards));
    out.push('\n');
    let servers: Vec<Vec<String>> = t
        .servers
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.addr.clone(),
                if s.healthy { "up" } else { "DOWN" }.into(),
                s.last_heartbeat_ms.map_or("never".into(), |ms| format!("{ms} ms ago")),
            ]
        })
        .collect();
    out.push_str(&table(&h(&["server", "address", "health", "last heartbeat"]), &servers));
    if !t.copies.is_empty() {
        let copies: Vec<Vec<String>> = t.copies.iter().map(copy_row).collect();
        out.push('\n');
        out.push_str(&table(&h(&["copy", "on", "side", "peer", "rows", "MiB", "done"]), &copies));
    }
    out
}

/// One snapshot copy under way, as a row of the copies table.
fn copy_row(c: &shardline::ShardCopy) -> Vec<String> {
    let p = &c.progress;
    let mib = |b: u64| format!("{:.1}", b as f64 / (1024.0 * 1024.0));
    let side = match p.direction {
        shardline::CopyDirection::Sending => "sending to",
        shardline::CopyDirection::Receiving => "receiving from",
    };
    vec![
        c.shard.to_string(),
        c.server.clone(),
        side.into(),
        p.peer.clone(),
        format!("{}/{}", p.copied.rows, p.total.rows),
        format!("{}/{}", mib(p.copied.bytes), mib(p.total.bytes)),
        format!("{:.0}%", p.fraction() * 100.0),
    ]
}

/// Prints JSON on one line.
pub(crate) fn print_json(value: &Json) {
    println!("{value}");
}
