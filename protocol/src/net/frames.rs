//! One binary connection, served run-to-completion in a single task.
//!
//! Each turn reads what the socket has, decodes every whole frame in the read buffer and
//! answers it: inline when the service can ([`Service::try_frame`]), otherwise as a future
//! kept in this connection's own set (no task per frame) whose answer joins the output
//! when it is ready. Answers gather in one output buffer that goes out in one write per
//! turn, so a pipelined batch costs one read and one write. Streams (subscriptions) feed
//! the same buffer. The in-flight limit counts the waiting futures; past it a request is
//! answered `Overloaded` at once. While the output is above [`HIGH_WATER`] (a peer that does
//! not read) nothing more is read.
//!
//! Every frame that goes out passes one size check ([`push_frame`]): an answer over the
//! frame limit is replaced by a `TooLarge` error for its request, so the peer's decoder is
//! never handed a frame it must refuse (which would close the connection under every other
//! call on it). A request over the limit gets a `TooLarge` answer (its header is checked
//! before the length, so its id is known), then the connection is closed: the stream
//! cannot be resynchronized without reading the oversized payload. A failed write ends the
//! task, which drops the socket: the connection is never left half alive.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::stream::FuturesUnordered;
use futures::Stream as _;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_util::io::poll_read_buf;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::warn;

use super::serve::{Limits, Service};
use super::Stream;
use crate::access::{Grants, Need};
use crate::frame::DecodeError;
use crate::{error_frame, frame, kind, ErrorCode, Frame, Message, Request, Response};

/// Room kept free in the read buffer before each read.
pub(super) const READ_CHUNK: usize = 64 * 1024;
/// Output bytes past which the connection stops reading until the peer catches up.
pub(super) const HIGH_WATER: usize = 1 << 20;

/// What a connection may do, once past the handshake.
#[derive(Debug, Clone, Copy)]
pub(super) struct Session {
    /// Its user's permissions.
    pub grants: Grants,
    /// The server asks for no credentials (an `Auth` frame is simply acknowledged).
    pub open: bool,
}

/// Serves binary frames on `stream` (with `input` already read from it) until the peer
/// closes it and every answer is out, or it stays idle past the idle timeout.
pub(super) async fn serve_frames<S: Service>(
    stream: Stream,
    service: Arc<S>,
    limits: Limits,
    session: Session,
    mut input: BytesMut,
    stop: CancellationToken,
) -> io::Result<()> {
    input.reserve(READ_CHUNK);
    let mut conn = FrameConn {
        stop_watch: Box::pin(stop.clone().cancelled_owned()),
        watching: false,
        stop,
        draining: Drain::No,
        stream,
        service,
        limits,
        session,
        idle: Box::pin(tokio::time::sleep(limits.idle_timeout)),
        last_read: Instant::now(),
        input,
        output: BytesMut::with_capacity(READ_CHUNK),
        pending: FuturesUnordered::new(),
        streams: Vec::new(),
        reading: true,
        unflushed: false,
        later: answer_later::<S>,
    };
    // Frames that came with the handshake are answered before the first read.
    conn.answer_input();
    poll_fn(|cx| conn.poll_turn(cx)).await?;
    if conn.draining == Drain::Said {
        linger(&mut conn.stream).await;
    }
    Ok(())
}

/// How long a stopping server keeps reading (and dropping) what a peer still sends after
/// the closing notice, so that closing does not reset the connection under it.
pub(super) const LINGER: Duration = Duration::from_secs(1);

/// Closes the sending side, then reads and drops until the peer closes too, for at most
/// [`LINGER`]. Closing a socket that holds unread bytes makes the kernel send a reset,
/// and a reset may destroy answers the peer has received but not yet read: the closing
/// notice among them.
pub(super) async fn linger(stream: &mut Stream) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 16 * 1024];
    let _ =
        tokio::time::timeout(LINGER, async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} }).await;
}

/// The deferred path: the service's async answer, owning what it needs.
async fn answer_later<S: Service>(service: Arc<S>, frame: Frame) -> Frame {
    service.frame(frame).await
}

struct FrameConn<S, F, L> {
    stream: Stream,
    service: Arc<S>,
    limits: Limits,
    session: Session,
    /// Fires when the connection may have been idle for the idle timeout.
    idle: Pin<Box<Sleep>>,
    /// When the peer last sent anything.
    last_read: Instant,
    input: BytesMut,
    output: BytesMut,
    pending: FuturesUnordered<F>,
    streams: Vec<mpsc::Receiver<Frame>>,
    /// False once the peer closed its side or sent something that is not a frame.
    reading: bool,
    /// Written since the last flush (TLS may hold the bytes in its session until then).
    unflushed: bool,
    /// Cancelled when the server stops.
    stop: CancellationToken,
    /// Wakes this connection's task when `stop` is cancelled, once polled (see
    /// [`FrameConn::stopping`]).
    stop_watch: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Whether `stop_watch` holds this task's waker.
    watching: bool,
    /// Where a stopping server's connection is in saying goodbye.
    draining: Drain,
    later: L,
}

/// A connection's part in a server's graceful stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    /// The server is running.
    No,
    /// The server stops: nothing more is read; what was read is being answered.
    Answering,
    /// Every answer is out, then the closing notice ([`GOAWAY`]); the connection ends once
    /// that is written.
    Said,
}

/// The notice a stopping server sends last on each binary connection, as an error with
/// request id 0: every request it read has been answered; any other request sent on this
/// connection was not read, so it was not carried out and may be sent elsewhere.
pub(super) const GOAWAY: &str = "the server is stopping: every request it read is answered; the rest were not read";

impl<S, F, L> FrameConn<S, F, L>
where
    S: Service,
    F: Future<Output = Frame>,
    L: Fn(Arc<S>, Frame) -> F,
{
    /// Does everything that can be done now; `Ready` when the connection is finished.
    fn poll_turn(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut progress = false;
            if self.draining == Drain::No && self.stopping(cx) {
                self.begin_drain();
                progress = true;
            }
            if self.reading && self.output.len() < HIGH_WATER {
                progress |= self.poll_read(cx)?;
            }
            while let Poll::Ready(Some(answer)) = Pin::new(&mut self.pending).poll_next(cx) {
                self.push(&answer);
                progress = true;
            }
            if !self.streams.is_empty() && self.output.len() < HIGH_WATER {
                progress |= self.poll_streams(cx);
            }
            if !self.output.is_empty() {
                match Pin::new(&mut self.stream).poll_write(cx, &self.output) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        self.output.advance(n);
                        self.unflushed = true;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            if self.output.is_empty() && self.unflushed {
                match Pin::new(&mut self.stream).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.unflushed = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            let done = !self.reading && self.pending.is_empty() && self.streams.is_empty();
            if done && self.draining == Drain::Answering {
                // Everything read is answered: say so, after the last answer.
                self.push_error(0, 0, ErrorCode::ShuttingDown(GOAWAY.into()));
                self.draining = Drain::Said;
                continue;
            }
            if done && self.output.is_empty() && !self.unflushed {
                return Poll::Ready(Ok(()));
            }
            if !progress {
                if self.poll_idle(cx) {
                    warn!(idle = ?self.limits.idle_timeout, "closing an idle connection");
                    return Poll::Ready(Ok(()));
                }
                return Poll::Pending;
            }
        }
    }

    /// Whether the server is stopping. The watch is polled once, leaving this task's waker
    /// with the token, and after that the flag is read: every poll of a waiting watch takes
    /// a lock that all of the server's connections share, and this runs every turn.
    fn stopping(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.watching {
            self.watching = true;
            return self.stop_watch.as_mut().poll(cx).is_ready();
        }
        self.stop.is_cancelled()
    }

    /// The server stops: read nothing more (requests not yet read stay unread, so they are
    /// not carried out), end the subscriptions, and answer what was read.
    fn begin_drain(&mut self) {
        self.draining = Drain::Answering;
        self.reading = false;
        self.streams.clear();
    }

    /// Reads what the socket holds and answers every whole frame; whether anything happened.
    /// (A short read clears the socket's readiness, so no extra `recv` is spent learning
    /// that it is empty.)
    fn poll_read(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        if self.input.capacity() - self.input.len() < READ_CHUNK / 4 {
            self.input.reserve(READ_CHUNK);
        }
        match poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.input) {
            Poll::Pending => Ok(false),
            Poll::Ready(Ok(0)) => {
                self.reading = false;
                Ok(true)
            }
            Poll::Ready(Ok(_)) => {
                self.last_read = Instant::now();
                self.answer_input();
                Ok(true)
            }
            Poll::Ready(Err(e)) => Err(e),
        }
    }

    fn answer_input(&mut self) {
        while self.reading {
            match frame::decode(&mut self.input, self.limits.max_payload) {
                Ok(Some(frame)) => self.answer(frame),
                Ok(None) => break,
                Err(DecodeError::TooLarge { len, max }) => {
                    // The header passed its CRC: its id and kind are the sender's own.
                    let header = frame::decode_header(&self.input, usize::MAX).ok().flatten();
                    let (kind, id) = header.map_or((0, 0), |h| (h.kind, h.request_id));
                    warn!(len, max, id, "request over the frame limit: answering TooLarge, closing");
                    self.push_error(kind, id, ErrorCode::too_large(len, max));
                    self.reading = false;
                }
                Err(e) => {
                    warn!(%e, "corrupt stream: closing");
                    self.push_error(0, 0, ErrorCode::BadRequest(e.to_string()));
                    self.reading = false;
                }
            }
        }
    }

    /// Whether the connection has been idle (nothing read, nothing owed) past the idle
    /// timeout; otherwise re-arms the timer for the next moment it could be.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> bool {
        if self.idle.as_mut().poll(cx).is_pending() {
            return false;
        }
        let now = Instant::now();
        let busy = !self.pending.is_empty() || !self.streams.is_empty() || !self.output.is_empty();
        let due = self.last_read + self.limits.idle_timeout;
        if !busy && now >= due {
            return true;
        }
        let next = if busy { now + self.limits.idle_timeout } else { due };
        self.idle.as_mut().reset(next);
        // Registers the re-armed timer with this task's waker.
        let _ = self.idle.as_mut().poll(cx);
        false
    }

    fn answer(&mut self, frame: Frame) {
        let need = Need::of_kind(frame.kind);
        if !self.session.grants.allows(need) {
            let code = ErrorCode::Forbidden(format!("this needs the {} permission", need.name()));
            self.push_error(frame.kind, frame.request_id, code);
            return;
        }
        if frame.kind == kind::AUTH {
            self.answer_auth(&frame);
            return;
        }
        if let Some(stream) = self.service.stream(&frame) {
            self.streams.push(stream);
            return;
        }
        match self.service.try_frame(frame) {
            Ok(answer) => self.push(&answer),
            Err(frame) if self.pending.len() >= self.limits.max_in_flight => {
                let limit = self.limits.max_in_flight;
                let code = ErrorCode::Overloaded(format!("over {limit} requests in flight"));
                self.push_error(frame.kind, frame.request_id, code);
            }
            Err(frame) => self.pending.push((self.later)(self.service.clone(), frame)),
        }
    }

    /// An `Auth` frame past the handshake: acknowledged on an open server, refused on one
    /// that checked a credential already (one user per connection).
    fn answer_auth(&mut self, frame: &Frame) {
        let answer = match Request::from_frame(frame) {
            Ok(Request::Auth { user, .. }) if self.session.open => {
                Response::Authenticated { user, grants: self.session.grants.names() }
            }
            Ok(_) => Response::Error(ErrorCode::BadRequest("this connection is authenticated already".into())),
            Err(e) => Response::Error(ErrorCode::BadRequest(e.to_string())),
        };
        match answer.to_frame(frame.request_id) {
            Ok(f) => self.push(&f),
            Err(e) => self.push_error(frame.kind, frame.request_id, ErrorCode::Internal(e.to_string())),
        }
    }

    fn poll_streams(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let output = &mut self.output;
        let max = self.limits.max_payload;
        self.streams.retain_mut(|rx| loop {
            match rx.poll_recv(cx) {
                Poll::Ready(Some(f)) => {
                    progress = true;
                    push_frame(output, max, &f);
                }
                Poll::Ready(None) => {
                    progress = true;
                    return false;
                }
                Poll::Pending => return true,
            }
        });
        progress
    }

    fn push(&mut self, answer: &Frame) {
        push_frame(&mut self.output, self.limits.max_payload, answer);
    }

    /// Answers the request of `kind` and `id` with `code`, in the enum its sender expects.
    fn push_error(&mut self, kind: u8, id: u64, code: ErrorCode) {
        frame::encode(&error_frame(kind, id, code), &mut self.output);
    }
}

/// Appends `answer` to `output`, or a `TooLarge` error for its request in its place if it
/// is over the frame limit (the peer would refuse it and close the connection).
fn push_frame(output: &mut BytesMut, max_payload: usize, answer: &Frame) {
    if answer.payload.len() <= max_payload {
        frame::encode(answer, output);
        return;
    }
    let len = answer.payload.len();
    warn!(len, max_payload, id = answer.request_id, "answer over the frame limit: answering TooLarge");
    frame::encode(&error_frame(answer.kind, answer.request_id, ErrorCode::too_large(len, max_payload)), output);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ControlResponse, PeerResponse, Row};

    fn decode_one(buf: &mut BytesMut) -> Frame {
        frame::decode(buf, usize::MAX).expect("a frame").expect("whole")
    }

    #[test]
    fn an_answer_over_the_limit_becomes_too_large_in_its_own_enum() {
        let rows =
            Response::Rows { at: Vec::new(), rows: vec![Row::new(1, vec![crate::Value::Str("x".repeat(2000))])] };
        let mut out = BytesMut::new();
        push_frame(&mut out, 1024, &rows.to_frame(7).unwrap());
        let got = decode_one(&mut out);
        assert_eq!(got.request_id, 7);
        assert!(
            matches!(Response::from_frame(&got), Ok(Response::Error(ErrorCode::TooLarge { max: 1024, .. }))),
            "{got:?}"
        );
        let peer = PeerResponse::Error(ErrorCode::Internal("y".repeat(2000))).to_frame(8).unwrap();
        push_frame(&mut out, 1024, &peer);
        let got = PeerResponse::from_frame(&decode_one(&mut out));
        assert!(matches!(got, Ok(PeerResponse::Error(ErrorCode::TooLarge { .. }))), "{got:?}");
        let control = ControlResponse::Error(ErrorCode::Internal("z".repeat(2000))).to_frame(9).unwrap();
        push_frame(&mut out, 1024, &control);
        let got = ControlResponse::from_frame(&decode_one(&mut out));
        assert!(matches!(got, Ok(ControlResponse::Error(ErrorCode::TooLarge { .. }))), "{got:?}");
        // Within the limit, the answer goes out as it is.
        push_frame(&mut out, 1 << 20, &rows.to_frame(10).unwrap());
        assert_eq!(Response::from_frame(&decode_one(&mut out)).unwrap(), rows);
    }
}
