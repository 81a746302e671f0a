//! How reads spread over each shard's replicas (the course system's first analysis:
//! requests handled per server), from counters read before and after a run: the
//! balancer's `reads.<server>` and each node's `<shard>.reads` in STATS.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use shardline::{Client, ClientConfig, Topology};

/// Read counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Reads the balancer sent to each server.
    pub by_server: BTreeMap<String, u64>,
    /// Reads each node served, per (shard, server).
    pub by_replica: BTreeMap<(String, String), u64>,
    /// Each node's pid, from its STATS.
    pub pids: BTreeMap<String, u32>,
}

/// Open connections to the balancer's servers, for their STATS.
#[derive(Debug)]
pub struct Probe {
    balancer: Client,
    nodes: Vec<(String, Client)>,
}

impl Probe {
    /// Connects to every server of `topology` that answers within a second (a node that
    /// does not is left out of the node counters).
    pub async fn connect(balancer: Client, topology: &Topology) -> Probe {
        let config = ClientConfig {
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            retries: 0,
            ..ClientConfig::default()
        };
        let mut nodes = Vec::new();
        for s in &topology.servers {
            if let Ok(c) = Client::connect_with(s.addr.clone(), config.clone()).await {
                nodes.push((s.name.clone(), c));
            }
        }
        Probe { balancer, nodes }
    }

    /// The counters now (missing ones are left out).
    pub async fn read(&self) -> Counters {
        let mut out = Counters::default();
        if let Ok(pairs) = self.balancer.stats().await {
            for (k, v) in pairs {
                if let (Some(server), Ok(n)) = (k.strip_prefix("reads."), v.parse()) {
                    out.by_server.insert(server.to_owned(), n);
                }
            }
        }
        for (name, c) in &self.nodes {
            let Ok(pairs) = c.stats().await else { continue };
            for (k, v) in pairs {
                if k == "pid" {
                    if let Ok(pid) = v.parse() {
                        out.pids.insert(name.clone(), pid);
                    }
                } else if let (Some(shard), Ok(n)) = (k.strip_suffix(".reads"), v.parse()) {
                    out.by_replica.insert((shard.to_owned(), name.clone()), n);
                }
            }
        }
        out
    }
}

/// Reads one server handled during the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerReads {
    /// The server.
    pub server: String,
    /// Reads it served.
    pub reads: u64,
    /// Its share of all reads, in percent.
    pub share: f64,
}

/// Reads one shard's replicas handled during the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShardSpread {
    /// The shard, e.g. `sh1`.
    pub shard: String,
    /// Each replica's reads and share of the shard's reads.
    pub replicas: Vec<ServerReads>,
}

/// The spread of a run's reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Spread {
    /// Per server, from the balancer's counters.
    pub servers: Vec<ServerReads>,
    /// Per shard and replica, from the nodes' counters.
    pub shards: Vec<ShardSpread>,
}

fn shares(counts: Vec<(String, u64)>) -> Vec<ServerReads> {
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    counts
        .into_iter()
        .map(|(server, reads)| ServerReads {
            server,
            reads,
            share: if total == 0 { 0.0 } else { 100.0 * reads as f64 / total as f64 },
        })
        .collect()
}

/// The difference `after − before`, with each shard's replicas from `topology`.
pub fn spread(before: &Counters, after: &Counters, topology: &Topology) -> Spread {
    let delta = |a: &u64, b: Option<&u64>| a.saturating_sub(*b.unwrap_or(&0));
    let mut servers: Vec<(String, u64)> = topology
        .servers
        .iter()
        .map(|s| (s.name.clone(), 0))
        .filter(|(n, _)| !after.by_server.contains_key(n))
        .collect();
    servers.extend(after.by_server.iter().map(|(s, n)| (s.clone(), delta(n, before.by_server.get(s)))));
    servers.sort_by_key(|s| natural(&s.0));
    let shards = topology
        .shards
        .iter()
        .map(|shard| {
            let id = shard.spec.id.to_string();
            let mut replicas: Vec<String> = shard.replicas.clone();
            replicas.sort_by_key(|r| natural(r));
            let counts = replicas
                .into_iter()
                .map(|r| {
                    let key = (id.clone(), r.clone());
                    let n = after.by_replica.get(&key).map_or(0, |n| delta(n, before.by_replica.get(&key)));
                    (r, n)
                })
                .collect();
            ShardSpread { shard: id, replicas: shares(counts) }
        })
        .collect();
    Spread { servers: shares(servers), shards }
}

/// Sorts `Server10` after `Server9`.
fn natural(name: &str) -> (String, u64) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (head, tail) = name.split_at(name.len() - digits);
    (head.to_owned(), tail.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline::{ShardId, ShardSpec, ShardTopology};

    #[test]
    fn deltas_and_shares() {
        let topology = Topology {
            shards: vec![ShardTopology {
                spec: ShardSpec { id: ShardId(1), low: 0, size: 10 },
                term: 1,
                primary: Some("Server0".into()),
                replicas: vec!["Server10".into(), "Server0".into()],
                readable: vec![],
            }],
            ..Topology::default()
        };
        let mut before = Counters::default();
        before.by_server.insert("Server0".into(), 5);
        before.by_replica.insert(("sh1".into(), "Server0".into()), 5);
        let mut after = before.clone();
        after.by_server.insert("Server0".into(), 35);
        after.by_server.insert("Server10".into(), 10);
        after.by_replica.insert(("sh1".into(), "Server0".into()), 35);
        after.by_replica.insert(("sh1".into(), "Server10".into()), 10);
        let s = spread(&before, &after, &topology);
        assert_eq!(s.servers.iter().map(|r| r.reads).collect::<Vec<_>>(), vec![30, 10]);
        assert_eq!(s.servers[0].share, 75.0);
        assert_eq!(s.shards[0].replicas[1].server, "Server10");
        assert_eq!(s.shards[0].replicas[1].share, 25.0);
    }
}
