//! One multiplexed connection to a peer: many calls in flight, answers matched by id.
//!
//! A writer task drains a queue of frames onto the socket (small frames batched into one
//! write, large payloads written from their own `Bytes` without a copy); a reader task
//! hands each answer to the call waiting for its request id through a oneshot channel.
//! Ids are unique per connection, so answers may come back in any order. When either task
//! fails, the connection closes: every pending call fails at once (so it can be retried
//! elsewhere) and the pool replaces the connection on next use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::StreamExt;
use shardline_protocol::{frame, Frame, FrameCodec};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::AbortHandle;
use tokio_util::codec::FramedRead;
use tracing::debug;

use crate::error::CallError;

/// Payloads above this are written from their own buffer instead of copied into the batch.
const COPY_LIMIT: usize = 16 * 1024;
/// Bytes gathered before a batch is written.
const BATCH_BYTES: usize = 256 * 1024;
/// Frames queued for the writer before callers wait.
const QUEUE: usize = 1024;
/// Calls one connection carries at once: a node answers `Overloaded` past its own
/// in-flight limit (1024 by default), so further calls wait here for a free place.
pub const MAX_IN_FLIGHT: usize = shardline_protocol::DEFAULT_MAX_IN_FLIGHT;

#[derive(Debug, Default)]
struct Pending {
    calls: HashMap<u64, oneshot::Sender<Frame>>,
    closed: bool,
    tasks: Vec<AbortHandle>,
}

#[derive(Debug)]
struct Shared {
    addr: Arc<str>,
    pending: Mutex<Pending>,
}

impl Shared {
    /// Fails every pending call and stops both tasks.
    fn close(&self) {
        let (calls, tasks) = {
            let mut p = self.pending.lock().expect("pending lock");
            p.closed = true;
            (std::mem::take(&mut p.calls), std::mem::take(&mut p.tasks))
        };
        debug!(addr = %self.addr, failed = calls.len(), "connection closed");
        drop(calls);
        for task in tasks {
            task.abort();
        }
    }

    fn forget(&self, id: u64) {
        self.pending.lock().expect("pending lock").calls.remove(&id);
    }
}

/// A connection shared by many concurrent calls.
#[derive(Debug)]
pub struct MuxConn {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Frame>,
    next_id: AtomicU64,
    max_payload: usize,
    places: Semaphore,
}

impl MuxConn {
    /// Connects to `addr` within `timeout`, Nagle off, and starts the two tasks.
    pub async fn connect(addr: Arc<str>, timeout: Duration, max_payload: usize) -> Result<MuxConn, CallError> {
        let connect_err = |reason: String| CallError::Connect { addr: addr.to_string(), reason };
        let stream = tokio::time::timeout(timeout, TcpStream::connect(&*addr))
            .await
            .map_err(|_| connect_err("timed out".into()))?
            .map_err(|e| connect_err(e.to_string()))?;
        stream.set_nodelay(true).map_err(|e| connect_err(e.to_string()))?;
        let (read, write) = stream.into_split();
        let shared = Arc::new(Shared { addr, pending: Mutex::new(Pending::default()) });
        let (queue, rx) = mpsc::channel(QUEUE);
        let reader = tokio::spawn(read_loop(read, shared.clone(), max_payload));
        let writer = tokio::spawn(write_loop(write, rx, shared.clone()));
        shared.pending.lock().expect("pending lock").tasks.extend([reader.abort_handle(), writer.abort_handle()]);
        Ok(MuxConn { shared, queue, next_id: AtomicU64::new(1), max_payload, places: Semaphore::new(MAX_IN_FLIGHT) })
    }

    /// Whether the connection can still carry calls.
    pub fn is_open(&self) -> bool {
        !self.shared.pending.lock().expect("pending lock").closed
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
        let timed_out = || CallError::Timeout { addr: addr(), after: timeout };
        let deadline = tokio::time::Instant::now() + timeout;
        let _place = tokio::time::timeout_at(deadline, self.places.acquire())
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| CallError::Closed { addr: addr() })?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.shared.pending.lock().expect("pending lock");
            if p.closed {
                return Err(CallError::Closed { addr: addr() });
            }
            p.calls.insert(id, tx);
        }
        // Forget the call however this future ends: answered, failed, timed out or dropped.
        let _forget = Forget(&self.shared, id);
        frame.request_id = id;
        if self.queue.send(frame).await.is_err() {
            return Err(CallError::Closed { addr: addr() });
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(CallError::Closed { addr: addr() }),
            Err(_) => Err(timed_out()),
        }
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

async fn read_loop(read: OwnedReadHalf, shared: Arc<Shared>, max_payload: usize) {
    let mut frames = FramedRead::new(read, FrameCodec::new(max_payload));
    loop {
        match frames.next().await {
            Some(Ok(answer)) => {
                let waiter = shared.pending.lock().expect("pending lock").calls.remove(&answer.request_id);
                // No waiter: the call gave up already; its answer is dropped.
                if let Some(waiter) = waiter {
                    let _ = waiter.send(answer);
                }
            }
            Some(Err(e)) => {
                debug!(addr = %shared.addr, %e, "corrupt answer stream");
                break;
            }
            None => break,
        }
    }
    shared.close();
}

async fn write_loop(mut write: OwnedWriteHalf, mut rx: mpsc::Receiver<Frame>, shared: Arc<Shared>) {
    let mut batch = BytesMut::with_capacity(64 * 1024);
    'outer: while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(f) = next.take() {
            if f.payload.len() > COPY_LIMIT {
                let mut head = BytesMut::with_capacity(frame::HEADER_LEN);
                frame::put_header(&f, &mut head);
                let sent = async {
                    write.write_all_buf(&mut batch).await?;
                    write.write_all_buf(&mut head.chain(f.payload)).await
                };
                if sent.await.is_err() {
                    break 'outer;
                }
            } else {
                frame::encode(&f, &mut batch);
            }
            if batch.len() < BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if write.write_all_buf(&mut batch).await.is_err() {
            break;
        }
        batch.clear();
    }
    shared.close();
}
