//! An outgoing framed connection that sends one request and waits for its answer.
//!
//! For control-plane hops (replication, heartbeats, elections) where calls are ordered
//! anyway: a plain call keeps timeouts simple. Callers that pipeline use [`super::MuxConn`].
//!
//! A call that fails after anything was sent (a write error, a corrupt or oversized answer,
//! a timeout) leaves the stream in an unknown place, so the connection is spent: every
//! later call fails with `Closed` at once and the caller opens a new one. Only a request
//! refused before sending (`TooLarge`) leaves it usable.

use std::time::Duration;

use futures::{SinkExt, StreamExt};

use crate::{CodecError, DecodeError, ErrorCode, Frame, FrameCodec, Message, ShardId};
use tokio_util::codec::Framed;

use super::door::Outgoing;
use super::Stream;

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
    /// The peer's answer is over the frame limit: the connection was closed, and asking
    /// again would get the same answer.
    #[error("the answer from {addr} is {len} bytes, over the {max}-byte frame limit")]
    AnswerTooLarge {
        /// The address.
        addr: String,
        /// Declared payload length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A frame or message that does not decode, or an answer that is not the one asked for.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The TLS handshake failed: the peer's certificate was refused (not signed by a
    /// trusted CA, or naming another host), or the peer does not speak TLS.
    #[error("TLS with {addr}: {reason}")]
    Tls {
        /// The address.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The peer is stopping and did not read the request: it was not carried out.
    #[error("{addr} is shutting down and did not read the request")]
    ShuttingDown {
        /// The address.
        addr: String,
    },
    /// The peer refused this process's credential (or wants one and none was given).
    #[error("{addr} refused the credential: {reason}")]
    Refused {
        /// The address.
        addr: String,
        /// The peer's answer.
        reason: String,
    },
}

impl CallError {
    /// Whether trying again (after a topology refresh) may help.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            CallError::TooLarge { .. }
                | CallError::AnswerTooLarge { .. }
                | CallError::Refused { .. }
                | CallError::Tls { .. }
        )
    }

    /// The error code a client sees for this failure on behalf of `shard` (if any).
    pub fn to_code(&self, shard: Option<ShardId>) -> ErrorCode {
        match (self, shard) {
            (CallError::TooLarge { len, max } | CallError::AnswerTooLarge { len, max, .. }, _) => {
                ErrorCode::too_large(*len, *max)
            }
            (CallError::Timeout { .. }, _) => ErrorCode::Timeout(self.to_string()),
            (CallError::ShuttingDown { .. }, _) => ErrorCode::ShuttingDown(self.to_string()),
            (CallError::Refused { .. } | CallError::Tls { .. }, _) => ErrorCode::Internal(self.to_string()),
            (_, Some(shard)) => ErrorCode::Unavailable { shard, reason: self.to_string() },
            (_, None) => ErrorCode::Internal(self.to_string()),
        }
    }
}

/// A connection to a peer.
#[derive(Debug)]
pub struct Conn {
    addr: String,
    framed: Framed<Stream, FrameCodec>,
    next_id: u64,
    /// A call failed mid-way: the stream's state is unknown.
    spent: bool,
}

impl Conn {
    /// Connects within `timeout`, with Nagle off, with this process's TLS and credential
    /// ([`Outgoing::process`]) if it has them.
    pub async fn connect(addr: &str, timeout: Duration, max_payload: usize) -> Result<Conn, CallError> {
        let stream = super::door::open(addr, timeout, max_payload, &Outgoing::process()).await?;
        Ok(Conn {
            addr: addr.to_owned(),
            framed: Framed::new(stream, FrameCodec::new(max_payload)),
            next_id: 1,
            spent: false,
        })
    }

    /// Sends `request` and waits up to `timeout` for the answer with the same id.
    pub async fn call<Req: Message, Resp: Message>(
        &mut self,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let addr = self.addr.clone();
        if self.spent {
            return Err(CallError::Closed { addr });
        }
        let id = self.next_id;
        self.next_id += 1;
        let frame = request.to_frame(id).map_err(|e| CallError::Protocol(e.to_string()))?;
        let max = self.framed.codec().max_payload();
        if frame.payload.len() > max {
            return Err(CallError::TooLarge { len: frame.payload.len(), max });
        }
        let closed = || CallError::Closed { addr: addr.clone() };
        let exchange = async {
            self.framed.send(&frame).await.map_err(|e| CallError::Protocol(e.to_string()))?;
            loop {
                let reply = match self.framed.next().await.ok_or_else(closed)? {
                    Ok(reply) => reply,
                    Err(CodecError::Decode(DecodeError::TooLarge { len, max })) => {
                        return Err(CallError::AnswerTooLarge { addr: addr.clone(), len, max })
                    }
                    Err(e) => return Err(CallError::Protocol(e.to_string())),
                };
                if reply.request_id == id {
                    return Resp::from_frame(&reply).map_err(|e| CallError::Protocol(e.to_string()));
                }
                if is_goaway(&reply) {
                    return Err(CallError::ShuttingDown { addr: addr.clone() });
                }
            }
        };
        let result = tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(CallError::Timeout { addr: addr.clone(), after: timeout }));
        // Sent, then failed: part of a frame may be out, or an answer still on its way.
        self.spent = result.is_err();
        result
    }
}

/// Whether `frame` is a stopping server's closing notice: request id 0, an error
/// `ShuttingDown` (see [`ErrorCode::ShuttingDown`]); every request sent on the connection
/// and not answered before it was not read.
pub(super) fn is_goaway(frame: &Frame) -> bool {
    frame.request_id == 0
        && matches!(crate::Response::from_frame(frame), Ok(crate::Response::Error(ErrorCode::ShuttingDown(_))))
}
