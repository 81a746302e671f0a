//! Shardline's deterministic cluster simulator.
//!
//! The real replica core (`shardline_storage_node::replica`) and the coordinator's decision
//! functions run on a simulated network, disk and clock, all in one process on one seeded
//! event queue: the same seed gives the same history, event for event. Faults are drawn
//! from the seed: message loss, delay, duplication and reordering; partitions (one-way
//! too, and an isolated primary that clients still reach); crashes that lose unsynced
//! writes or tear the last one; pauses; bit flips in stored log records; failed fsyncs and
//! writes; clock drift. At the end of every history the checkers run.
//!
//! - [`world`]: the event queue, virtual time and the network.
//! - [`node`]: a storage node: replica cores on a [`SimDisk`] and a [`MemTable`].
//! - [`coordinator`]: heartbeats, leases and elections from the coordinator's own functions.
//! - [`client`]: clients with the balancer's retry rules, recording the history.
//! - [`faults`]: the fault schedule and what each fault does (a scripted one arms a
//!   failpoint: the node dies at its n-th sync of a kind, as a real node aborts).
//! - [`run`]: one seeded history, start to checks. [`scenarios`]: named, scripted schedules.
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
//!
//! [`SimDisk`]: shardline_storage_node::disk::SimDisk
//! [`MemTable`]: shardline_storage_node::store::MemTable

pub mod check;
pub mod client;
pub mod coordinator;
pub mod faults;
pub mod history;
pub mod node;
pub mod rng;
pub mod run;
pub mod scenarios;
pub mod world;
