//! The client's typed errors.

use std::time::Duration;

use shardline_protocol::ErrorCode;

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Could not connect, or the connection broke before the answer came.
    #[error("connection to {addr}: {reason}")]
    Connection {
        /// The server's address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// No answer within the call's timeout; a write may or may not have been applied
    /// (retrying it with the same client id and sequence applies it at most once).
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout {
        /// The server's address.
        addr: String,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// The server answered with an error.
    #[error("{name}: {0}", name = .0.name())]
    Server(ErrorCode),
    /// The server's answer was not what the request calls for, or did not decode.
    #[error("protocol: {0}")]
    Protocol(String),
    /// A request, or the server's answer, over this client's frame limit
    /// ([`ClientConfig::max_payload`](crate::ClientConfig)); sending it again will not help:
    /// read a narrower key range, or write fewer rows at once. (A server's own limit comes
    /// back as [`ClientError::Server`] with [`ErrorCode::TooLarge`].)
    #[error("{len} bytes is over this client's {max}-byte frame limit")]
    TooLarge {
        /// Bytes the request or answer takes.
        len: usize,
        /// The client's frame limit.
        max: usize,
    },
    /// The server refused this client's credential (or wants one and none was given):
    /// check `--credentials` / [`ClientConfig::credential`](crate::ClientConfig).
    #[error("{addr} refused the credential: {reason}")]
    Refused {
        /// The server's address.
        addr: String,
        /// The server's answer.
        reason: String,
    },
    /// The TLS handshake failed: the server's certificate is not signed by the CA this
    /// client trusts ([`ClientConfig::tls`](crate::ClientConfig)) or names another host, or
    /// the server does not speak TLS on that port. Trying again will not help.
    #[error("TLS with {addr}: {reason}")]
    Tls {
        /// The server's address.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The request could not be built from the arguments (e.g. an empty write).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl From<ErrorCode> for ClientError {
    fn from(code: ErrorCode) -> ClientError {
        ClientError::Server(code)
    }
}

impl ClientError {
    /// The server's error code, if the server answered with one.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            ClientError::Server(code) => Some(code),
            _ => None,
        }
    }

    /// Whether the failure was in the transport (connection or timeout) rather than an
    /// answer: sending again may succeed.
    pub fn is_transport(&self) -> bool {
        matches!(self, ClientError::Connection { .. } | ClientError::Timeout { .. })
    }
}
