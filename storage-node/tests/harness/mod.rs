//! The process-level test harness: real `shardline-node` processes on 127.0.0.1, and the
//! test playing the coordinator.
//!
//! - [`node`]: one child process with its own port and temporary data dir, killed by pid
//!   (also when a test panics), stopped and continued with SIGSTOP / SIGCONT, restarted on
//!   the same port and data dir, or wiped and restarted empty.
//! - [`client`]: a framed client whose every await has a deadline.
//! - [`cluster`]: a set of nodes holding one shard (shard 1, keys `[0, 4096)`, the seed
//!   schema), with the coordinator's moves: configure, promote, follow.
//! - [`election`]: the coordinator's election at a new term, played by the test.
//! - [`converge`]: wait until the replicas hold the primary's rows; compare logs.
//! - [`ledger`]: every write a test sent and how it ended, and the checks the fault tests
//!   share: no acknowledged write lost, no refused write present, no half-applied batch.
//! - [`segment`]: the on-disk log segments, parsed record by record, to damage one.
//!
//! ```ignore
//! let mut cluster = Cluster::start(3, NodeOpts::default()).await;
//! within(Duration::from_secs(60), "scenario", async {
//!     cluster.setup_shard(0, 1).await;
//!     let mut ledger = Ledger::new(7);
//!     assert!(ledger.write(&cluster, 0, &[1]).await.is_acked());
//! })
//! .await;
//! ```
//!
//! Every loop is bounded in time and in count ([`Budget`]); no readiness is assumed from a
//! fixed sleep. When a test panics, [`cluster::Cluster`]'s `Drop` prints the tail of every
//! node's stderr before the processes are killed.

// Each test binary uses part of the harness.
#![allow(dead_code, unused_imports)]

pub mod client;
pub mod cluster;
pub mod converge;
pub mod election;
pub mod ledger;
pub mod node;
pub mod segment;

pub use client::{call_once, CallError, Conn};
pub use cluster::{Cluster, ReadError, CALL_TIMEOUT, LEASE_MS, SHARD};
pub use ledger::{classify, row_for, Ledger, Outcome};
pub use node::{NodeOpts, NodeProc};

use std::future::Future;
use std::time::{Duration, Instant};

/// Runs `f` and panics if it takes longer than `limit`: every test's overall timeout.
///
/// Call it with the cluster owned by the caller, so that a timeout panics while the nodes
/// are still alive and their stderr tails get printed.
pub async fn within<F: Future>(limit: Duration, what: &str, f: F) -> F::Output {
    match tokio::time::timeout(limit, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: did not finish within {limit:?}"),
    }
}

/// A polling budget: at most `within` of wall time and a bounded number of attempts.
#[derive(Debug)]
pub struct Budget {
    what: String,
    started: Instant,
    deadline: Instant,
    interval: Duration,
    attempts: u32,
    max_attempts: u32,
}

impl Budget {
    /// A budget polling every 50 ms for at most `within`.
    pub fn new(what: impl Into<String>, within: Duration) -> Budget {
        Budget::every(what, within, Duration::from_millis(50))
    }

    /// A budget polling every `interval` for at most `within`.
    pub fn every(what: impl Into<String>, within: Duration, interval: Duration) -> Budget {
        let now = Instant::now();
        let max_attempts = (within.as_millis() / interval.as_millis().max(1)) as u32 + 2;
        Budget { what: what.into(), started: now, deadline: now + within, interval, attempts: 0, max_attempts }
    }

    /// Counts an attempt that did not succeed and sleeps before the next one; `false` when
    /// the budget is spent (then stop and report).
    pub async fn retry(&mut self) -> bool {
        self.attempts += 1;
        if self.attempts >= self.max_attempts || Instant::now() + self.interval > self.deadline {
            return false;
        }
        tokio::time::sleep(self.interval).await;
        true
    }

    /// Whether time and attempts remain, without sleeping.
    pub fn left(&self) -> bool {
        self.attempts < self.max_attempts && Instant::now() < self.deadline
    }

    /// A one-line account for failure messages.
    pub fn spent(&self) -> String {
        format!("{}: gave up after {} attempts in {:?}", self.what, self.attempts, self.started.elapsed())
    }
}
