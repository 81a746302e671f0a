//! The balancer's typed errors: bad configuration, and calls to peers that failed.

use std::time::Duration;

use shardline_protocol::{ErrorCode, ShardId};

/// Why the balancer cannot start or keep serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BalancerError {
    /// The configuration does not make sense.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a call to a node or the coordinator got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No connection could be made: the request was never sent.
    #[error("connect to {addr}: {reason}")]
    Connect {
        /// The address.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The connection died with the request in flight: its effect is unknown.
    #[error("connection to {addr} closed")]
    Closed {
        /// The address.
        addr: String,
    },
    /// No answer came in time: its effect is unknown.
    #[error("no answer from {addr} within {after:?}")]
    Timeout {
        /// The address.
        addr: String,
        /// How long the call waited.
        after: Duration,
    },
    /// The request is larger than a frame may be.
    #[error("refusing to send a {len}-byte payload (limit {max})")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// Limit.
        max: usize,
    },
}

impl CallError {
    /// Whether trying again (after a topology refresh) may help.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, CallError::TooLarge { .. })
    }

    /// The error code a client sees for this failure on behalf of `shard` (if any).
    pub fn to_code(&self, shard: Option<ShardId>) -> ErrorCode {
        match (self, shard) {
            (CallError::TooLarge { .. }, _) => ErrorCode::BadRequest(self.to_string()),
            (CallError::Timeout { .. }, _) => ErrorCode::Timeout(self.to_string()),
            (_, Some(shard)) => ErrorCode::Unavailable { shard, reason: self.to_string() },
            (_, None) => ErrorCode::Internal(self.to_string()),
        }
    }
}
