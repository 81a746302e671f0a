//! Serving a listener: accept, tell binary peers from people at `nc`, and serve each.
//!
//! Binary connections are pipelined and served run-to-completion ([`super::frames`]): one
//! task per connection answers what it can at once and keeps the rest as futures of its
//! own, so answers may come back out of order (request ids pair them up). A connection may
//! have `max_in_flight` requests open; past that a request is answered `Overloaded` at once
//! instead of queueing without bound. A stream that stops being frames gets one error frame
//! and is closed. Text connections are answered a line at a time, under the same frame
//! limit: an answer whose binary form would be over it is answered `ERR TooLarge`, so
//! `nc` and a binary client see the same outcome for the same request.
//!
//! A server listens on its [`Ports`]: its port, in the clear or with TLS, and, beside a TLS
//! port and only where the operator asks for it, a plaintext one (for `nc`). A TLS port
//! answers a peer that speaks in the clear with one error (a frame, or a text line) and
//! closes, so a misconfigured client fails at once instead of hanging in a handshake.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::{FramedRead, LinesCodec};
use tracing::{debug, info, warn};

use super::auth::Gate;
use super::door;
use super::frames::{serve_frames, Session};
use super::tls::{ServerTls, HANDSHAKE_RECORD};
use super::Stream;
use crate::access::{Grants, Need};
use crate::frame::is_binary_start;
use crate::text::{self, TextCommand};
use crate::{ErrorCode, Frame, Message, Request, Response, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_PAYLOAD};
use tokio::time::timeout_at;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A server's logic: one frame in, one frame out; one text request in, one answer out.
pub trait Service: Send + Sync + 'static {
    /// Answers a binary frame (any message kind the service takes).
    fn frame(&self, frame: Frame) -> impl Future<Output = Frame> + Send;

    /// Answers a frame at once, inside the connection's own turn, when that needs no
    /// waiting (a read of local state, a ping); otherwise gives the frame back for
    /// [`Service::frame`]. The default answers nothing at once. It must not block.
    fn try_frame(&self, frame: Frame) -> Result<Frame, Frame> {
        Err(frame)
    }
    /// Answers a request typed in the text mode.
    fn text(&self, request: Request) -> impl Future<Output = Response> + Send;

    /// For a request answered by a stream of frames (e.g. topology pushes), the stream;
    /// `None` (the default) for requests answered once by [`Service::frame`].
    fn stream(&self, frame: &Frame) -> Option<mpsc::Receiver<Frame>> {
        let _ = frame;
        None
    }

    /// A connection was accepted (for an open-connections gauge); the default does nothing.
    fn connection_opened(&self) {}

    /// A connection [`Service::connection_opened`] reported has ended.
    fn connection_closed(&self) {}
}

/// The limits a server enforces on its peers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest frame payload accepted or sent.
    pub max_payload: usize,
    /// Requests one connection may have in flight before it gets `Overloaded`.
    pub max_in_flight: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long a new connection may take to send its first byte and, where credentials
    /// are required, to authenticate; then it is closed.
    pub handshake_timeout: Duration,
    /// How long a connection may stay silent with nothing in flight before it is closed.
    pub idle_timeout: Duration,
}

/// [`Limits::handshake_timeout`]'s default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping server waits for its connections to answer what they read before
/// it cuts them (below `docker stop`'s 10 s grace, so the drain finishes first).
pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// [`Limits::idle_timeout`]'s default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_connections: 1024,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// Where a server listens.
#[derive(Debug)]
pub struct Ports {
    /// Its port: TLS when [`Ports::tls`] is set, else in the clear.
    pub listener: TcpListener,
    /// The certificate the port serves TLS with.
    pub tls: Option<ServerTls>,
    /// A second port, always in the clear (for `nc` beside a TLS port).
    pub plain: Option<TcpListener>,
}

impl From<TcpListener> for Ports {
    fn from(listener: TcpListener) -> Ports {
        Ports { listener, tls: None, plain: None }
    }
}

/// Serves `listener` until `shutdown` completes, to anyone (no credentials asked); then
/// drains: accepts nothing more, reads nothing more, answers every request it read, ends
/// each binary connection with a closing notice (`ShuttingDown`, request id 0), and returns
/// once every connection is closed or 5 s (`DRAIN_TIMEOUT`) have passed.
pub async fn serve<S: Service>(
    listener: TcpListener,
    service: Arc<S>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, service, limits, Arc::new(Gate::open()), shutdown).await
}

/// Serves `listener` until `shutdown` completes, asking each connection for the
/// credentials `gate` wants before answering anything but `Ping`, `Help` and `Auth`.
pub async fn serve_with<S: Service>(
    listener: TcpListener,
    service: Arc<S>,
    limits: Limits,
    gate: Arc<Gate>,
    shutdown: impl Future<Output = ()>,
) {
    serve_ports(listener.into(), service, limits, gate, shutdown).await
}

/// [`serve_with`] on every port of `ports` (one connection limit for them all).
pub async fn serve_ports<S: Service>(
    ports: Ports,
    service: Arc<S>,
    limits: Limits,
    gate: Arc<Gate>,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, tracker) = (CancellationToken::new(), TaskTracker::new());
    let Ports { listener, tls, plain } = ports;
    let plain_accept = async |plain: &Option<TcpListener>| match plain {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    };
    tokio::pin!(shutdown);
    loop {
        let (accepted, tls) = tokio::select! {
            accepted = listener.accept() => (accepted, tls.as_ref()),
            accepted = plain_accept(&plain) => (accepted, None),
            _ = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(%e, "accept failed");
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            warn!(%peer, "connection limit reached: refusing");
            // A TLS client would not understand a plaintext answer: it just sees the close.
            if tls.is_none() {
                tokio::spawn(refuse(stream));
            }
            continue;
        };
        let visit = Visit { peer: peer.ip(), service: service.clone(), limits, gate: gate.clone(), stop: stop.clone() };
        let tls = tls.cloned();
        service.connection_opened();
        let service = service.clone();
        tracker.spawn(async move {
            if let Err(e) = serve_connection(stream, tls, visit).await {
                debug!(%peer, %e, "connection ended");
            }
            service.connection_closed();
            drop(permit);
        });
    }
    drop((listener, plain));
    stop.cancel();
    tracker.close();
    info!(connections = tracker.len(), "shutting down: no new connections; answering what was read");
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait()).await.is_err() {
        warn!(left = tracker.len(), bound = ?DRAIN_TIMEOUT, "connections still busy at the drain bound: cut");
    }
}

/// One step of a connection's handshake: bounded by the handshake deadline, and given up
/// when the server stops (nothing has been asked of it yet).
async fn step<T>(
    deadline: tokio::time::Instant,
    stop: &CancellationToken,
    f: impl Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::select! {
        r = timeout_at(deadline, f) => r.map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timeout"))?,
        () = stop.cancelled() => Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "the server is stopping")),
    }
}

async fn refuse(mut stream: TcpStream) {
    let frame = Response::Error(ErrorCode::Overloaded("too many connections".into())).to_frame(0);
    if let Ok(frame) = frame {
        let mut buf = bytes::BytesMut::new();
        crate::frame::encode(&frame, &mut buf);
        let _ = stream.write_all(&buf).await;
    }
}

/// `response`, or a `TooLarge` error if its binary form would be over `max_payload`.
fn within_limit(response: Response, max_payload: usize) -> Response {
    match postcard::experimental::serialized_size(&response) {
        Ok(len) if len > max_payload => Response::Error(ErrorCode::too_large(len, max_payload)),
        _ => response,
    }
}

/// What a TLS port answers a peer that speaks in the clear, before closing.
const TLS_REQUIRED: &str = "this port speaks TLS: connect with TLS (shardline --tls-ca FILE), or use the \
                            server's plaintext port if it has one";

/// One connection's peer and what serving it takes.
struct Visit<S> {
    peer: IpAddr,
    service: Arc<S>,
    limits: Limits,
    gate: Arc<Gate>,
    /// Cancelled when the server stops.
    stop: CancellationToken,
}

async fn serve_connection<S: Service>(tcp: TcpStream, tls: Option<ServerTls>, visit: Visit<S>) -> std::io::Result<()> {
    let (peer, limits, stop, gate) = (visit.peer, visit.limits, visit.stop.clone(), visit.gate.clone());
    tcp.set_nodelay(true)?;
    let deadline = tokio::time::Instant::now() + limits.handshake_timeout;
    // Nothing is allocated for a connection until it sends something.
    let mut first = [0u8; 1];
    if step(deadline, &stop, tcp.peek(&mut first)).await? == 0 {
        return Ok(());
    }
    let mut stream = match tls {
        Some(_) if first[0] != HANDSHAKE_RECORD => return refuse_plaintext(tcp, first[0], peer).await,
        Some(tls) => step(deadline, &stop, tls.accept(tcp)).await?,
        None if first[0] == HANDSHAKE_RECORD => {
            // A TLS client on a plaintext port: closing at once lets it fail now, not
            // after waiting for an answer to a ClientHello it will never get.
            debug!(%peer, "a TLS handshake on a plaintext port: closing");
            return Ok(());
        }
        None => Stream::Plain(tcp),
    };
    // The first bytes tell frames from text; they stay in the buffer for whichever serves.
    let mut input = BytesMut::with_capacity(super::frames::READ_CHUNK);
    if step(deadline, &stop, stream.read_buf(&mut input)).await? == 0 {
        return Ok(());
    }
    if !is_binary_start(input[0]) {
        return serve_text(stream, input, visit).await;
    }
    let (grants, input) = if gate.is_open() {
        (Grants::ALL, input)
    } else {
        let accepted = door::accept(&mut stream, input, &gate, peer, limits.max_payload);
        match step(deadline, &stop, accepted).await? {
            Some(won) => won,
            None => return Ok(()),
        }
    };
    let session = Session { grants, open: gate.is_open() };
    serve_frames(stream, visit.service, limits, session, input, stop).await
}

/// Answers a plaintext peer on a TLS port in its own language (an error frame, or a text
/// line) and closes.
async fn refuse_plaintext(mut tcp: TcpStream, first: u8, peer: IpAddr) -> std::io::Result<()> {
    debug!(%peer, "plaintext on a TLS port: refusing");
    let code = ErrorCode::BadRequest(TLS_REQUIRED.into());
    if is_binary_start(first) {
        let mut buf = BytesMut::new();
        crate::frame::encode(&crate::error_frame(0, 0, code), &mut buf);
        tcp.write_all(&buf).await?;
    } else {
        tcp.write_all(text::format_response(&Response::Error(code)).as_bytes()).await?;
    }
    tcp.shutdown().await
}

/// Writes a text answer and flushes it (TLS holds bytes back until flushed).
async fn say(write: &mut super::stream::WriteHalf, answer: &str) -> std::io::Result<()> {
    write.write_all(answer.as_bytes()).await?;
    write.flush().await
}

/// What the text mode answers `request` with, if the connection may not send it.
fn refusal(grants: Grants, request: &Request) -> Option<Response> {
    let need = Need::of_request(request);
    if grants.allows(need) {
        return None;
    }
    let code = if grants.is_none() {
        ErrorCode::Unauthenticated("authenticate first: AUTH <user> <secret>".into())
    } else {
        ErrorCode::Forbidden(format!("this needs the {} permission", need.name()))
    };
    Some(Response::Error(code))
}

async fn serve_text<S: Service>(stream: Stream, input: BytesMut, visit: Visit<S>) -> std::io::Result<()> {
    let Visit { peer, service, limits, gate, stop } = visit;
    let max_payload = limits.max_payload;
    let (read, mut write) = stream.into_split();
    // The bytes read to tell text from frames are the first line's start.
    let read = std::io::Cursor::new(input).chain(read);
    let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(text::MAX_LINE));
    let mut grants = if gate.is_open() { Grants::ALL } else { Grants::NONE };
    let mut refused = 0;
    // Until it authenticates, a connection has the handshake's time; then the idle timeout.
    let mut deadline = tokio::time::Instant::now() + limits.handshake_timeout;
    loop {
        // A stopping server answers the line it is on, then says so and closes.
        let next = tokio::select! {
            biased;
            () = stop.cancelled() => {
                let code = ErrorCode::ShuttingDown("the server is stopping: closing this connection".into());
                let _ = say(&mut write, &text::format_response(&Response::Error(code))).await;
                // As on binary connections (`frames::linger`): no reset under the notice.
                let _ = write.shutdown().await;
                let _ = tokio::time::timeout(super::frames::LINGER, async { while lines.next().await.is_some() {} }).await;
                break;
            }
            next = timeout_at(deadline, lines.next()) => next,
        };
        let Ok(line) = next else {
            let answer = "ERR Timeout: closing an idle connection\n";
            let _ = say(&mut write, answer).await;
            break;
        };
        let Some(line) = line else { break };
        if !grants.is_none() {
            deadline = tokio::time::Instant::now() + limits.idle_timeout;
        }
        let answer = match line {
            Ok(line) => match text::parse_line(&line) {
                Ok(TextCommand::Empty) => continue,
                Ok(TextCommand::Quit) => break,
                Ok(TextCommand::Help) => text::HELP.to_owned(),
                Ok(TextCommand::Request(Request::Auth { user, secret })) => {
                    match gate.check(peer, &user, &secret).await {
                        Ok(won) => {
                            grants = won;
                            deadline = tokio::time::Instant::now() + limits.idle_timeout;
                            text::format_response(&Response::Authenticated { user, grants: won.names() })
                        }
                        Err(e) => {
                            refused += 1;
                            let answer =
                                text::format_response(&Response::Error(ErrorCode::Unauthenticated(e.to_string())));
                            if refused >= door::MAX_ATTEMPTS {
                                say(&mut write, &answer).await?;
                                break;
                            }
                            answer
                        }
                    }
                }
                Ok(TextCommand::Request(request)) => match refusal(grants, &request) {
                    Some(refused) => text::format_response(&refused),
                    None => text::format_response(&within_limit(service.text(request).await, max_payload)),
                },
                Err(e) => text::format_text_error(&e),
            },
            Err(e) => {
                let answer = format!("ERR BadRequest: {e}\n");
                say(&mut write, &answer).await?;
                break;
            }
        };
        say(&mut write, &answer).await?;
    }
    Ok(())
}
