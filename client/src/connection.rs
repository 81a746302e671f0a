//! One pipelined TCP connection: a writer task, a reader task, and a table of calls waiting
//! for their answers, keyed by request id.
//!
//! A call takes a slot (at most `max_in_flight` calls are open, so the server's own limit
//! is never hit), registers a oneshot sender under a fresh request id, and hands its frame
//! to the writer task, which writes every frame queued at that moment and flushes once.
//! The reader task hands each answer to the sender registered under its id; answers may
//! come in any order. When the stream ends or breaks, every open call fails with the
//! reason and the connection is marked closed, so the [`Client`](crate::Client) makes a
//! new one for the next call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use shardline_protocol::{Frame, FrameCodec};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::error::ClientError;

/// Frames the writer task writes before it flushes.
const WRITE_BATCH: usize = 256;

/// Calls waiting for answers, and why the connection closed, if it did.
#[derive(Debug, Default)]
struct Pending {
    calls: HashMap<u64, oneshot::Sender<Frame>>,
    closed: Option<String>,
}

/// A shared [`Pending`] table.
#[derive(Debug, Default, Clone)]
struct Table(Arc<Mutex<Pending>>);

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Fails every open call (their receivers see the sender dropped) and refuses new ones.
    fn close(&self, reason: String) {
        let mut p = self.lock();
        if p.closed.is_none() {
            p.closed = Some(reason);
        }
        p.calls.clear();
    }

    fn closed(&self) -> Option<String> {
        self.lock().closed.clone()
    }
}

/// Removes a call from the table when the call ends, however it ends (answer, timeout, or
/// the caller's future being dropped).
struct Registration<'a> {
    table: &'a Table,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.table.lock().calls.remove(&self.id);
    }
}

/// One open connection to a server.
#[derive(Debug)]
pub(crate) struct Connection {
    addr: String,
    max_payload: usize,
    outgoing: mpsc::Sender<Frame>,
    table: Table,
    next_id: AtomicU64,
    slots: Semaphore,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Connection {
    /// Connects to `addr` within `timeout` and starts the reader and writer tasks.
    pub(crate) async fn open(
        addr: &str,
        timeout: Duration,
        max_payload: usize,
        max_in_flight: usize,
    ) -> Result<Connection, ClientError> {
        let fail = |reason: String| ClientError::Connection { addr: addr.to_owned(), reason };
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| fail(format!("connect timed out after {timeout:?}")))?
            .map_err(|e| fail(e.to_string()))?;
        stream.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
        let (read, write) = stream.into_split();
        let codec = FrameCodec::new(max_payload);
        let table = Table::default();
        let (outgoing, mut queue) = mpsc::channel::<Frame>(max_in_flight.max(1));

        let writer_table = table.clone();
        let writer = tokio::spawn(async move {
            let mut sink = FramedWrite::new(write, codec);
            while let Some(frame) = queue.recv().await {
                let mut result = sink.feed(frame).await;
                for _ in 1..WRITE_BATCH {
                    let Ok(frame) = queue.try_recv() else { break };
                    if result.is_err() {
                        break;
                    }
                    result = sink.feed(frame).await;
                }
                let flushed = SinkExt::<Frame>::flush(&mut sink).await;
                if let Err(e) = result.and(flushed) {
                    writer_table.close(format!("write failed: {e}"));
                    return;
                }
            }
        });

        let reader_table = table.clone();
        let reader = tokio::spawn(async move {
            let mut frames = FramedRead::new(read, codec);
            let reason = loop {
                match frames.next().await {
                    Some(Ok(frame)) => {
                        let waiter = reader_table.lock().calls.remove(&frame.request_id);
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(frame);
                        }
                    }
                    Some(Err(e)) => break format!("bad stream from the server: {e}"),
                    None => break "the server closed the connection".to_owned(),
                }
            };
            reader_table.close(reason);
        });

        Ok(Connection {
            addr: addr.to_owned(),
            max_payload,
            outgoing,
            table,
            next_id: AtomicU64::new(1),
            slots: Semaphore::new(max_in_flight.max(1)),
            reader,
            writer,
        })
    }

    /// Whether the connection has broken (a new one is needed).
    pub(crate) fn is_closed(&self) -> bool {
        self.table.closed().is_some()
    }

    /// Sends `frame` (its request id is replaced) and waits up to `timeout` for the answer.
    pub(crate) async fn call(&self, mut frame: Frame, timeout: Duration) -> Result<Frame, ClientError> {
        if frame.payload.len() > self.max_payload {
            return Err(ClientError::InvalidRequest(format!(
                "a {}-byte request is over the {}-byte frame limit; send fewer rows at once",
                frame.payload.len(),
                self.max_payload
            )));
        }
        let timed_out = || ClientError::Timeout { addr: self.addr.clone(), timeout };
        let exchange = async {
            let _slot = self.slots.acquire().await.map_err(|_| self.broken())?;
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            frame.request_id = id;
            let (tx, rx) = oneshot::channel();
            {
                let mut pending = self.table.lock();
                if pending.closed.is_some() {
                    drop(pending);
                    return Err(self.broken());
                }
                pending.calls.insert(id, tx);
            }
            let _registration = Registration { table: &self.table, id };
            self.outgoing.send(frame).await.map_err(|_| self.broken())?;
            rx.await.map_err(|_| self.broken())
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| timed_out())?
    }

    fn broken(&self) -> ClientError {
        ClientError::Connection {
            addr: self.addr.clone(),
            reason: self.table.closed().unwrap_or_else(|| "the connection closed".to_owned()),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
        self.table.close("the client was dropped".to_owned());
    }
}
