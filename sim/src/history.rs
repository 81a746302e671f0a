//! What a simulated run records: every client operation on a key, when it was invoked and
//! completed in simulated time, and how it ended.
//!
//! Each key is a register whose state is `Option<Value>` and which starts absent:
//! - `Insert(v)` needs the key absent and makes it `Some(v)`; if the key was present it fails
//!   with [`Outcome::PreconditionFailed`] (DuplicateKey) and changes nothing;
//! - `Update(v)` needs the key present and makes it `Some(v)` (else NotFound);
//! - `Delete` needs the key present and makes it absent (else NotFound);
//! - `Read` returns the state.
//!
//! How an operation ended says when it may have taken effect (see [`Outcome`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A record's key; each key is checked on its own.
pub type Key = i64;
/// A value stands for a row's contents; the simulator makes every written value unique.
pub type Value = u64;
/// Simulated time in nanoseconds.
pub type Time = u64;

/// What a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Create the key with this value; the key must be absent.
    Insert(Value),
    /// Replace the key's value; the key must be present.
    Update(Value),
    /// Remove the key; the key must be present.
    Delete,
    /// A linearizable (primary) read of the key (reads at other levels are [`LevelRead`]s).
    Read,
}

impl OpKind {
    /// The value this operation writes, if it writes one.
    pub fn written(&self) -> Option<Value> {
        match self {
            OpKind::Insert(v) | OpKind::Update(v) => Some(*v),
            OpKind::Delete | OpKind::Read => None,
        }
    }

    /// Whether the operation changes the key when it takes effect.
    pub fn is_write(&self) -> bool {
        !matches!(self, OpKind::Read)
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpKind::Insert(v) => write!(f, "insert {v}"),
            OpKind::Update(v) => write!(f, "update {v}"),
            OpKind::Delete => f.write_str("delete"),
            OpKind::Read => f.write_str("read"),
        }
    }
}

/// How an operation ended, from the client's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The write was acknowledged (committed): it took effect between invoke and complete.
    Ok,
    /// The read returned this (`None`: the key was absent).
    Read(Option<Value>),
    /// A definite refusal (NotPrimary, LeaseExpired, NoQuorum...): it must never take effect.
    Refused,
    /// DuplicateKey on an insert (the key was present) or NotFound on an update or delete
    /// (the key was absent): no effect, but the key's presence was observed.
    PreconditionFailed,
    /// Timeout or indeterminate: it may take effect at any point after invocation, or never.
    Unknown,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Read(Some(v)) => write!(f, "read {v}"),
            Outcome::Read(None) => f.write_str("read absent"),
            Outcome::Refused => f.write_str("refused"),
            Outcome::PreconditionFailed => f.write_str("precondition failed"),
            Outcome::Unknown => f.write_str("unknown"),
        }
    }
}

/// One client operation on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// The client that issued it; a client has at most one operation in flight.
    pub client: u32,
    /// The key it acts on.
    pub key: Key,
    /// What was asked.
    pub kind: OpKind,
    /// When the client sent it.
    pub invoke: Time,
    /// When the client learned the outcome (or gave up, for [`Outcome::Unknown`]).
    pub complete: Time,
    /// How it ended.
    pub outcome: Outcome,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client {} key {} {} -> {} [{}..{}]",
            self.client, self.key, self.kind, self.outcome, self.invoke, self.complete
        )
    }
}

/// The consistency level of a read that is not a primary read (those are [`OpKind::Read`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// Any serving replica: a committed state, arbitrarily old.
    Any,
    /// At most `max_lag_ms` old, and at most `max_lag_entries` behind the commit index
    /// of `max_lag_ms` ago.
    Bounded {
        /// Milliseconds.
        max_lag_ms: u64,
        /// Entries.
        max_lag_entries: u64,
    },
    /// At least what this client saw and wrote before.
    Session,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Level::Any => f.write_str("any"),
            Level::Bounded { max_lag_ms, max_lag_entries } => write!(f, "bounded {max_lag_ms} ms {max_lag_entries} e"),
            Level::Session => f.write_str("session"),
        }
    }
}

/// A read at a [`Level`] that returned: what it saw and the position it was served at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelRead {
    /// The client.
    pub client: u32,
    /// The key's shard.
    pub shard: u32,
    /// The key.
    pub key: Key,
    /// The level asked.
    pub level: Level,
    /// When the client sent it.
    pub invoke: Time,
    /// When it returned.
    pub complete: Time,
    /// What it returned.
    pub value: Option<Value>,
    /// The applied index the replica answered it at.
    pub at: u64,
}

impl fmt::Display for LevelRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client {} key {} {} read -> {} at index {} [{}..{}]",
            self.client,
            self.key,
            self.level,
            self.value.map_or_else(|| "absent".to_string(), |v| v.to_string()),
            self.at,
            self.invoke,
            self.complete
        )
    }
}

/// A write a client saw acknowledged, with the log position the acknowledgement named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// The client.
    pub client: u32,
    /// The shard.
    pub shard: u32,
    /// The key written.
    pub key: Key,
    /// The commit's log index.
    pub index: u64,
    /// When the client learned of it.
    pub complete: Time,
}

/// Every operation of a simulated run, in any order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The operations; the checkers do not rely on their order.
    pub ops: Vec<Op>,
    /// Reads at the other levels (not linearizable: the level checkers judge them).
    pub level_reads: Vec<LevelRead>,
    /// Acknowledged writes with their commit positions.
    pub acked: Vec<Acked>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one operation.
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// How many operations were recorded.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Every key some operation touched.
    pub fn keys(&self) -> BTreeSet<Key> {
        self.ops.iter().map(|op| op.key).collect()
    }

    /// The operations split by key, each key's in recorded order.
    pub fn by_key(&self) -> BTreeMap<Key, Vec<&Op>> {
        let mut keys: BTreeMap<Key, Vec<&Op>> = BTreeMap::new();
        for op in &self.ops {
            keys.entry(op.key).or_default().push(op);
        }
        keys
    }
}

impl FromIterator<Op> for History {
    fn from_iter<I: IntoIterator<Item = Op>>(iter: I) -> Self {
        History { ops: iter.into_iter().collect(), ..History::default() }
    }
}

impl Extend<Op> for History {
    fn extend<I: IntoIterator<Item = Op>>(&mut self, iter: I) {
        self.ops.extend(iter);
    }
}
