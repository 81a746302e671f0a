//! Responses → readable lines.

use std::fmt::Write as _;

use crate::message::{CopyDirection, CopyProgress, NodeStatus, Response, ShardCommit, Topology};
use crate::model::{Row, Value};
use crate::text::TextError;

/// What `HELP` prints: every command with an example, then `OK`.
pub const HELP: &str = "\
Shardline text mode: one command a line; every answer ends with a line starting OK or ERR.
  PING                          liveness check                 PING
  AUTH <user> <secret>          authenticate this connection   AUTH app s3cret
  HELP                          this list                      HELP
  STATUS                        cluster or node status         STATUS
  STATS                         counters and latencies         STATS
  READ <low> <high> [LEVEL]     rows with low <= key <= high   READ 100 200
    LEVEL: ANY (default) | PRIMARY | BOUNDED <ms> | BOUNDED <n>E | SESSION [sh1=45,...]
  READSERVER <server>           every row a server holds       READSERVER Server0
  WRITE <key> <values...>       insert one row                 WRITE 101 alice 77
  UPDATE <key> <values...>      replace one row                UPDATE 101 alice 80
  DEL <key>                     delete one row                 DEL 101
  LOG <shard> [count]           last log entries (nodes only)  LOG sh1 10
  ADD <server>:<shards> ...     add servers holding shards     ADD Server6:sh1,sh2
  RM <n> [server...]            remove n servers               RM 1 Server3
  FAILOVER <shard> [server]     move a shard's primary         FAILOVER sh1 Server2
  QUIT                          close the connection           QUIT
Strings with spaces go in double quotes: WRITE 7 \"ann lee\" 91
OK
";

/// Renders a response as lines, the last one starting `OK` or `ERR`.
pub fn format_response(response: &Response) -> String {
    let mut out = String::new();
    match response {
        Response::Error(e) => {
            let _ = writeln!(out, "ERR {}: {}", e.name(), one_line(&e.to_string()));
        }
        Response::Pong => out.push_str("OK PONG\n"),
        Response::Topology(t) => format_topology(&mut out, t),
        Response::Node(n) => format_node(&mut out, n),
        Response::Stats(pairs) => {
            for (name, value) in pairs {
                let _ = writeln!(out, "{}: {}", one_line(name), one_line(value));
            }
            out.push_str("OK\n");
        }
        Response::Rows { at, rows } => {
            format_rows(&mut out, rows);
            let _ = write!(out, "OK {} row{}", rows.len(), plural(rows.len()));
            // The positions a session read can pass back: `READ … SESSION sh1=45,sh2=12`.
            for (i, p) in at.iter().enumerate() {
                let _ = write!(out, "{}{}={}", if i == 0 { " at " } else { "," }, p.shard, p.index);
            }
            out.push('\n');
        }
        Response::ServerRows(shards) => {
            let mut total = 0;
            for s in shards {
                let _ = writeln!(out, "{} ({} rows)", s.shard, s.rows.len());
                format_rows(&mut out, &s.rows);
                total += s.rows.len();
            }
            let _ = writeln!(out, "OK {total} row{} in {} shards", plural(total), shards.len());
        }
        Response::Committed(commits) => {
            let parts: Vec<String> = commits.iter().map(commit).collect();
            let _ = writeln!(out, "OK committed {}", parts.join("; "));
        }
        Response::Log(lines) => {
            for l in lines {
                let _ = writeln!(
                    out,
                    "{:>8} t{:<4} crc {:08x} {} {} {}",
                    l.index,
                    l.term,
                    l.crc,
                    if l.crc_ok { "ok " } else { "BAD" },
                    if l.committed { "committed" } else { "pending  " },
                    one_line(&l.summary)
                );
            }
            let _ = writeln!(out, "OK {} entr{}", lines.len(), if lines.len() == 1 { "y" } else { "ies" });
        }
        Response::TopologyUnchanged { version } => {
            let _ = writeln!(out, "OK topology unchanged at version {version}");
        }
        Response::Authenticated { user, grants } => {
            let _ = writeln!(out, "OK authenticated as {} ({})", one_line(user), grants.join(", "));
        }
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn commit(c: &ShardCommit) -> String {
    format!(
        "{}: {} row{} at term {} index {} on {}",
        c.shard,
        c.rows,
        plural(c.rows as usize),
        c.term,
        c.index,
        one_line(&c.replicas.join(","))
    )
}

fn format_rows(out: &mut String, rows: &[Row]) {
    for row in rows {
        let _ = write!(out, "{}", row.key);
        for v in &row.values {
            out.push(' ');
            match v {
                Value::Str(s)
                    if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c.is_control() || c == '"') =>
                {
                    let _ = write!(out, "{s:?}");
                }
                v => {
                    let _ = write!(out, "{v}");
                }
            }
        }
        out.push('\n');
    }
}

fn format_topology(out: &mut String, t: &Topology) {
    let _ = writeln!(out, "topology version {}", t.version);
    match &t.schema {
        Some(s) => {
            let cols: Vec<String> = s.columns.iter().map(|c| format!("{}:{}", c.name, c.ty)).collect();
            let _ = writeln!(out, "schema {}", one_line(&cols.join(" ")));
        }
        None => out.push_str("schema (not initialized)\n"),
    }
    for s in &t.shards {
        let high = s.spec.high().map_or("empty".to_owned(), |h| h.to_string());
        let _ = writeln!(
            out,
            "shard {} keys {}..={} term {} primary {} replicas {}",
            s.spec.id,
            s.spec.low,
            high,
            s.term,
            one_line(s.primary.as_deref().unwrap_or("NONE")),
            one_line(&s.replicas.join(","))
        );
    }
    for s in &t.servers {
        let age = s.last_heartbeat_ms.map_or("never".to_owned(), |ms| format!("{ms}ms ago"));
        let health = if s.healthy { "up" } else { "DOWN" };
        let _ = writeln!(out, "server {} {} {} heartbeat {}", one_line(&s.name), one_line(&s.addr), health, age);
    }
    for c in &t.copies {
        let _ = writeln!(out, "copy {} on {} {}", c.shard, one_line(&c.server), copy_line(&c.progress));
    }
    let _ = writeln!(out, "OK {} shards, {} servers", t.shards.len(), t.servers.len());
}

fn format_node(out: &mut String, n: &NodeStatus) {
    let _ = writeln!(out, "node {}", one_line(&n.node));
    for s in &n.shards {
        let _ = writeln!(
            out,
            "shard {} {:?} term {} last {}@{} commit {} applied {}{}{}",
            s.spec.id,
            s.role,
            s.term,
            s.last.index,
            s.last.term,
            s.commit_index,
            s.applied_index,
            if s.serving { "" } else { " NOT-SERVING" },
            s.fault.as_ref().map_or(String::new(), |f| format!(" fault: {}", one_line(f)))
        );
        for c in &s.copies {
            let _ = writeln!(out, "  copy {}", copy_line(c));
        }
    }
    let _ = writeln!(out, "OK {} shards", n.shards.len());
}

/// One snapshot copy's progress: `sending to Server6 upto 1200: 5000/20000 rows, 0.2/0.8 MiB (25%)`.
fn copy_line(c: &CopyProgress) -> String {
    let (way, to) = match c.direction {
        CopyDirection::Sending => ("sending", "to"),
        CopyDirection::Receiving => ("receiving", "from"),
    };
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    format!(
        "{way} {to} {} upto {}: {}/{} rows, {:.1}/{:.1} MiB ({:.0}%)",
        one_line(&c.peer),
        c.upto,
        c.copied.rows,
        c.total.rows,
        mib(c.copied.bytes),
        mib(c.total.bytes),
        c.fraction() * 100.0
    )
}

/// Makes user-supplied text safe for one answer line: control characters are escaped.
fn one_line(s: &str) -> String {
    if s.chars().any(char::is_control) {
        s.chars().flat_map(char::escape_default).collect()
    } else {
        s.to_owned()
    }
}

/// The answer line for a line that did not parse.
pub fn format_text_error(e: &TextError) -> String {
    format!("ERR BadRequest: {}\n", one_line(&e.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ErrorCode;
    use crate::model::ShardId;

    #[test]
    fn every_answer_ends_with_ok_or_err() {
        let answers = [
            Response::Pong,
            Response::Rows {
                at: Vec::new(),
                rows: vec![Row::new(1, vec![Value::Str("ann lee".into()), Value::Int(3)])],
            },
            Response::Error(ErrorCode::DuplicateKey { key: 4 }),
            Response::Committed(vec![ShardCommit {
                shard: ShardId(1),
                term: 2,
                index: 3,
                replicas: vec!["Server0".into()],
                rows: 1,
            }]),
            Response::Topology(Topology::default()),
            Response::Stats(vec![("ops".into(), "3".into())]),
        ];
        for a in answers {
            let text = format_response(&a);
            let last = text.lines().last().unwrap();
            assert!(last.starts_with("OK") || last.starts_with("ERR"), "{text}");
        }
    }

    #[test]
    fn rows_and_errors_read_well() {
        let rows = Response::Rows {
            at: Vec::new(),
            rows: vec![Row::new(1, vec![Value::Str("ann lee".into()), Value::Int(3)])],
        };
        assert_eq!(format_response(&rows), "1 \"ann lee\" 3\nOK 1 row\n");
        let e = Response::Error(ErrorCode::KeyOutOfRange { key: 99999 });
        assert_eq!(format_response(&e), "ERR KeyOutOfRange: key 99999 is outside every shard\n");
        let big = format_response(&Response::Error(ErrorCode::TooLarge { len: 70_000, max: 65_536 }));
        assert!(big.starts_with("ERR TooLarge: too large: 70000 bytes, over the 65536-byte limit; "), "{big}");
        assert_eq!(big.lines().count(), 1);
    }

    #[test]
    fn names_cannot_forge_an_answer_line() {
        let commit = Response::Committed(vec![ShardCommit {
            shard: ShardId(1),
            term: 1,
            index: 1,
            replicas: vec!["x\nOK fake".into(), "\n\n".into()],
            rows: 1,
        }]);
        let text = format_response(&commit);
        assert_eq!(text.lines().count(), 1, "{text:?}");
        let e = format_text_error(&TextError("unknown command `\n`".into()));
        assert_eq!(e.lines().count(), 1);
    }

    #[test]
    fn help_lists_every_command() {
        for cmd in ["PING", "AUTH", "STATUS", "STATS", "READ", "WRITE", "UPDATE", "DEL", "LOG", "HELP"] {
            assert!(HELP.contains(&format!("\n  {cmd} ")), "HELP lacks {cmd}");
        }
    }

    #[test]
    fn copies_show_under_their_shard() {
        use crate::message::{CopySize, ReplicaRole, ShardCopy, ShardState};
        use crate::model::{LogPosition, ShardSpec};
        let progress = CopyProgress {
            direction: CopyDirection::Sending,
            peer: "Server6".into(),
            upto: 1200,
            copied: CopySize { rows: 5_000, bytes: 1 << 20 },
            total: CopySize { rows: 20_000, bytes: 4 << 20 },
        };
        let state = ShardState {
            spec: ShardSpec { id: ShardId(1), low: 0, size: 10 },
            role: ReplicaRole::Primary,
            term: 2,
            last: LogPosition { term: 2, index: 1200 },
            commit_index: 1200,
            applied_index: 1200,
            serving: true,
            fault: None,
            settled: true,
            copies: vec![progress.clone()],
        };
        let node = format_response(&Response::Node(NodeStatus { node: "Server0".into(), shards: vec![state] }));
        assert!(node.contains("\n  copy sending to Server6 upto 1200: 5000/20000 rows, 1.0/4.0 MiB (25%)\n"), "{node}");
        let copy = ShardCopy { shard: ShardId(1), server: "Server0".into(), progress };
        let cluster = format_response(&Response::Topology(Topology { copies: vec![copy], ..Topology::default() }));
        assert!(cluster.contains("\ncopy sh1 on Server0 sending to Server6 upto 1200:"), "{cluster}");
    }
}
