//! A few multiplexed connections per peer, opened lazily and replaced when they die.
//!
//! Calls to a peer rotate over its `size` slots; finding an open connection takes two short
//! locks and no waiting. A slot whose connection has closed is reconnected by the next call
//! that lands on it (one connect at a time per slot). A
//! failed connect is remembered for [`FAIL_FAST`]: calls landing on that slot meanwhile
//! fail at once instead of queueing behind more connect attempts, which is what the
//! retry layer wants from a dead node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shardline_protocol::Frame;
use tokio::sync::Mutex as AsyncMutex;

use crate::error::CallError;
use shardline_protocol::net::Outgoing;
use shardline_protocol::net::{MuxConn, MAX_IN_FLIGHT};

/// How long a failed connect makes a slot fail calls without trying again.
pub const FAIL_FAST: Duration = Duration::from_millis(50);

#[derive(Debug, Default)]
enum State {
    #[default]
    Empty,
    Open(Arc<MuxConn>),
    Failed(Instant, CallError),
}

/// One connection place: its state, read without waiting, and a lock held only while
/// (re)connecting, so one connect at a time per slot.
#[derive(Debug, Default)]
struct Slot {
    state: Mutex<State>,
    connecting: AsyncMutex<()>,
}

impl Slot {
    /// The open connection, a recent failure, or `None`: connect.
    fn ready(&self) -> Option<Result<Arc<MuxConn>, CallError>> {
        match &*self.state.lock().expect("slot lock") {
            State::Open(conn) if conn.is_open() => Some(Ok(conn.clone())),
            State::Failed(at, e) if at.elapsed() < FAIL_FAST => Some(Err(e.clone())),
            _ => None,
        }
    }
}

/// Connections to every peer the balancer talks to, keyed by address.
#[derive(Debug)]
pub struct Pool {
    peers: Mutex<HashMap<Arc<str>, Arc<[Slot]>>>,
    size: usize,
    turn: AtomicUsize,
    connect_timeout: Duration,
    max_payload: usize,
    outgoing: Outgoing,
}

impl Pool {
    /// A pool of `size` connections per peer.
    pub fn new(size: usize, connect_timeout: Duration, max_payload: usize) -> Pool {
        Pool {
            peers: Mutex::new(HashMap::new()),
            size: size.max(1),
            turn: AtomicUsize::new(0),
            connect_timeout,
            max_payload,
            outgoing: Outgoing::default(),
        }
    }

    /// The same pool, opening every connection with `outgoing`'s TLS and credential.
    pub fn with_outgoing(mut self, outgoing: Outgoing) -> Pool {
        self.outgoing = outgoing;
        self
    }

    /// Sends `frame` to `addr` and waits up to `timeout` for its answer. The answer carries
    /// the pool's request id; the caller restores its own.
    pub async fn call(&self, addr: &Arc<str>, frame: Frame, timeout: Duration) -> Result<Frame, CallError> {
        let conn = self.conn(addr).await?;
        conn.call(frame, timeout).await
    }

    /// Calls in flight to `addr`, over all its connections (for tests and stats).
    pub fn in_flight(&self, addr: &str) -> usize {
        let slots = self.peers.lock().expect("pool lock").get(addr).cloned();
        slots.map_or(0, |slots| {
            slots
                .iter()
                .filter_map(|s| match &*s.state.lock().expect("slot lock") {
                    State::Open(c) => Some(c.in_flight()),
                    _ => None,
                })
                .sum()
        })
    }

    async fn conn(&self, addr: &Arc<str>) -> Result<Arc<MuxConn>, CallError> {
        let slots = {
            let mut peers = self.peers.lock().expect("pool lock");
            match peers.get(addr) {
                Some(slots) => slots.clone(),
                None => peers
                    .entry(addr.clone())
                    .or_insert_with(|| (0..self.size).map(|_| Slot::default()).collect())
                    .clone(),
            }
        };
        let turn = self.turn.fetch_add(1, Ordering::Relaxed) % slots.len();
        let slot = &slots[turn];
        if let Some(ready) = slot.ready() {
            return ready;
        }
        let _connecting = slot.connecting.lock().await;
        if let Some(ready) = slot.ready() {
            return ready;
        }
        *slot.state.lock().expect("slot lock") = State::Empty;
        let state = match MuxConn::connect_as(
            addr.clone(),
            self.connect_timeout,
            self.max_payload,
            MAX_IN_FLIGHT,
            &self.outgoing,
        )
        .await
        {
            Ok(conn) => State::Open(Arc::new(conn)),
            Err(e) => State::Failed(Instant::now(), e),
        };
        let result = match &state {
            State::Open(conn) => Ok(conn.clone()),
            State::Failed(_, e) => Err(e.clone()),
            State::Empty => unreachable!("just set"),
        };
        *slot.state.lock().expect("slot lock") = state;
        result
    }
}
