//! Primary → secondary: log replication, snapshots for new replicas, and entry repair.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{CopySize, ErrorCode, Message};
use crate::frame::Route;
use crate::model::{LogPosition, Row, ShardId};

/// What one replica asks another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Append entries after `prev` (Raft's AppendEntries); an empty list is a probe.
    Append {
        /// The shard.
        shard: ShardId,
        /// The sender's term.
        term: u64,
        /// The sender's server name.
        primary: String,
        /// The entry just before `entries`; the follower must hold it to accept.
        prev: LogPosition,
        /// Encoded [`LogEntry`](crate::log_entry::LogEntry)s, each with its own CRC.
        entries: Vec<Bytes>,
        /// The primary's commit index.
        commit: u64,
        /// The newest [`ContactStamp`] this follower answered with that the primary had
        /// received before sending this, if the primary holds its lease now: proof to the
        /// follower that `commit` covers every write acknowledged before that stamp.
        echo: Option<ContactStamp>,
    },
    /// One chunk of a shard snapshot for a replica too far behind for the log.
    Snapshot {
        /// The shard.
        shard: ShardId,
        /// The sender's term.
        term: u64,
        /// The sender's server name.
        primary: String,
        /// Position of the last entry the snapshot includes.
        last_included: LogPosition,
        /// Chunk number, from 0; chunk 0 clears the receiver's table.
        chunk: u32,
        /// Rows in key order.
        rows: Vec<Row>,
        /// The (client, seq) of every write the snapshot includes that a retry must still
        /// find, with the entry that applied it, so that a replica rebuilt from the snapshot
        /// applies a retry at most once, as its source would. They follow the rows, spread
        /// over as many chunks as fit frames, and take effect with the last chunk.
        marks: Vec<ClientSeqMark>,
        /// True on the last chunk.
        done: bool,
        /// The whole snapshot as the sender estimates it, for the receiver's progress.
        total: CopySize,
    },
    /// Entries `from..=to` of a shard's log, to repair a damaged copy.
    FetchEntries {
        /// The shard.
        shard: ShardId,
        /// First index wanted.
        from: u64,
        /// Last index wanted.
        to: u64,
    },
}

/// Where a client's write was applied: a retry of (client, seq) is answered with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSeqMark {
    /// The client's id.
    pub client: u64,
    /// The client's sequence number.
    pub seq: u64,
    /// The entry that applied it.
    pub entry: LogPosition,
}

/// What a replica answers a [`PeerRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerResponse {
    /// The request failed.
    Error(ErrorCode),
    /// Answer to `Append`.
    Appended {
        /// The receiver's term (higher than the sender's means: step down).
        term: u64,
        /// Whether the entries were accepted.
        success: bool,
        /// The receiver's last durable entry after handling the request.
        last: LogPosition,
        /// On refusal, the first index the sender should retry from.
        retry_from: u64,
        /// The receiver's run and clock as it answered, for the primary to echo.
        stamp: ContactStamp,
    },
    /// Answer to `Snapshot`: the chunk is stored.
    SnapshotStored {
        /// The receiver's term.
        term: u64,
        /// The chunk stored.
        chunk: u32,
    },
    /// Answer to `FetchEntries`.
    Entries(Vec<Bytes>),
}

impl Message for PeerRequest {
    const BASE: u8 = 0xA0;
    const SPAN: u8 = 0x10;
    const NAME: &'static str = "PeerRequest";

    fn route(&self) -> Route {
        match self {
            PeerRequest::Append { shard, .. }
            | PeerRequest::Snapshot { shard, .. }
            | PeerRequest::FetchEntries { shard, .. } => Route::Shard(shard.0),
        }
    }
}

impl Message for PeerResponse {
    const BASE: u8 = 0xB0;
    const SPAN: u8 = 0x10;
    const NAME: &'static str = "PeerResponse";
}

/// A follower's reading of its own clock as it answered an append, and which run of the
/// replica read it (clocks restart with a process), echoed back by the primary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactStamp {
    /// The replica run (a fresh number for every open).
    pub run: u64,
    /// Nanoseconds on that run's monotonic clock.
    pub at_nanos: u64,
}
