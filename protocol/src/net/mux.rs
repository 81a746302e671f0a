//! One multiplexed connection to a peer: many calls in flight, answers matched by id. The
//! balancer's node connections and the `shardline` client's connection are this one type.
//!
//! A call encodes its frame straight into the connection's output buffer and wakes the
//! writer only when that buffer was empty; the writer first lets every task that is ready
//! run (a yield), so requests from many client connections that arrive together share one
//! `write()` to the node. The reader decodes every answer in its
//! read buffer and hands each to the call waiting for its request id (a pending table keyed
//! by the node-side id). Deadlines are not one timer per call: the reader sweeps the table
//! every [`SWEEP`] and fails the calls past theirs with `Timeout`. Ids are unique per
//! connection, so answers may come back in any order. When either task ends (a failed
//! write, end of stream, a frame that does not decode or is over the limit), the connection
//! closes: both tasks stop, the socket is dropped, every pending call fails at once (so it
//! can be retried elsewhere), later calls fail without waiting, and [`MuxConn::is_open`]
//! turns false so the pool replaces the connection on next use. An answer over the limit
//! fails its own call with `AnswerTooLarge` (not worth retrying) and the others `Closed`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{oneshot, Notify, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::codec::FramedRead;
use tracing::{debug, warn};

use super::door::Outgoing;
use super::stream::{ReadHalf, WriteHalf};
use super::CallError;
use crate::frame::DecodeError;
use crate::{frame, CodecError, Frame, FrameCodec};

/// How often the reader fails calls past their deadline (a timeout fires up to this late).
pub const SWEEP: Duration = Duration::from_millis(20);
/// Calls one connection carries at once: a node answers `Overloaded` past its own
/// in-flight limit (1024 by default), so further calls wait here for a free place.
pub const MAX_IN_FLIGHT: usize = crate::DEFAULT_MAX_IN_FLIGHT;

type Reply = oneshot::Sender<Result<Frame, CallError>>;

#[derive(Debug, Default)]
struct Pending {
    calls: HashMap<u64, (Instant, Duration, Reply)>,
    /// Encoded requests not yet written.
    output: BytesMut,
    next_id: u64,
    closed: bool,
    /// Closed by the peer's closing notice: nothing sent since was read.
    stopping: bool,
    tasks: Vec<AbortHandle>,
}

#[derive(Debug)]
struct Shared {
    addr: Arc<str>,
    pending: Mutex<Pending>,
    /// Wakes the writer when the output buffer stops being empty.
    wake_writer: Notify,
}

impl Shared {
    /// Fails the call waiting for `id`, if any, with `error`.
    fn fail(&self, id: u64, error: CallError) {
        let waiter = self.pending.lock().expect("pending lock").calls.remove(&id);
        if let Some((_, _, reply)) = waiter {
            let _ = reply.send(Err(error));
        }
    }

    /// Fails every pending call (`Closed`: sent, fate unknown) and stops both tasks.
    fn close(&self) {
        self.close_as(false);
    }

    /// Fails every pending call and every later one, stopping both tasks: `ShuttingDown`
    /// (not read, so not carried out) after the peer's closing notice, `Closed` otherwise.
    fn close_as(&self, stopping: bool) {
        let error = |addr| if stopping { CallError::ShuttingDown { addr } } else { CallError::Closed { addr } };
        let (calls, tasks) = {
            let mut p = self.pending.lock().expect("pending lock");
            p.stopping |= stopping && !p.closed;
            p.closed = true;
            p.output = BytesMut::new();
            (std::mem::take(&mut p.calls), std::mem::take(&mut p.tasks))
        };
        debug!(addr = %self.addr, failed = calls.len(), "connection closed");
        for (_, (_, _, reply)) in calls {
            let _ = reply.send(Err(error(self.addr.to_string())));
        }
        for task in tasks {
            task.abort();
        }
    }

    fn forget(&self, id: u64) {
        self.pending.lock().expect("pending lock").calls.remove(&id);
    }

    /// Fails the calls whose deadline has passed.
    fn sweep(&self, now: Instant) {
        let expired: Vec<(Duration, Reply)> = {
            let mut p = self.pending.lock().expect("pending lock");
            let late: Vec<u64> = p.calls.iter().filter(|(_, (d, _, _))| *d <= now).map(|(id, _)| *id).collect();
            late.iter().filter_map(|id| p.calls.remove(id)).map(|(_, after, reply)| (after, reply)).collect()
        };
        for (after, reply) in expired {
            let _ = reply.send(Err(CallError::Timeout { addr: self.addr.to_string(), after }));
        }
    }
}

/// A connection shared by many concurrent calls.
#[derive(Debug)]
pub struct MuxConn {
    shared: Arc<Shared>,
    max_payload: usize,
    places: Semaphore,
}

impl MuxConn {
    /// Connects to `addr` within `timeout`, Nagle off, and starts the two tasks; at most
    /// [`MAX_IN_FLIGHT`] calls are open at once.
    pub async fn connect(addr: Arc<str>, timeout: Duration, max_payload: usize) -> Result<MuxConn, CallError> {
        MuxConn::connect_with(addr, timeout, max_payload, MAX_IN_FLIGHT).await
    }

    /// [`MuxConn::connect`] with at most `max_in_flight` calls open at once (further calls
    /// wait for a place, within their timeout); with this process's TLS and credential.
    pub async fn connect_with(
        addr: Arc<str>,
        timeout: Duration,
        max_payload: usize,
        max_in_flight: usize,
    ) -> Result<MuxConn, CallError> {
        MuxConn::connect_as(addr, timeout, max_payload, max_in_flight, &Outgoing::process()).await
    }

    /// [`MuxConn::connect_with`] with the TLS and credential `outgoing` names (rather than
    /// this process's own, [`Outgoing::process`]).
    pub async fn connect_as(
        addr: Arc<str>,
        timeout: Duration,
        max_payload: usize,
        max_in_flight: usize,
        outgoing: &Outgoing,
    ) -> Result<MuxConn, CallError> {
        let stream = super::door::open(&addr, timeout, max_payload, outgoing).await?;
        let (read, write) = stream.into_split();
        let pending = Pending { next_id: 1, ..Pending::default() };
        let shared = Arc::new(Shared { addr, pending: Mutex::new(pending), wake_writer: Notify::new() });
        let reader = tokio::spawn(read_loop(read, shared.clone(), max_payload));
        let writer = tokio::spawn(write_loop(write, shared.clone()));
        let mut p = shared.pending.lock().expect("pending lock");
        if p.closed {
            // A task ended before it could be registered (the peer hung up at once): stop
            // the other too, or it would keep its half of the socket open.
            reader.abort();
            writer.abort();
        } else {
            p.tasks.extend([reader.abort_handle(), writer.abort_handle()]);
        }
        drop(p);
        Ok(MuxConn { shared, max_payload, places: Semaphore::new(max_in_flight.max(1)) })
    }

    /// Whether the connection can still carry calls.
    pub fn is_open(&self) -> bool {
        !self.shared.pending.lock().expect("pending lock").closed
    }

    /// The peer's address.
    pub fn addr(&self) -> &Arc<str> {
        &self.shared.addr
    }

    /// Calls waiting for answers.
    pub fn in_flight(&self) -> usize {
        self.shared.pending.lock().expect("pending lock").calls.len()
    }

    /// Sends `frame` under a connection-unique id and waits up to `timeout` for the answer
    /// (which comes back with that id; the caller restores its own).
    pub async fn call(&self, mut frame: Frame, timeout: Duration) -> Result<Frame, CallError> {
        if frame.payload.len() > self.max_payload {
            return Err(CallError::TooLarge { len: frame.payload.len(), max: self.max_payload });
        }
        let addr = || self.shared.addr.to_string();
        let deadline = Instant::now() + timeout;
        let _place = match self.places.try_acquire() {
            Ok(place) => place,
            Err(_) => tokio::time::timeout_at(deadline, self.places.acquire())
                .await
                .map_err(|_| CallError::Timeout { addr: addr(), after: timeout })?
                .map_err(|_| CallError::Closed { addr: addr() })?,
        };
        let (tx, rx) = oneshot::channel();
        let (id, wake) = {
            let mut p = self.shared.pending.lock().expect("pending lock");
            if p.closed && p.stopping {
                return Err(CallError::ShuttingDown { addr: addr() });
            }
            if p.closed {
                return Err(CallError::Closed { addr: addr() });
            }
            let id = p.next_id;
            p.next_id += 1;
            p.calls.insert(id, (deadline, timeout, tx));
            frame.request_id = id;
            let wake = p.output.is_empty();
            frame::encode(&frame, &mut p.output);
            (id, wake)
        };
        // Forget the call however this future ends: answered, failed, timed out or dropped.
        let _forget = Forget(&self.shared, id);
        if wake {
            self.shared.wake_writer.notify_one();
        }
        rx.await.unwrap_or_else(|_| Err(CallError::Closed { addr: addr() }))
    }
}

impl Drop for MuxConn {
    fn drop(&mut self) {
        self.shared.close();
    }
}

struct Forget<'a>(&'a Shared, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.forget(self.1);
    }
}

async fn read_loop(read: ReadHalf, shared: Arc<Shared>, max_payload: usize) {
    let mut frames = FramedRead::new(read, FrameCodec::new(max_payload));
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            next = frames.next() => match next {
                Some(Ok(answer)) if super::conn::is_goaway(&answer) => {
                    // Every call still waiting was not read by the peer: not carried out.
                    debug!(addr = %shared.addr, "the peer is shutting down");
                    shared.close_as(true);
                    return;
                }
                Some(Ok(answer)) => {
                    let waiter = shared.pending.lock().expect("pending lock").calls.remove(&answer.request_id);
                    // No waiter: the call gave up already; its answer is dropped.
                    if let Some((_, _, reply)) = waiter {
                        let _ = reply.send(Ok(answer));
                    }
                }
                Some(Err(CodecError::Decode(DecodeError::TooLarge { len, max }))) => {
                    // The header passed its CRC, so its request id is the answer's own.
                    if let Ok(Some(header)) = frame::decode_header(frames.read_buffer(), usize::MAX) {
                        let addr = shared.addr.to_string();
                        shared.fail(header.request_id, CallError::AnswerTooLarge { addr, len, max });
                    }
                    warn!(addr = %shared.addr, len, max, "answer over the frame limit: closing the connection");
                    break;
                }
                Some(Err(e)) => {
                    debug!(addr = %shared.addr, %e, "corrupt answer stream");
                    break;
                }
                None => break,
            },
            now = sweep.tick() => shared.sweep(now),
        }
    }
    shared.close();
}

async fn write_loop(mut write: WriteHalf, shared: Arc<Shared>) {
    let mut batch = BytesMut::with_capacity(64 * 1024);
    loop {
        shared.wake_writer.notified().await;
        // Let the tasks that are ready to run now (other callers) add their requests first:
        // woken by a caller, the writer would otherwise run next and send that one alone.
        tokio::task::yield_now().await;
        loop {
            {
                let mut p = shared.pending.lock().expect("pending lock");
                if p.output.is_empty() {
                    break;
                }
                std::mem::swap(&mut p.output, &mut batch);
            }
            // The flush pushes out what TLS kept in its session (nothing, in the clear).
            if write.write_all_buf(&mut batch).await.is_err() || write.flush().await.is_err() {
                shared.close();
                return;
            }
            batch.clear();
        }
    }
}
