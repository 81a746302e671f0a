//! Shardline's deterministic cluster simulator: the history model and the checkers run at
//! the end of every simulated history.
//!
//! - [`history`]: what a run records: each client operation on a key, its invocation and
//!   completion in simulated time, and its outcome (acknowledged, read, refused, failed
//!   precondition, unknown).
//! - [`check`]: the invariants: per-key linearizability (with the replicas' final tables as a
//!   last read), refused writes absent, one primary per term, disjoint leases, converged logs
//!   and tables. Each returns the first [`check::Violation`], printable for a human.
//!
//! ```
//! use shardline_sim::check;
//! use shardline_sim::history::{History, Op, OpKind, Outcome};
//!
//! let mut history = History::new();
//! history.push(Op { client: 1, key: 7, kind: OpKind::Insert(10), invoke: 0, complete: 5, outcome: Outcome::Ok });
//! history.push(Op { client: 2, key: 7, kind: OpKind::Read, invoke: 6, complete: 9, outcome: Outcome::Read(None) });
//! // The read began after the insert was acknowledged, so it cannot miss it.
//! let violation = check::linearizable(&history).unwrap_err();
//! assert!(violation.to_string().contains("key 7"));
//! ```

#![warn(missing_docs)]

pub mod check;
pub mod history;
