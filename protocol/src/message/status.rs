//! What processes report about the cluster and about themselves.

use serde::{Deserialize, Serialize};

use crate::model::{LogPosition, Schema, ShardId, ShardSpec};

/// The cluster as the coordinator knows it, versioned so routers can tell stale from fresh.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    /// Bumped on every change; a router keeps the highest it has seen.
    pub version: u64,
    /// The table's schema; `None` before Init.
    pub schema: Option<Schema>,
    /// Every shard with its replicas and primary.
    pub shards: Vec<ShardTopology>,
    /// Every server with its address and health.
    pub servers: Vec<ServerInfo>,
    /// Snapshot copies under way, as the coordinator last heard of them from each node
    /// (STATUS only: a copy's progress never bumps the version).
    pub copies: Vec<ShardCopy>,
}

impl Topology {
    /// The shard that owns `key`.
    pub fn shard_for_key(&self, key: i64) -> Option<&ShardTopology> {
        self.shards.iter().find(|s| s.spec.contains(key))
    }

    /// A server's entry by name.
    pub fn server(&self, name: &str) -> Option<&ServerInfo> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// Whether the cluster has settled: initialized, every shard with a primary and every
    /// replica readable, every server healthy (what tests and benches wait for).
    pub fn is_settled(&self) -> bool {
        self.schema.is_some()
            && !self.shards.is_empty()
            && self.shards.iter().all(|s| s.primary.is_some() && s.readable.len() == s.replicas.len())
            && self.servers.iter().all(|s| s.healthy)
    }
}

/// One shard in the topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardTopology {
    /// Identity and key range.
    pub spec: ShardSpec,
    /// The term of the current primary.
    pub term: u64,
    /// The primary's server name; `None` while no majority could elect one.
    pub primary: Option<String>,
    /// Every replica's server name, the primary included.
    pub replicas: Vec<String>,
    /// Replicas that have caught up and may serve reads.
    pub readable: Vec<String>,
}

/// One server in the topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// The server's name.
    pub name: String,
    /// Where it listens.
    pub addr: String,
    /// Whether its heartbeats arrive.
    pub healthy: bool,
    /// Milliseconds since its last heartbeat answer, if any.
    pub last_heartbeat_ms: Option<u64>,
}

/// A replica's role in its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaRole {
    /// Takes writes and replicates them.
    Primary,
    /// Receives the primary's log.
    Follower,
    /// Configured, but told no role at the current term yet.
    Idle,
}

/// One shard replica's state, as a node reports it in heartbeats and STATUS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardState {
    /// The shard and its range.
    pub spec: ShardSpec,
    /// Role at `term`.
    pub role: ReplicaRole,
    /// The highest term this replica has adopted.
    pub term: u64,
    /// Its last log entry.
    pub last: LogPosition,
    /// The highest index it knows committed.
    pub commit_index: u64,
    /// The highest index applied to its table.
    pub applied_index: u64,
    /// Whether the replica can serve reads (caught up and not repairing).
    pub serving: bool,
    /// A problem it needs help with (a corrupt log entry, a failed snapshot), if any.
    pub fault: Option<String>,
    /// (Primary only) a majority of its current replica set durably holds everything it
    /// had logged when it took that set: every entry an earlier set may have committed is
    /// now on a majority of this one, so the coordinator may change the set again.
    pub settled: bool,
    /// Snapshot copies this replica is sending (as primary) or receiving (as follower).
    pub copies: Vec<CopyProgress>,
}

/// Rows and bytes of a snapshot copy; bytes count rows and client marks as sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopySize {
    /// Rows.
    pub rows: u64,
    /// Bytes of rows and client marks.
    pub bytes: u64,
}

/// Which side of a snapshot copy a replica is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CopyDirection {
    /// The primary, sending its table.
    Sending,
    /// The follower, installing it.
    Receiving,
}

/// A snapshot copy under way, as one of its two replicas reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyProgress {
    /// Which side reports it.
    pub direction: CopyDirection,
    /// The other side: the follower sent to, or the primary received from.
    pub peer: String,
    /// The last log entry the snapshot covers.
    pub upto: u64,
    /// What the follower has stored so far.
    pub copied: CopySize,
    /// The whole snapshot, estimated by the sender when it started (rows exact, bytes
    /// from the rows read so far).
    pub total: CopySize,
}

impl CopyProgress {
    /// The share of the estimated bytes copied, from 0 to 1.
    pub fn fraction(&self) -> f64 {
        if self.total.bytes == 0 {
            return if self.total.rows == 0 { 1.0 } else { self.copied.rows as f64 / self.total.rows as f64 };
        }
        (self.copied.bytes as f64 / self.total.bytes as f64).min(1.0)
    }
}

/// A snapshot copy to or from one replica of a shard, in the coordinator's STATUS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCopy {
    /// The shard.
    pub shard: ShardId,
    /// The server that reported it.
    pub server: String,
    /// Its progress, as that server reported it.
    pub progress: CopyProgress,
}

/// A storage node's report: who it is and the state of every shard replica it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's server name.
    pub node: String,
    /// Each shard replica on the node.
    pub shards: Vec<ShardState>,
}

impl NodeStatus {
    /// The replica of `shard` on this node.
    pub fn shard(&self, shard: ShardId) -> Option<&ShardState> {
        self.shards.iter().find(|s| s.spec.id == shard)
    }
}
