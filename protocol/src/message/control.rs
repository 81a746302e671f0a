//! Coordinator → storage node: shard configuration, roles, heartbeats and elections.

use serde::{Deserialize, Serialize};

use super::{ErrorCode, Message, NodeStatus};
use crate::frame::Route;
use crate::model::{LogPosition, Schema, ServerAddr, ShardId, ShardSpec};

/// What the coordinator tells a storage node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// Create (or keep) a replica of `shard` with `schema`; it starts idle.
    ConfigureShard {
        /// The shard and its range.
        shard: ShardSpec,
        /// The table's schema.
        schema: Schema,
    },
    /// Delete the replica of `shard` and its files.
    DropShard {
        /// The shard.
        shard: ShardId,
    },
    /// Lead `shard` at `term`, replicating to `followers` and `learners`.
    BecomePrimary {
        /// The shard.
        shard: ShardId,
        /// The term to lead in.
        term: u64,
        /// The other voting replicas: a write commits on a majority of them and the primary.
        followers: Vec<ServerAddr>,
        /// Replicas still catching up: they get the log but count toward no majority.
        learners: Vec<ServerAddr>,
        /// How long the lease lasts from receipt, in milliseconds.
        lease_ms: u64,
    },
    /// Follow `primary` for `shard` at `term`.
    BecomeFollower {
        /// The shard.
        shard: ShardId,
        /// The term.
        term: u64,
        /// The primary.
        primary: ServerAddr,
    },
    /// Liveness probe, numbered; it may carry lease grants for an earlier one.
    ///
    /// A lease is granted for one term and counted from when the node handled heartbeat
    /// `grant.seq` (which the coordinator knows happened before that heartbeat's answer
    /// reached it), never from when the grant itself is read: a grant read late, after a
    /// pause or from a stale connection, extends nothing.
    Heartbeat {
        /// This heartbeat's number (per coordinator connection, increasing).
        seq: u64,
        /// Lease length, in milliseconds.
        lease_ms: u64,
        /// Leases granted, counted from when this node handled heartbeat `grant.seq`.
        grant: Option<LeaseGrant>,
    },
    /// Election query: adopt `term` (refusing older appends from now on) and report the log.
    ElectionQuery {
        /// The shard.
        shard: ShardId,
        /// The new term.
        term: u64,
    },
    /// A planned switchover is coming: the primary of `shard` at `term` refuses new writes
    /// (definitely, nothing logged) for `for_ms` while its followers catch up; it keeps
    /// replicating and serving reads. It ends by itself, so an abandoned switchover costs
    /// at most `for_ms` of refused writes.
    Handoff {
        /// The shard.
        shard: ShardId,
        /// The primary's term.
        term: u64,
        /// How long to refuse writes, in milliseconds.
        for_ms: u64,
    },
}

/// Leases the coordinator grants with a heartbeat: for each shard, at one term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    /// The earlier heartbeat whose handling the leases count from.
    pub seq: u64,
    /// (shard, term): the shard's primary at that term holds the lease.
    pub shards: Vec<(ShardId, u64)>,
}

/// A replica's answer to an election query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// The shard.
    pub shard: ShardId,
    /// The term it has now adopted.
    pub term: u64,
    /// Its last log entry.
    pub last: LogPosition,
    /// False if its log is damaged and unrepaired, or it is mid-install: it must not lead.
    pub electable: bool,
    /// False if its log may lack an entry it acknowledged (cut at damage, or after a failed
    /// write): its vote then does not count toward the election's majority.
    pub whole: bool,
}

/// What a storage node answers the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlResponse {
    /// The request failed.
    Error(ErrorCode),
    /// Done.
    Ok,
    /// Heartbeat answer: the node's state.
    Status(NodeStatus),
    /// Election query answer.
    Vote(Vote),
}

impl Message for ControlRequest {
    const BASE: u8 = 0x70;
    const SPAN: u8 = 0x20;
    const NAME: &'static str = "ControlRequest";

    fn route(&self) -> Route {
        match self {
            ControlRequest::ConfigureShard { shard, .. } => Route::Shard(shard.id.0),
            ControlRequest::DropShard { shard }
            | ControlRequest::BecomePrimary { shard, .. }
            | ControlRequest::BecomeFollower { shard, .. }
            | ControlRequest::ElectionQuery { shard, .. }
            | ControlRequest::Handoff { shard, .. } => Route::Shard(shard.0),
            ControlRequest::Heartbeat { .. } => Route::None,
        }
    }
}

impl Message for ControlResponse {
    const BASE: u8 = 0x90;
    const SPAN: u8 = 0x10;
    const NAME: &'static str = "ControlResponse";
}
