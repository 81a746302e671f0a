//! One pipelined TCP connection: the protocol's [`MuxConn`] (the same type the balancer
//! uses toward its nodes), with its failures told as [`ClientError`]s.
//!
//! A call takes a place (at most `max_in_flight` calls are open, so the server's own limit
//! is never hit), encodes its frame into the connection's output buffer under a fresh
//! request id, and waits for the answer with that id; answers may come in any order, and
//! calls past their timeout are failed by the connection's periodic sweep. When the stream
//! ends or breaks, every open call fails and the connection is marked closed, so the
//! [`Client`](crate::Client) makes a new one for the next call.

use std::sync::Arc;
use std::time::Duration;

use shardline_protocol::net::{CallError, MuxConn, Outgoing};
use shardline_protocol::Frame;

use crate::error::ClientError;

/// One open connection to a server.
#[derive(Debug)]
pub(crate) struct Connection {
    mux: MuxConn,
}

impl Connection {
    /// Connects to `addr` within `timeout`, with `outgoing`'s TLS and credential.
    pub(crate) async fn open(
        addr: &str,
        timeout: Duration,
        max_payload: usize,
        max_in_flight: usize,
        outgoing: &Outgoing,
    ) -> Result<Connection, ClientError> {
        let mux = MuxConn::connect_as(Arc::from(addr), timeout, max_payload, max_in_flight, outgoing)
            .await
            .map_err(client_error)?;
        Ok(Connection { mux })
    }

    /// Whether the connection has broken (a new one is needed).
    pub(crate) fn is_closed(&self) -> bool {
        !self.mux.is_open()
    }

    /// Sends `frame` (its request id is replaced) and waits up to `timeout` for the answer.
    pub(crate) async fn call(&self, frame: Frame, timeout: Duration) -> Result<Frame, ClientError> {
        self.mux.call(frame, timeout).await.map_err(client_error)
    }
}

fn client_error(e: CallError) -> ClientError {
    match e {
        CallError::Connect { addr, reason } => ClientError::Connection { addr, reason },
        CallError::Closed { addr } => ClientError::Connection { addr, reason: "the connection closed".into() },
        CallError::ShuttingDown { addr } => {
            ClientError::Connection { addr, reason: "the server is shutting down and did not read the request".into() }
        }
        CallError::Timeout { addr, after } => ClientError::Timeout { addr, timeout: after },
        CallError::Refused { addr, reason } => ClientError::Refused { addr, reason },
        CallError::Tls { addr, reason } => ClientError::Tls { addr, reason },
        CallError::TooLarge { len, max } | CallError::AnswerTooLarge { len, max, .. } => {
            ClientError::TooLarge { len, max }
        }
        other => ClientError::Protocol(other.to_string()),
    }
}
