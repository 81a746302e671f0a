//! The storage node's typed errors, and the one place they become the wire's [`ErrorCode`].
//!
//! Inside the node a failure keeps its cause (the table's [`StoreError`], a shard that
//! would not open, files that would not go). A refusal a replica decided (not the primary,
//! a stale term, a duplicate key, a replica behind a session) is already the wire's answer
//! and travels as [`NodeError::Refused`]: the replica core speaks in protocol messages, so
//! that the simulator can deliver them as they are. The node's `Service` turns either
//! into an `ErrorCode` when it answers.

use std::path::PathBuf;

use shardline_protocol::{EntryError, ErrorCode, MessageError, ShardId};

use crate::replica::OpenError;
use crate::store::StoreError;

/// Why a storage node could not do what it was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Refused, as the wire names it.
    #[error(transparent)]
    Refused(#[from] ErrorCode),
    /// The shard's task has stopped (the shard was dropped, or the node is stopping).
    #[error("{0}'s task has stopped")]
    ShardStopped(ShardId),
    /// The table failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A new shard replica could not be opened.
    #[error("opening the shard: {0}")]
    Open(#[from] OpenError),
    /// A dropped shard's files could not be removed.
    #[error("removing {}: {source}", dir.display())]
    RemoveFiles {
        /// The shard's directory.
        dir: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A log entry could not be encoded or decoded.
    #[error("log entry: {0}")]
    Entry(#[from] EntryError),
    /// An answer could not be encoded.
    #[error("the answer does not encode: {0}")]
    Encode(#[from] MessageError),
}

impl From<std::io::Error> for NodeError {
    fn from(e: std::io::Error) -> NodeError {
        NodeError::Store(e.into())
    }
}

/// The wire's answer for a failure of this node's own (the table, the log): `Internal`,
/// naming the cause, through the one conversion above.
pub(crate) fn internal(e: impl Into<NodeError>) -> ErrorCode {
    e.into().into()
}

impl From<NodeError> for ErrorCode {
    fn from(e: NodeError) -> ErrorCode {
        match e {
            NodeError::Refused(code) => code,
            e @ (NodeError::ShardStopped(_)
            | NodeError::Store(_)
            | NodeError::Open(_)
            | NodeError::RemoveFiles { .. }
            | NodeError::Entry(_)
            | NodeError::Encode(_)) => ErrorCode::Internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_stays_the_wire_code_and_a_cause_is_named_once() {
        let refused = ErrorCode::UnknownShard { shard: ShardId(3) };
        assert_eq!(ErrorCode::from(NodeError::from(refused.clone())), refused);
        let stopped = ErrorCode::from(NodeError::ShardStopped(ShardId(2)));
        assert_eq!(stopped, ErrorCode::Internal("sh2's task has stopped".into()));
        let io = std::io::Error::other("disk full");
        let gone = NodeError::RemoveFiles { dir: "/data/sh2".into(), source: io };
        assert_eq!(ErrorCode::from(gone), ErrorCode::Internal("removing /data/sh2: disk full".into()));
    }
}
