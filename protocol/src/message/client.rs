//! Client and admin operations: the seed's nine, plus the ones a router and a person need.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{ErrorCode, Message, MessageError, NodeStatus, Topology};
use crate::batch::WriteBatch;
use crate::consistency::{Consistency, ShardPosition};
use crate::frame::{Route, FLAG_LINEARIZABLE};
use crate::log_entry::LogLine;
use crate::model::{Row, Schema, ShardId, ShardSpec};

/// The kind bytes of [`Request`] and [`Response`] variants, for routers that read headers only.
pub mod kind {
    /// First kind byte of [`Request`](super::Request).
    pub const REQUEST_BASE: u8 = 0x10;
    /// First kind byte of [`Response`](super::Response).
    pub const RESPONSE_BASE: u8 = 0x40;
    /// `Request::Ping`.
    pub const PING: u8 = REQUEST_BASE;
    /// `Request::Status`.
    pub const STATUS: u8 = REQUEST_BASE + 1;
    /// `Request::Stats`.
    pub const STATS: u8 = REQUEST_BASE + 2;
    /// `Request::Init`.
    pub const INIT: u8 = REQUEST_BASE + 3;
    /// `Request::AddServers`.
    pub const ADD_SERVERS: u8 = REQUEST_BASE + 4;
    /// `Request::RemoveServers`.
    pub const REMOVE_SERVERS: u8 = REQUEST_BASE + 5;
    /// `Request::Read`.
    pub const READ: u8 = REQUEST_BASE + 6;
    /// `Request::ReadServer`.
    pub const READ_SERVER: u8 = REQUEST_BASE + 7;
    /// `Request::Write`.
    pub const WRITE: u8 = REQUEST_BASE + 8;
    /// `Request::Update`.
    pub const UPDATE: u8 = REQUEST_BASE + 9;
    /// `Request::Delete`.
    pub const DELETE: u8 = REQUEST_BASE + 10;
    /// `Request::Log`.
    pub const LOG: u8 = REQUEST_BASE + 11;
    /// `Request::GetTopology`.
    pub const GET_TOPOLOGY: u8 = REQUEST_BASE + 12;
    /// `Request::SubscribeTopology`.
    pub const SUBSCRIBE_TOPOLOGY: u8 = REQUEST_BASE + 13;
    /// `Request::Failover`.
    pub const FAILOVER: u8 = REQUEST_BASE + 14;
    /// `Request::Auth`.
    pub const AUTH: u8 = REQUEST_BASE + 15;
    /// `Response::Error`: responses keep this variant at index 0 so it never moves.
    pub const ERROR: u8 = RESPONSE_BASE;
}

/// The seed's `/init`: a schema, shards, and which servers hold which shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitRequest {
    /// How many servers to start (at least the named ones).
    pub n: usize,
    /// The table's schema.
    pub schema: Schema,
    /// The shards and their key ranges.
    pub shards: Vec<ShardSpec>,
    /// Server name → the shards it holds.
    pub servers: BTreeMap<String, Vec<ShardId>>,
}

impl InitRequest {
    /// The seed's default layout: its schema, 6 servers, 4 shards of 4096 keys, 3 replicas
    /// each (the course system's `/init` example, which tests and benches start from).
    pub fn seed() -> InitRequest {
        let shards = (0..4).map(|i| ShardSpec { id: ShardId(i + 1), low: i64::from(i) * 4096, size: 4096 }).collect();
        let layout: [(&str, [u32; 2]); 6] = [
            ("Server0", [1, 2]),
            ("Server1", [3, 4]),
            ("Server2", [1, 3]),
            ("Server3", [4, 2]),
            ("Server4", [1, 4]),
            ("Server5", [3, 2]),
        ];
        let servers = layout.iter().map(|(n, s)| ((*n).to_owned(), s.iter().map(|&i| ShardId(i)).collect())).collect();
        InitRequest { n: 6, schema: Schema::seed(), shards, servers }
    }
}

/// The seed's `/add`: new servers, optionally new shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddServersRequest {
    /// How many servers to add (at least the named ones).
    pub n: usize,
    /// Shards to create.
    pub new_shards: Vec<ShardSpec>,
    /// Server name → shards it will hold; `Server[5]`-style names ask for a generated name.
    pub servers: BTreeMap<String, Vec<ShardId>>,
}

/// Every request a client (or the balancer, on its behalf) sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness check.
    Ping,
    /// The cluster's (or a node's) status.
    Status,
    /// Counters and latency figures of the process asked.
    Stats,
    /// Create the cluster.
    Init(InitRequest),
    /// Add servers and shards.
    AddServers(AddServersRequest),
    /// Remove `n` servers, the named ones first.
    RemoveServers {
        /// How many to remove.
        n: usize,
        /// Which ones, first.
        servers: Vec<String>,
    },
    /// Rows with key in `[low, high]`, in key order.
    Read {
        /// Lowest key, inclusive.
        low: i64,
        /// Highest key, inclusive.
        high: i64,
        /// How fresh the answer must be (see [`Consistency`]).
        consistency: Consistency,
    },
    /// Every row a server holds, by shard.
    ReadServer {
        /// The server's name.
        server: String,
    },
    /// Insert a batch of rows; each shard's part is atomic.
    Write(WriteBatch),
    /// Replace the row with `row.key`.
    Update {
        /// The sending client's id (0: no retry protection).
        client_id: u64,
        /// The client's sequence number.
        seq: u64,
        /// The new row.
        row: Row,
    },
    /// Delete one row from every replica.
    Delete {
        /// The sending client's id (0: no retry protection).
        client_id: u64,
        /// The client's sequence number.
        seq: u64,
        /// The key.
        key: i64,
    },
    /// The last entries of a shard's log on a storage node.
    Log {
        /// The shard.
        shard: ShardId,
        /// How many entries, newest last.
        count: u32,
    },
    /// The topology, if newer than `known_version`.
    GetTopology {
        /// The version the asker has (0: none).
        known_version: u64,
    },
    /// Push every new topology on this connection.
    SubscribeTopology,
    /// Move a shard's primary deliberately (a planned switchover): the target catches up,
    /// the old primary stops taking writes, and the target leads at a new term.
    Failover {
        /// The shard.
        shard: ShardId,
        /// The new primary; `None`: the most caught-up other voter.
        to: Option<String>,
    },
    /// Present a credential for this connection (the first request on a server that
    /// requires one); answered `Authenticated` or `Unauthenticated`.
    Auth {
        /// The user name (`cluster` for the cluster's own processes).
        user: String,
        /// The password or token, sent as is (use TLS where the network is not trusted).
        secret: Secret,
    },
}

/// A password or token on the wire: its `Debug` never shows it, so logging a request
/// cannot leak it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One shard's commit of a write: where it sits in the log and who holds it durably.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCommit {
    /// The shard.
    pub shard: ShardId,
    /// The term of the entry.
    pub term: u64,
    /// The entry's log index.
    pub index: u64,
    /// Servers that had it on disk when it committed.
    pub replicas: Vec<String>,
    /// Rows the entry touched.
    pub rows: u64,
}

/// A shard's rows, for `ReadServer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRows {
    /// The shard.
    pub shard: ShardId,
    /// Its rows in key order.
    pub rows: Vec<Row>,
}

/// Every response to a [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// The request failed.
    Error(ErrorCode),
    /// Answer to `Ping`.
    Pong,
    /// Cluster status (from a balancer or the coordinator); also the answer to `Init`,
    /// `AddServers` and `RemoveServers`, and what `SubscribeTopology` pushes.
    Topology(Topology),
    /// A storage node's status.
    Node(NodeStatus),
    /// Counters, as name/value pairs in a stable order.
    Stats(Vec<(String, String)>),
    /// Rows in key order, with the position each shard's replica served them at (what a
    /// session client takes in, so its next read sees at least as much).
    Rows {
        /// Per shard read: the replica's term and applied index for these rows. Ahead of
        /// `rows` on the wire, so a router merges answers without decoding a row.
        at: Vec<ShardPosition>,
        /// The rows.
        rows: Vec<Row>,
    },
    /// Rows grouped by shard.
    ServerRows(Vec<ShardRows>),
    /// A write, update or delete committed; one entry per shard it touched.
    Committed(Vec<ShardCommit>),
    /// Log entries, oldest first.
    Log(Vec<LogLine>),
    /// `GetTopology` when the asker is up to date.
    TopologyUnchanged {
        /// The current version.
        version: u64,
    },
    /// Answer to `Auth`: the connection now acts as `user` with `grants`.
    Authenticated {
        /// The user.
        user: String,
        /// What the user may do: `client`, `admin`, `cluster`.
        grants: Vec<String>,
    },
}

impl Request {
    /// Whether the request changes data (and so must go to a primary).
    pub fn is_write(&self) -> bool {
        matches!(self, Request::Write(_) | Request::Update { .. } | Request::Delete { .. })
    }

    /// Whether it is an admin operation, for the coordinator.
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Request::Init(_) | Request::AddServers(_) | Request::RemoveServers { .. } | Request::Failover { .. }
        )
    }
}

impl Message for Request {
    const BASE: u8 = kind::REQUEST_BASE;
    const SPAN: u8 = 0x30;
    const NAME: &'static str = "Request";

    fn route(&self) -> Route {
        match self {
            Request::Update { row, .. } => Route::Key(row.key),
            Request::Delete { key, .. } => Route::Key(*key),
            Request::Read { low, .. } => Route::Key(*low),
            Request::Write(batch) if !batch.is_empty() => Route::Key(batch.key(0)),
            Request::Log { shard, .. } => Route::Shard(shard.0),
            _ => Route::None,
        }
    }

    fn flags(&self) -> u16 {
        match self {
            Request::Read { consistency: Consistency::Primary, .. } => FLAG_LINEARIZABLE,
            _ => 0,
        }
    }

    fn encode_payload(&self) -> Result<(u8, Bytes), MessageError> {
        match self {
            Request::Write(batch) => Ok((kind::WRITE - kind::REQUEST_BASE, batch.to_bytes())),
            other => {
                let payload = postcard::to_allocvec(other).map_err(|e| MessageError::Encode(e.to_string()))?;
                Ok((payload[0], Bytes::from(payload)))
            }
        }
    }

    fn decode_payload(k: u8, payload: &Bytes) -> Result<Self, MessageError> {
        if k == kind::WRITE {
            return WriteBatch::parse(payload.clone())
                .map(Request::Write)
                .map_err(|e| MessageError::Payload { expected: Self::NAME, reason: e.to_string() });
        }
        let request: Request = super::decode_exact(Self::NAME, payload)?;
        if k - Self::BASE != payload[0] || matches!(request, Request::Write(_)) {
            return Err(MessageError::KindMismatch { kind: k, payload: payload[0] });
        }
        Ok(request)
    }
}

impl Message for Response {
    const BASE: u8 = kind::RESPONSE_BASE;
    const SPAN: u8 = 0x30;
    const NAME: &'static str = "Response";
}

impl From<ErrorCode> for Response {
    fn from(e: ErrorCode) -> Response {
        Response::Error(e)
    }
}
