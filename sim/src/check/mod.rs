//! The checkers run at the end of every simulated history, and the [`Violation`] they report.
//!
//! - [`linearizable`] / [`linearizable_with_final`]: each key's operations, and the replicas'
//!   final table, admit one sequential order that respects real time (no acknowledged
//!   write lost, no stale read).
//! - [`refused_absent`]: no value written only by a refused operation is ever seen.
//! - [`unique_values`]: the simulator kept its promise that written values are unique.
//! - [`one_primary_per_term`], [`leases_disjoint`]: leadership is exclusive.
//! - [`logs_converge`], [`tables_converge`]: replicas agree on the committed log and the table.
//! - [`applied_once`]: no write, however often retried, was committed twice.
//! - [`reads_committed`], [`session_monotonic`], [`bounded_fresh`]: reads at the `any`,
//!   `session` and `bounded` levels keep those levels' promises (see `levels.rs`).
//!
//! Every checker returns the first violation it finds; its `Display` names the checker,
//! the key (or shard, or index) and the operations or replicas involved.

mod convergence;
mod leadership;
mod levels;
mod linearizable;
mod once;
mod refused;
mod search;

use std::fmt;

use crate::history::{Key, LevelRead, Op, Time, Value};

pub use convergence::{logs_converge, tables_converge, EntryId};
pub use leadership::{leases_disjoint, one_primary_per_term};
pub use levels::{bounded_fresh, reads_committed, session_monotonic, CommittedLog};
pub use linearizable::{linearizable, linearizable_bounded, linearizable_with_final, DEFAULT_STATE_LIMIT};
pub use once::{applied_once, FreshCommit};
pub use refused::{refused_absent, unique_values};

/// One replica's view of a log slot, as reported in a [`Violation::LogsDiverge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The replica holding it.
    pub replica: String,
    /// The term of the entry there.
    pub term: u64,
    /// The entry's checksum.
    pub crc: u32,
}

/// One lease a replica held, as reported in a [`Violation::LeasesOverlap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The term it was granted in.
    pub term: u64,
    /// The replica holding it.
    pub replica: String,
    /// First instant held.
    pub from: Time,
    /// First instant no longer held (leases are half-open: `[from, until)`).
    pub until: Time,
}

/// What a checker found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// The checker's input breaks its own rules (an op completing before it was invoked,
    /// a read with a write's outcome, a log with a gap...): the simulator is at fault.
    Malformed {
        /// Which checker refused the input.
        checker: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// A key's operations admit no linearization.
    NotLinearizable {
        /// The key.
        key: Key,
        /// How many of the key's required operations the deepest attempt placed in order.
        linearized: usize,
        /// How many operations had to be placed (acknowledged, read, precondition failed).
        required: usize,
        /// The key's state after that deepest attempt, in words.
        state: String,
        /// The operations that could have come next there (no order continues from it).
        stuck: Vec<Op>,
        /// The replicas' final value, if the final read is among those next in line.
        final_value: Option<Option<Value>>,
    },
    /// A read, or the final state, returned a value that no operation on the key that could
    /// take effect (acknowledged or unknown) wrote.
    ValueFromNowhere {
        /// The key.
        key: Key,
        /// The value.
        value: Value,
        /// The read that returned it; `None` if it is in the final state.
        read: Option<Box<Op>>,
    },
    /// The linearizability search gave up: this is not a pass.
    SearchLimit {
        /// The key.
        key: Key,
        /// How many of the key's operations were searched.
        ops: usize,
        /// The number of search states explored when it stopped.
        states: usize,
    },
    /// A value that only a refused operation wrote was seen.
    RefusedObserved {
        /// The key.
        key: Key,
        /// The value.
        value: Value,
        /// The refused write.
        refused: Box<Op>,
        /// The read that returned it; `None` if it is in the final state.
        seen_by: Option<Box<Op>>,
    },
    /// One write (client, sequence) was freshly committed at two log positions.
    AppliedTwice {
        /// Its first commit.
        first: FreshCommit,
        /// Another one.
        second: FreshCommit,
    },
    /// Two writes carry the same value, so seeing it proves nothing.
    DuplicateValue {
        /// The value.
        value: Value,
        /// The first write of it.
        first: Box<Op>,
        /// Another write of it.
        second: Box<Op>,
    },
    /// Two replicas acknowledged writes for one shard in one term.
    TwoPrimaries {
        /// The shard.
        shard: u32,
        /// The term.
        term: u64,
        /// The replica seen acknowledging first.
        first: String,
        /// Another replica acknowledging in the same term.
        second: String,
    },
    /// Two replicas of a shard held a lease at the same instant.
    LeasesOverlap {
        /// The shard.
        shard: u32,
        /// The lease that started first.
        first: Lease,
        /// A lease of another replica that started before `first` ended.
        second: Lease,
    },
    /// Two replicas hold different entries at a committed index.
    LogsDiverge {
        /// The lowest committed index where they differ.
        index: u64,
        /// One replica's entry.
        first: Slot,
        /// Another replica's entry.
        second: Slot,
    },
    /// A read at a level broke that level's promise.
    StaleRead {
        /// Which checker caught it.
        checker: &'static str,
        /// The read.
        read: Box<LevelRead>,
        /// What it should have seen.
        detail: String,
    },
    /// Two replicas' tables differ.
    TablesDiverge {
        /// The lowest key where they differ.
        key: Key,
        /// The first replica.
        first: String,
        /// Its value for the key.
        first_value: Option<Value>,
        /// The replica that differs from it.
        second: String,
        /// Its value for the key.
        second_value: Option<Value>,
    },
}

/// A value or "absent", for messages.
fn show(value: Option<Value>) -> String {
    value.map_or_else(|| "absent".to_string(), |v| v.to_string())
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Malformed { checker, detail } => write!(f, "{checker}: malformed input: {detail}"),
            Violation::NotLinearizable { key, linearized, required, state, stuck, final_value } => {
                write!(
                    f,
                    "linearizable: key {key} has no linearization; the deepest attempt ordered \
                     {linearized} of {required} required ops, leaving the key {state}, with these ops next in line:"
                )?;
                for op in stuck {
                    write!(f, "\n  {op}")?;
                }
                if let Some(value) = final_value {
                    write!(f, "\n  final state of the replicas: {}", show(*value))?;
                }
                Ok(())
            }
            Violation::ValueFromNowhere { key, value, read } => {
                write!(f, "linearizable: key {key}: value {value}, which no acknowledged or unknown write wrote, ")?;
                match read {
                    Some(op) => write!(f, "was read by {op}"),
                    None => f.write_str("is in the final state"),
                }
            }
            Violation::SearchLimit { key, ops, states } => {
                write!(f, "linearizable: key {key}: search gave up after {states} states over {ops} ops (not a pass)")
            }
            Violation::RefusedObserved { key, value, refused, seen_by } => {
                write!(f, "refused_absent: key {key}: value {value} written only by refused op ({refused}) ")?;
                match seen_by {
                    Some(op) => write!(f, "was read by {op}"),
                    None => f.write_str("is in the final state"),
                }
            }
            Violation::AppliedTwice { first, second } => write!(
                f,
                "applied_once: client {} seq {} was committed at shard {} term {} index {} and again at term {} \
                 index {}",
                first.client, first.seq, first.shard, first.term, first.index, second.term, second.index
            ),
            Violation::DuplicateValue { value, first, second } => {
                write!(f, "unique_values: value {value} written twice: {first}; {second}")
            }
            Violation::TwoPrimaries { shard, term, first, second } => write!(
                f,
                "one_primary_per_term: shard {shard} term {term}: both {first} and {second} acknowledged writes"
            ),
            Violation::LeasesOverlap { shard, first, second } => write!(
                f,
                "leases_disjoint: shard {shard}: {} (term {}) held [{}..{}) and {} (term {}) held [{}..{})",
                first.replica,
                first.term,
                first.from,
                first.until,
                second.replica,
                second.term,
                second.from,
                second.until
            ),
            Violation::LogsDiverge { index, first, second } => write!(
                f,
                "logs_converge: index {index}: {} has term {} crc {:#010x}, {} has term {} crc {:#010x}",
                first.replica, first.term, first.crc, second.replica, second.term, second.crc
            ),
            Violation::StaleRead { checker, read, detail } => write!(f, "{checker}: {read}: {detail}"),
            Violation::TablesDiverge { key, first, first_value, second, second_value } => write!(
                f,
                "tables_converge: key {key}: {first} has {}, {second} has {}",
                show(*first_value),
                show(*second_value)
            ),
        }
    }
}

impl std::error::Error for Violation {}
