//! The coordinator's typed errors, and the one place they become the wire's [`ErrorCode`].
//!
//! Inside the coordinator a failure keeps its cause ([`MetaError`], [`SpawnError`], the
//! [`CallError`] of a control call); requests that are refused as such (a bad layout, an
//! unknown server, not the leader) are already the wire's answer and travel as
//! [`CoordinatorError::Refused`]. [`CoordinatorService`](crate::service::CoordinatorService)
//! turns either into an `ErrorCode` when it answers.

use std::time::Duration;

use shardline_protocol::net::CallError;
use shardline_protocol::ErrorCode;

use crate::meta::MetaError;
use crate::spawner::SpawnError;

/// Why a coordinator operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// The request is refused, as the wire names it.
    #[error(transparent)]
    Refused(#[from] ErrorCode),
    /// The cluster's configuration could not be saved or loaded.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// A node could not be started or stopped.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// A control call to a node got no answer.
    #[error("control call to {addr}: {source}")]
    Call {
        /// The node's address.
        addr: String,
        /// What went wrong with the call.
        #[source]
        source: CallError,
    },
    /// A node answered a control call with something other than what was asked for.
    #[error("{addr} answered {answer}")]
    Unexpected {
        /// The node's address.
        addr: String,
        /// The answer, as debug text.
        answer: String,
    },
    /// A node that was started did not answer in time.
    #[error("{name} did not answer at {addr} within {after:?}")]
    NotReady {
        /// The server's name.
        name: String,
        /// Where it should listen.
        addr: String,
        /// How long the coordinator waited.
        after: Duration,
    },
}

impl From<CoordinatorError> for ErrorCode {
    fn from(e: CoordinatorError) -> ErrorCode {
        match e {
            CoordinatorError::Refused(code) => code,
            // The save was refused because another coordinator changed the configuration
            // or took the lead: this one no longer speaks for the cluster.
            CoordinatorError::Meta(MetaError::Conflict(_)) => ErrorCode::NotLeader { leader: None },
            CoordinatorError::Call { addr, source: CallError::Connect { reason, .. } } => {
                ErrorCode::Unreachable { addr, reason }
            }
            e @ (CoordinatorError::Call { .. } | CoordinatorError::NotReady { .. }) => {
                ErrorCode::Timeout(e.to_string())
            }
            e @ (CoordinatorError::Meta(_) | CoordinatorError::Spawn(_) | CoordinatorError::Unexpected { .. }) => {
                ErrorCode::Internal(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_keep_their_meaning_on_the_wire() {
        let connect = CoordinatorError::Call {
            addr: "127.0.0.1:1".into(),
            source: CallError::Connect { addr: "127.0.0.1:1".into(), reason: "refused".into() },
        };
        assert!(matches!(ErrorCode::from(connect), ErrorCode::Unreachable { ref addr, .. } if addr == "127.0.0.1:1"));
        let timeout = CoordinatorError::Call {
            addr: "a".into(),
            source: CallError::Timeout { addr: "a".into(), after: Duration::from_secs(1) },
        };
        assert!(matches!(ErrorCode::from(timeout), ErrorCode::Timeout(_)));
        let refused = CoordinatorError::from(ErrorCode::UnknownServer { name: "x".into() });
        assert_eq!(ErrorCode::from(refused), ErrorCode::UnknownServer { name: "x".into() });
        let lost = CoordinatorError::Meta(MetaError::Conflict("revision moved".into()));
        assert_eq!(ErrorCode::from(lost), ErrorCode::NotLeader { leader: None });
    }
}
