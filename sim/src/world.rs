//! The simulated world: one event queue, virtual time, and a network between actors.
//!
//! Every actor (storage node, coordinator, client) lives in this one process and reacts
//! to events popped in (time, sequence) order, so a run is a pure function of its seed.
//! The network delays, drops, duplicates and reorders messages and honours partitions
//! (one-way ones too); a paused node keeps what arrives and handles it when it wakes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use shardline_protocol::{
    Consistency, ControlRequest, ControlResponse, ErrorCode, LogPosition, Operation, PeerRequest, PeerResponse, Row,
    ShardId,
};
use shardline_storage_node::replica::Link;

use crate::rng::Rng;

/// Simulated nanoseconds since the run began.
pub type Nanos = u64;

/// A millisecond in [`Nanos`].
pub const MS: Nanos = 1_000_000;

/// Who sends and receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Addr {
    /// Storage node number `n` (server name `N<n>`).
    Node(usize),
    /// The coordinator.
    Coord,
    /// Client number `n`.
    Client(u32),
}

/// What a client asks a node.
#[derive(Debug, Clone)]
pub enum ClientRequest {
    /// A write (insert, update or delete) with its (client, seq).
    Write(Operation),
    /// A read of one key at a consistency level.
    Read {
        /// The key.
        key: i64,
        /// How fresh the answer must be.
        level: Consistency,
    },
}

/// A node's answer to a client.
#[derive(Debug, Clone)]
pub enum ClientAnswer {
    /// The write committed at (term, index) on the shard.
    Committed {
        /// The shard.
        shard: ShardId,
        /// The entry's term.
        term: u64,
        /// The entry's index.
        index: u64,
        /// Rows it wrote (0: a retry answered from what an earlier attempt committed).
        rows: u64,
    },
    /// The rows read, and the shard's applied index they were read at.
    Rows {
        /// The rows.
        rows: Vec<Row>,
        /// The term and applied index of the view read.
        at: LogPosition,
    },
}

/// A message on the simulated network.
#[derive(Debug, Clone)]
pub enum Msg {
    /// Client to node.
    Client {
        /// The attempt's number.
        id: u64,
        /// The shard the client routed it to (as the balancer stamps the frame's route).
        shard: ShardId,
        /// What is asked.
        request: ClientRequest,
    },
    /// Node to client.
    ClientAnswer {
        /// The attempt answered.
        id: u64,
        /// The answer.
        answer: Result<ClientAnswer, ErrorCode>,
    },
    /// Coordinator to node.
    Control {
        /// The call's number.
        id: u64,
        /// The request.
        request: ControlRequest,
    },
    /// Node to coordinator.
    ControlAnswer {
        /// The call answered.
        id: u64,
        /// The answer.
        response: ControlResponse,
    },
    /// Primary to follower.
    Peer {
        /// The replica core's name for the message.
        link: Link,
        /// The shard.
        shard: ShardId,
        /// The request.
        request: PeerRequest,
    },
    /// Follower to primary.
    PeerAnswer {
        /// The message answered.
        link: Link,
        /// The shard.
        shard: ShardId,
        /// The answer.
        response: PeerResponse,
    },
}

/// Something that happens at a moment of simulated time.
#[derive(Debug, Clone)]
pub enum Event {
    /// A message arrives.
    Deliver {
        /// The sender.
        from: Addr,
        /// The receiver.
        to: Addr,
        /// The message.
        msg: Msg,
    },
    /// A node's periodic tick.
    NodeTick(usize),
    /// A node's shard tasks take the appends that queued up, each shard's as one group.
    FlushAppends(usize),
    /// The coordinator's heartbeat round.
    Heartbeat,
    /// The coordinator's reconcile round.
    Reconcile,
    /// The coordinator asked to be woken now.
    Wake,
    /// A client starts its next operation (or retries the current one).
    ClientStep(u32),
    /// A client's attempt `attempt` got no answer in time.
    ClientTimeout {
        /// The client.
        client: u32,
        /// The attempt.
        attempt: u64,
    },
    /// A scheduled fault (or its end).
    Fault(crate::faults::Fault),
}

impl Event {
    /// A small number naming the kind of event, for the trace hash.
    fn code(&self) -> u64 {
        match self {
            Event::Deliver { msg, .. } => match msg {
                Msg::Client { .. } => 1,
                Msg::ClientAnswer { .. } => 2,
                Msg::Control { .. } => 3,
                Msg::ControlAnswer { .. } => 4,
                Msg::Peer { .. } => 5,
                Msg::PeerAnswer { .. } => 6,
            },
            Event::NodeTick(n) => 20 + *n as u64,
            Event::FlushAppends(n) => 60 + *n as u64,
            Event::Heartbeat => 7,
            Event::Reconcile => 8,
            Event::Wake => 11,
            Event::ClientStep(c) => 100 + u64::from(*c),
            Event::ClientTimeout { client, .. } => 200 + u64::from(*client),
            Event::Fault(_) => 9,
        }
    }
}

/// Network behaviour, chosen by the seed.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Probability a message is lost.
    pub loss: f64,
    /// Probability a message is delivered twice.
    pub duplicate: f64,
    /// Smallest delay.
    pub min_delay: Nanos,
    /// Largest delay (reordering comes from the spread).
    pub max_delay: Nanos,
}

/// The event queue, the clock, chance and the network's state.
#[derive(Debug)]
pub struct World {
    /// The current simulated time.
    pub now: Nanos,
    /// The run's random numbers.
    pub rng: Rng,
    /// Network behaviour.
    pub net: NetConfig,
    /// Directed links that drop everything: (from, to).
    pub cut: BTreeSet<(Addr, Addr)>,
    /// Nodes whose incoming links from other nodes are slow: each message waits up to this
    /// much longer, so messages overtake each other.
    pub slow: BTreeMap<Addr, Nanos>,
    /// Nodes that get a second, late copy of every message from another node, up to this
    /// much later (a connection given up on that still delivers after its replacement).
    pub late: BTreeMap<Addr, Nanos>,
    queue: BinaryHeap<Reverse<(Nanos, u64, usize)>>,
    events: Vec<Option<Event>>,
    free: Vec<usize>,
    seq: u64,
    /// A hash of every event handled, in order: equal seeds give equal hashes.
    pub trace_hash: u64,
    /// Events handled so far.
    pub handled: u64,
    /// Print every event (replay mode).
    pub verbose: bool,
}

impl World {
    /// An empty world at time zero.
    pub fn new(seed: u64, net: NetConfig) -> World {
        World {
            now: 0,
            rng: Rng::new(seed),
            net,
            cut: BTreeSet::new(),
            slow: BTreeMap::new(),
            late: BTreeMap::new(),
            queue: BinaryHeap::new(),
            events: Vec::new(),
            free: Vec::new(),
            seq: 0,
            trace_hash: 0xcbf2_9ce4_8422_2325,
            handled: 0,
            verbose: false,
        }
    }

    /// Schedules `event` after `delay`.
    pub fn after(&mut self, delay: Nanos, event: Event) {
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(i) => {
                self.events[i] = Some(event);
                i
            }
            None => {
                self.events.push(Some(event));
                self.events.len() - 1
            }
        };
        self.queue.push(Reverse((self.now + delay, self.seq, slot)));
    }

    /// The next event, advancing the clock to it; `None` past `until` or when idle.
    pub fn pop(&mut self, until: Nanos) -> Option<Event> {
        let Reverse((at, _, _)) = *self.queue.peek()?;
        if at > until {
            return None;
        }
        let Reverse((at, seq, slot)) = self.queue.pop().expect("peeked");
        self.now = at;
        let event = self.events[slot].take().expect("a scheduled event");
        self.free.push(slot);
        for word in [at, seq, event.code()] {
            self.trace_hash = (self.trace_hash ^ word).wrapping_mul(0x0100_0000_01b3);
        }
        self.handled += 1;
        if self.verbose {
            eprintln!("{:>10.3}ms {event:?}", at as f64 / MS as f64);
        }
        Some(event)
    }

    /// Sends a message through the network: maybe lost, maybe twice, after a delay.
    /// Messages to and from clients are never lost or duplicated (TCP retransmits and
    /// deduplicates); they are only delayed, or cut by a partition.
    pub fn send(&mut self, from: Addr, to: Addr, msg: Msg) {
        let client = matches!(from, Addr::Client(_)) || matches!(to, Addr::Client(_));
        if self.cut.contains(&(from, to)) || (!client && self.rng.chance(self.net.loss)) {
            return;
        }
        let late = if matches!(from, Addr::Node(_)) { self.late.get(&to).copied().unwrap_or(0) } else { 0 };
        if late > 0 {
            let delay = self.rng.range(self.net.min_delay, late + 1);
            self.after(delay, Event::Deliver { from, to, msg: msg.clone() });
        }
        let copies = if !client && self.rng.chance(self.net.duplicate) { 2 } else { 1 };
        let slow = if matches!(from, Addr::Node(_)) { self.slow.get(&to).copied().unwrap_or(0) } else { 0 };
        for _ in 0..copies {
            let mut delay = self.rng.range(self.net.min_delay, self.net.max_delay + 1);
            if slow > 0 {
                delay += self.rng.range(0, slow + 1);
            }
            self.after(delay, Event::Deliver { from, to, msg: msg.clone() });
        }
    }
}
