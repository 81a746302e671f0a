//! The routing table, case by case from `tests/testdata/routing/` (the `datadriven` format
//! raft-rs uses; `REWRITE=1 cargo test -p shardline-balancer --test routing_cases` writes
//! the answers the code gives now, to be read over before committing).
//!
//! `topology` sets the cluster, one line each:
//! `shard ID low=N size=N [primary=NAME] replicas=A,B,C [readable=A,B]` and `down NAME`
//! (every named server has an address and is healthy unless marked down).
//! `route` asks, one line each: `key K`, `range LOW HIGH`, `primary ID`,
//! `reader ID hash=H [exclude=A,B]`, `split K1 K2 ...` (a write batch of those keys).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use shardline_balancer::route::{split_batch, Routing};
use shardline_protocol::{Row, ServerInfo, ShardId, ShardSpec, ShardTopology, Topology, Value, WriteBatch};

#[test]
fn routing_cases() {
    datadriven::walk("tests/testdata/routing", |f| {
        let mut routing = Routing::default();
        f.run(|case| match case.directive.as_str() {
            "topology" => {
                routing = Routing::new(topology(&case.input));
                "ok\n".to_owned()
            }
            "route" => {
                case.input.lines().map(|line| format!("{line} -> {}\n", route(&routing, line))).collect::<String>()
            }
            other => panic!("unknown directive {other}"),
        });
    });
}

/// Named `key=value` settings of a line's words, and the words without one.
fn words(line: &str) -> (Vec<&str>, BTreeMap<&str, &str>) {
    let (mut plain, mut named) = (Vec::new(), BTreeMap::new());
    for w in line.split_whitespace() {
        match w.split_once('=') {
            Some((k, v)) => {
                named.insert(k, v);
            }
            None => plain.push(w),
        }
    }
    (plain, named)
}

fn names(list: Option<&&str>) -> Vec<String> {
    list.map(|l| l.split(',').map(str::to_owned).collect()).unwrap_or_default()
}

fn topology(input: &str) -> Topology {
    let (mut shards, mut down) = (Vec::new(), Vec::new());
    for line in input.lines() {
        let (plain, named) = words(line);
        match plain.as_slice() {
            ["shard", id] => {
                let replicas = names(named.get("replicas"));
                let readable =
                    if named.contains_key("readable") { names(named.get("readable")) } else { replicas.clone() };
                shards.push(ShardTopology {
                    spec: ShardSpec {
                        id: ShardId(id.parse().expect("a shard id")),
                        low: named["low"].parse().expect("low"),
                        size: named["size"].parse().expect("size"),
                    },
                    term: 1,
                    primary: named.get("primary").map(|p| (*p).to_owned()),
                    replicas,
                    readable,
                });
            }
            ["down", name] => down.push((*name).to_owned()),
            _ => panic!("bad topology line `{line}`"),
        }
    }
    let mut servers: Vec<String> = shards.iter().flat_map(|s| s.replicas.iter().cloned()).collect();
    servers.sort();
    servers.dedup();
    let servers = servers
        .into_iter()
        .map(|name| ServerInfo {
            addr: format!("{name}:7200"),
            healthy: !down.contains(&name),
            last_heartbeat_ms: None,
            name,
        })
        .collect();
    Topology { version: 1, schema: None, shards, servers, copies: Vec::new() }
}

fn route(routing: &Routing, line: &str) -> String {
    let (plain, named) = words(line);
    let shard = |s: &str| ShardId(s.parse().expect("a shard id"));
    match plain.as_slice() {
        ["key", k] => routing.shard_of(k.parse().expect("a key")).map_or("no shard".into(), |s| s.to_string()),
        ["range", low, high] => {
            let parts = routing.overlapping(low.parse().expect("low"), high.parse().expect("high"));
            let parts: Vec<String> = parts.iter().map(|(s, l, h)| format!("{s}[{l}..={h}]")).collect();
            if parts.is_empty() {
                "no shard".into()
            } else {
                parts.join(" ")
            }
        }
        ["primary", id] => match routing.primary(shard(id)) {
            Ok(t) => format!("{} at {}", t.name, t.addr),
            Err(e) => format!("error: {e}"),
        },
        ["reader", id] => {
            let hash = named["hash"].parse().expect("hash");
            match routing.reader(shard(id), hash, false, &names(named.get("exclude"))) {
                Ok(t) => t.name.to_string(),
                Err(e) => format!("error: {e}"),
            }
        }
        ["split", keys @ ..] => {
            let rows: Vec<Row> =
                keys.iter().map(|k| Row::new(k.parse().expect("a key"), vec![Value::Int(0)])).collect();
            let batch = WriteBatch::encode(1, 1, &rows).expect("a batch");
            match split_batch(&batch, routing) {
                Ok(parts) => parts.iter().fold(String::new(), |mut out, (s, b)| {
                    let keys: Vec<String> = b.rows().expect("rows").iter().map(|r| r.key.to_string()).collect();
                    let _ = write!(out, "{}{s}:{}", if out.is_empty() { "" } else { " " }, keys.join(","));
                    out
                }),
                Err(e) => format!("error: {e}"),
            }
        }
        _ => panic!("bad route line `{line}`"),
    }
}
