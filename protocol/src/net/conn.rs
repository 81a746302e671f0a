//! An outgoing framed connection that sends one request and waits for its answer.
//!
//! For control-plane hops (replication, heartbeats, elections) where calls are ordered
//! anyway: a plain call keeps timeouts simple. Callers that pipeline use [`super::MuxConn`].

use std::time::Duration;

use futures::{SinkExt, StreamExt};

use crate::{ErrorCode, FrameCodec, Message, ShardId};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// Why a call to a peer failed: the one error type of [`Conn`] and [`super::MuxConn`].
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
    /// The request is larger than a frame may be; nothing was sent.
    #[error("refusing to send a {len}-byte payload (limit {max})")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A frame or message that does not decode, or an answer that is not the one asked for.
    #[error("protocol: {0}")]
    Protocol(String),
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

/// A connection to a peer.
#[derive(Debug)]
pub struct Conn {
    addr: String,
    framed: Framed<TcpStream, FrameCodec>,
    next_id: u64,
}

impl Conn {
    /// Connects within `timeout`, with Nagle off.
    pub async fn connect(addr: &str, timeout: Duration, max_payload: usize) -> Result<Conn, CallError> {
        let connect_err = |reason: String| CallError::Connect { addr: addr.to_owned(), reason };
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| connect_err("timed out".into()))?
            .map_err(|e| connect_err(e.to_string()))?;
        stream.set_nodelay(true).map_err(|e| connect_err(e.to_string()))?;
        Ok(Conn { addr: addr.to_owned(), framed: Framed::new(stream, FrameCodec::new(max_payload)), next_id: 1 })
    }

    /// Sends `request` and waits up to `timeout` for the answer with the same id.
    pub async fn call<Req: Message, Resp: Message>(
        &mut self,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = request.to_frame(id).map_err(|e| CallError::Protocol(e.to_string()))?;
        let addr = self.addr.clone();
        let closed = || CallError::Closed { addr: addr.clone() };
        let exchange = async {
            self.framed.send(&frame).await.map_err(|e| CallError::Protocol(e.to_string()))?;
            loop {
                let reply = self.framed.next().await.ok_or_else(closed)?;
                let reply = reply.map_err(|e| CallError::Protocol(e.to_string()))?;
                if reply.request_id == id {
                    return Resp::from_frame(&reply).map_err(|e| CallError::Protocol(e.to_string()));
                }
            }
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| CallError::Timeout { addr, after: timeout })?
    }
}
