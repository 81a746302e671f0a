//! A framed client for the tests: one request at a time, a deadline on every await.
//!
//! It drives the protocol's sans-IO `frame::encode` / `frame::decode` directly over a
//! `TcpStream`. Answers to earlier calls that timed out are skipped by request id.

use std::fmt;
use std::time::Duration;

use bytes::BytesMut;
use shardline_protocol::{frame, Message, Response, Route, DEFAULT_MAX_PAYLOAD};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

/// Why a call got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// No connection was made: the request was never sent.
    Connect(String),
    /// The request may have been sent, but no answer came in time (or the connection
    /// closed): its effect is unknown.
    NoAnswer(String),
    /// An answer came, but not of the expected kind (or the stream was corrupt).
    Unexpected(String),
}

impl CallError {
    /// Whether the request certainly never reached the node.
    pub(crate) fn never_sent(&self) -> bool {
        matches!(self, CallError::Connect(_))
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Connect(e) => write!(f, "connect failed: {e}"),
            CallError::NoAnswer(e) => write!(f, "no answer: {e}"),
            CallError::Unexpected(e) => write!(f, "unexpected answer: {e}"),
        }
    }
}

/// One connection to one node.
pub(crate) struct Conn {
    addr: String,
    stream: TcpStream,
    buf: BytesMut,
    next_id: u64,
}

impl Conn {
    /// Connects within `limit`.
    pub(crate) async fn connect(addr: &str, limit: Duration) -> Result<Conn, CallError> {
        Conn::connect_by(addr, Instant::now() + limit).await
    }

    async fn connect_by(addr: &str, deadline: Instant) -> Result<Conn, CallError> {
        let stream = match timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(CallError::Connect(format!("{addr}: {e}"))),
            Err(_) => return Err(CallError::Connect(format!("{addr}: connect timed out"))),
        };
        stream.set_nodelay(true).ok();
        Ok(Conn { addr: addr.to_owned(), stream, buf: BytesMut::with_capacity(64 * 1024), next_id: 0 })
    }

    /// Sends `req` (with `route` instead of the message's own, if given) and waits up to
    /// `limit` for the answer with the same request id.
    pub(crate) async fn call<Q: Message, A: Message>(
        &mut self,
        req: &Q,
        route: Option<Route>,
        limit: Duration,
    ) -> Result<A, CallError> {
        self.call_by(req, route, Instant::now() + limit).await
    }

    async fn call_by<Q: Message, A: Message>(
        &mut self,
        req: &Q,
        route: Option<Route>,
        deadline: Instant,
    ) -> Result<A, CallError> {
        self.next_id += 1;
        let id = self.next_id;
        let mut request = req.to_frame(id).map_err(|e| CallError::Unexpected(format!("cannot encode request: {e}")))?;
        if let Some(route) = route {
            request = request.with_route(route);
        }
        let mut wire = BytesMut::new();
        frame::encode(&request, &mut wire);
        let no_answer = |why: String| CallError::NoAnswer(format!("{}: {why}", self.addr));
        match timeout_at(deadline, self.stream.write_all(&wire)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(no_answer(format!("send: {e}"))),
            Err(_) => return Err(no_answer("send timed out".into())),
        }
        loop {
            match frame::decode(&mut self.buf, DEFAULT_MAX_PAYLOAD) {
                Err(e) => return Err(CallError::Unexpected(format!("corrupt stream: {e}"))),
                Ok(Some(answer)) if answer.request_id != id => continue,
                Ok(Some(answer)) => return decode_answer(&answer),
                Ok(None) => {}
            }
            match timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) => return Err(no_answer("connection closed".into())),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(no_answer(format!("receive: {e}"))),
                Err(_) => return Err(no_answer("timed out".into())),
            }
        }
    }
}

/// Reads the expected message out of an answer frame, naming what came instead if not.
fn decode_answer<A: Message>(answer: &frame::Frame) -> Result<A, CallError> {
    A::from_frame(answer).map_err(|e| match Response::from_frame(answer) {
        Ok(response) => CallError::Unexpected(format!("wanted a {}, got {response:?}", A::NAME)),
        Err(_) => CallError::Unexpected(format!("kind {:#04x}: {e}", answer.kind)),
    })
}

/// Connects, sends one request and reads its answer, all within `limit`.
pub(crate) async fn call_once<Q: Message, A: Message>(
    addr: &str,
    req: &Q,
    route: Option<Route>,
    limit: Duration,
) -> Result<A, CallError> {
    let deadline = Instant::now() + limit;
    let mut conn = Conn::connect_by(addr, deadline).await?;
    conn.call_by(req, route, deadline).await
}
