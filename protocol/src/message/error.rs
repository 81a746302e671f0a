//! The typed errors a request can come back with.

use serde::{Deserialize, Serialize};

use crate::model::{ServerAddr, ShardId};

/// Why a request failed; carried in every response enum's `Error` variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorCode {
    /// This replica is not the shard's primary; `primary` is who it believes is.
    #[error("not the primary of {shard} (term {term}); primary is {}", primary.as_ref().map_or("unknown", |p| p.name.as_str()))]
    NotPrimary {
        /// The shard asked about.
        shard: ShardId,
        /// The term this replica knows.
        term: u64,
        /// Its best guess at the primary.
        primary: Option<ServerAddr>,
    },
    /// The message carried a term older than the receiver's.
    #[error("stale term {got}: current term is {current}")]
    StaleTerm {
        /// The receiver's term.
        current: u64,
        /// The term the message carried.
        got: u64,
    },
    /// The sender's topology is older than the receiver's.
    #[error("stale topology: current version is {current}")]
    StaleTopology {
        /// The receiver's topology version.
        current: u64,
    },
    /// Too few replicas hold the entry (or answered) to make a majority.
    #[error("no quorum for {shard}: {acked} of {needed} replicas needed")]
    NoQuorum {
        /// The shard.
        shard: ShardId,
        /// Replicas that answered or hold the entry.
        acked: u32,
        /// Replicas needed for a majority.
        needed: u32,
    },
    /// No shard owns this key.
    #[error("key {key} is outside every shard")]
    KeyOutOfRange {
        /// The key.
        key: i64,
    },
    /// A row does not fit the schema.
    #[error("schema violation: {0}")]
    SchemaViolation(String),
    /// An insert's key exists already.
    #[error("duplicate key {key}")]
    DuplicateKey {
        /// The key.
        key: i64,
    },
    /// An update or delete named a key that does not exist.
    #[error("key {key} not found")]
    NotFound {
        /// The key.
        key: i64,
    },
    /// A server name nobody knows.
    #[error("unknown server `{name}`")]
    UnknownServer {
        /// The name.
        name: String,
    },
    /// A shard this process does not know.
    #[error("unknown shard {shard}")]
    UnknownShard {
        /// The shard.
        shard: ShardId,
    },
    /// A limit was reached (connections, requests in flight, queue depth).
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The replica cannot serve this shard now (catching up, repairing a corrupt log).
    #[error("{shard} unavailable here: {reason}")]
    Unavailable {
        /// The shard.
        shard: ShardId,
        /// Why.
        reason: String,
    },
    /// The primary's lease lapsed; it takes no writes or primary reads until renewed.
    #[error("lease of {shard} expired")]
    LeaseExpired {
        /// The shard.
        shard: ShardId,
    },
    /// The request is malformed or makes no sense.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The request did not finish in time; it may or may not have been applied.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A failure inside the server (I/O, storage); the message says which.
    #[error("internal error: {0}")]
    Internal(String),
    /// The answer (or a log entry the write would make) is over the frame limit: nothing
    /// was sent or logged. Appended last so the earlier variants keep their wire indices.
    #[error(
        "too large: {len} bytes, over the {max}-byte limit; read a narrower key range, or write \
         smaller rows or fewer at once"
    )]
    TooLarge {
        /// Bytes the answer or entry would take.
        len: u64,
        /// The limit it was checked against: the frame limit, or for a log entry the room
        /// an append leaves under it.
        max: u64,
    },
    /// This coordinator stands by (another one leads, elected through etcd): admin
    /// operations and topology subscriptions go to the leader. Appended last, like
    /// `TooLarge`.
    #[error("not the leading coordinator; the leader is {}", leader.as_deref().unwrap_or("unknown"))]
    NotLeader {
        /// The leader's address, if this coordinator knows it.
        leader: Option<String>,
    },
    /// The connection has not authenticated (or its credential was refused): only `PING`,
    /// `HELP` and `AUTH` are answered. Appended after `NotLeader` to keep wire indices.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The connection's user lacks the permission this request needs.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A process this one had to call could not be reached: nothing was sent to it.
    #[error("{addr} unreachable: {reason}")]
    Unreachable {
        /// The address called.
        addr: String,
        /// Why the connection failed.
        reason: String,
    },
    /// This replica cannot prove it is as fresh as the read asks (a session position it
    /// has not applied, or a staleness bound it cannot show): a router asks the primary.
    #[error("{shard} here is behind what the read asks: {reason}")]
    Behind {
        /// The shard.
        shard: ShardId,
        /// What it lacks.
        reason: String,
    },
    /// The server is stopping. As a connection's last frame (request id 0): every request
    /// it read was answered before it; any other request on that connection was not read,
    /// so it was not carried out and may be sent elsewhere.
    #[error("shutting down: {0}")]
    ShuttingDown(String),
}

impl ErrorCode {
    /// The error for `len` bytes that do not fit a `max`-byte frame payload.
    pub fn too_large(len: usize, max: usize) -> ErrorCode {
        ErrorCode::TooLarge { len: len as u64, max: max as u64 }
    }

    /// A short stable name, used by the text mode (`ERR NotPrimary: …`).
    pub fn name(&self) -> &'static str {
        match self {
            ErrorCode::NotPrimary { .. } => "NotPrimary",
            ErrorCode::StaleTerm { .. } => "StaleTerm",
            ErrorCode::StaleTopology { .. } => "StaleTopology",
            ErrorCode::NoQuorum { .. } => "NoQuorum",
            ErrorCode::KeyOutOfRange { .. } => "KeyOutOfRange",
            ErrorCode::SchemaViolation(_) => "SchemaViolation",
            ErrorCode::DuplicateKey { .. } => "DuplicateKey",
            ErrorCode::NotFound { .. } => "NotFound",
            ErrorCode::UnknownServer { .. } => "UnknownServer",
            ErrorCode::UnknownShard { .. } => "UnknownShard",
            ErrorCode::Overloaded(_) => "Overloaded",
            ErrorCode::Unavailable { .. } => "Unavailable",
            ErrorCode::LeaseExpired { .. } => "LeaseExpired",
            ErrorCode::BadRequest(_) => "BadRequest",
            ErrorCode::Timeout(_) => "Timeout",
            ErrorCode::Internal(_) => "Internal",
            ErrorCode::TooLarge { .. } => "TooLarge",
            ErrorCode::NotLeader { .. } => "NotLeader",
            ErrorCode::Unauthenticated(_) => "Unauthenticated",
            ErrorCode::Forbidden(_) => "Forbidden",
            ErrorCode::Unreachable { .. } => "Unreachable",
            ErrorCode::Behind { .. } => "Behind",
            ErrorCode::ShuttingDown(_) => "ShuttingDown",
        }
    }

    /// Whether a router should refresh its topology and try again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ErrorCode::NotPrimary { .. }
                | ErrorCode::StaleTopology { .. }
                | ErrorCode::LeaseExpired { .. }
                | ErrorCode::Unavailable { .. }
                | ErrorCode::NoQuorum { .. }
                | ErrorCode::Unreachable { .. }
                | ErrorCode::ShuttingDown(_)
        )
    }
}
