//! An outgoing framed connection that sends one request and waits for its answer.
//!
//! For control-plane hops (replication, heartbeats, elections) where calls are ordered
//! anyway: a plain call keeps timeouts simple. Clients that pipeline use their own.

use std::time::Duration;

use futures::{SinkExt, StreamExt};

use crate::{FrameCodec, Message};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// Why a call failed; the connection should be dropped after any of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// Could not connect.
    #[error("connect to {addr}: {reason}")]
    Connect {
        /// The address.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The peer closed the connection.
    #[error("connection closed")]
    Closed,
    /// A frame or message that does not decode.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// A connection to a peer.
#[derive(Debug)]
pub struct Conn {
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
        Ok(Conn { framed: Framed::new(stream, FrameCodec::new(max_payload)), next_id: 1 })
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
        let exchange = async {
            self.framed.send(&frame).await.map_err(|e| CallError::Protocol(e.to_string()))?;
            loop {
                let reply = self.framed.next().await.ok_or(CallError::Closed)?;
                let reply = reply.map_err(|e| CallError::Protocol(e.to_string()))?;
                if reply.request_id == id {
                    return Resp::from_frame(&reply).map_err(|e| CallError::Protocol(e.to_string()));
                }
            }
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| CallError::Timeout(timeout))?
    }
}
