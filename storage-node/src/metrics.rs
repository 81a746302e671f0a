//! The node's `/metrics`: its requests (counted in [`Node`]) and, read at scrape time, each
//! shard replica's role, term, positions, fsyncs and, on a primary, each follower's lag.
//!
//! The per-shard facts are the ones STATUS and STATS report, copied under the shard's
//! short locks when Prometheus asks; nothing is added to the write path for them.

use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use shardline_metrics::OK;
use shardline_protocol::{ControlResponse, CopyDirection, CopyProgress, PeerResponse, ReplicaRole, Response};

use crate::node::Node;
use crate::shard::ShardMetrics;

/// The `code` label of a client answer.
pub fn response_code(r: &Response) -> &'static str {
    match r {
        Response::Error(e) => e.name(),
        _ => OK,
    }
}

/// The `code` label of an answer to the coordinator.
pub fn control_code(r: &ControlResponse) -> &'static str {
    match r {
        ControlResponse::Error(e) => e.name(),
        _ => OK,
    }
}

/// The `code` label of an answer to a primary.
pub fn peer_code(r: &PeerResponse) -> &'static str {
    match r {
        PeerResponse::Error(e) => e.name(),
        _ => OK,
    }
}

/// Adds the node's metrics to `registry`: its requests and its shards.
pub fn register(node: &Arc<Node>, registry: &mut Registry) {
    node.requests().register(registry);
    registry.register_collector(Box::new(Shards(Arc::downgrade(node))));
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabel {
    shard: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    shard: String,
    role: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CopyLabel {
    shard: String,
    peer: String,
    direction: &'static str,
}

/// One snapshot copy family: name, help and the value of one copy's progress.
type CopyColumn = (&'static str, &'static str, fn(&CopyProgress) -> u64);

const COPY_COLUMNS: &[CopyColumn] = &[
    ("shardline_snapshot_copied_rows", "Rows of a snapshot copy under way the follower has stored", |c| c.copied.rows),
    ("shardline_snapshot_copied_bytes", "Bytes of a snapshot copy under way the follower has stored", |c| {
        c.copied.bytes
    }),
    ("shardline_snapshot_total_rows", "Rows of a snapshot copy under way in all", |c| c.total.rows),
    (
        "shardline_snapshot_total_bytes",
        "Bytes of a snapshot copy under way in all (estimated by the sender from the rows read so far)",
        |c| c.total.bytes,
    ),
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FollowerLabel {
    shard: String,
    follower: String,
    voter: &'static str,
}

/// Reads every shard replica of a node at scrape time.
#[derive(Debug)]
struct Shards(Weak<Node>);

const ROLES: [(ReplicaRole, &str); 3] =
    [(ReplicaRole::Primary, "primary"), (ReplicaRole::Follower, "follower"), (ReplicaRole::Idle, "idle")];

/// One gauge or counter family of the shards: name, help, type and the value per shard.
type Column = (&'static str, &'static str, MetricType, fn(&ShardMetrics) -> i64);

const COLUMNS: &[Column] = &[
    ("shardline_shard_term", "The highest term the replica has adopted", MetricType::Gauge, |m| m.state.term as i64),
    ("shardline_shard_commit_index", "Highest log index the replica knows committed", MetricType::Gauge, |m| {
        m.state.commit_index as i64
    }),
    ("shardline_shard_applied_index", "Highest log index applied to the replica's table", MetricType::Gauge, |m| {
        m.state.applied_index as i64
    }),
    ("shardline_shard_last_index", "Index of the replica's last log entry", MetricType::Gauge, |m| {
        m.state.last.index as i64
    }),
    ("shardline_shard_serving", "1 while the replica serves reads (caught up, no fault)", MetricType::Gauge, |m| {
        i64::from(m.state.serving)
    }),
    ("shardline_shard_fault", "1 while the replica reports a fault (a damaged log, say)", MetricType::Gauge, |m| {
        i64::from(m.state.fault.is_some())
    }),
    ("shardline_shard_fsyncs", "Log fsyncs (fdatasync) of the replica", MetricType::Counter, |m| m.fsyncs as i64),
    (
        "shardline_shard_entries_synced",
        "Log entries made durable by those fsyncs (rate over fsyncs' rate: entries per fsync)",
        MetricType::Counter,
        |m| m.entries_synced as i64,
    ),
];

impl Collector for Shards {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(node) = self.0.upgrade() else { return Ok(()) };
        let shards: Vec<ShardMetrics> = node.shard_metrics();
        let label = |m: &ShardMetrics| ShardLabel { shard: m.state.spec.id.to_string() };
        let mut roles = encoder.encode_descriptor(
            "shardline_shard_role",
            "1 for the replica's current role (primary, follower or idle), 0 for the others",
            None,
            MetricType::Gauge,
        )?;
        for m in &shards {
            for (role, name) in ROLES {
                let labels = RoleLabel { shard: m.state.spec.id.to_string(), role: name };
                ConstGauge::new(i64::from(m.state.role == role)).encode(roles.encode_family(&labels)?)?;
            }
        }
        for (name, help, kind, value) in COLUMNS {
            let mut family = encoder.encode_descriptor(name, help, None, *kind)?;
            for m in &shards {
                let labels = label(m);
                match kind {
                    MetricType::Counter => ConstCounter::new(value(m) as u64).encode(family.encode_family(&labels)?)?,
                    _ => ConstGauge::new(value(m)).encode(family.encode_family(&labels)?)?,
                }
            }
        }
        for (name, help, value) in COPY_COLUMNS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for m in &shards {
                for c in &m.state.copies {
                    let direction = match c.direction {
                        CopyDirection::Sending => "sending",
                        CopyDirection::Receiving => "receiving",
                    };
                    let labels = CopyLabel { shard: m.state.spec.id.to_string(), peer: c.peer.clone(), direction };
                    ConstGauge::new(value(c) as i64).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let follower = |m: &ShardMetrics, f: &crate::replica::FollowerLag| FollowerLabel {
            shard: m.state.spec.id.to_string(),
            follower: f.follower.clone(),
            voter: if f.voter { "true" } else { "false" },
        };
        let mut entries = encoder.encode_descriptor(
            "shardline_replication_lag_entries",
            "(On a primary) log entries a follower does not durably hold yet",
            None,
            MetricType::Gauge,
        )?;
        for m in &shards {
            for f in &m.followers {
                ConstGauge::new(f.entries as i64).encode(entries.encode_family(&follower(m, f))?)?;
            }
        }
        let mut seconds = encoder.encode_descriptor(
            "shardline_replication_lag_seconds",
            "(On a primary) age of the oldest entry a follower lacks; 0 when it holds them all",
            None,
            MetricType::Gauge,
        )?;
        for m in &shards {
            for f in &m.followers {
                ConstGauge::new(f.behind.as_secs_f64()).encode(seconds.encode_family(&follower(m, f))?)?;
            }
        }
        Ok(())
    }
}
