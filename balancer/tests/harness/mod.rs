//! The balancer's test harness: in-process storage nodes, a fake coordinator, a balancer.
//!
//! - [`node`]: a storage node in its own tokio runtime on a `127.0.0.1:0` listener, so a
//!   test can kill it outright (the runtime is shut down: its listener, connections and
//!   shard tasks all vanish at once, as in a crash).
//! - [`coordinator`]: a fake coordinator serving a topology the test controls: it answers
//!   `SubscribeTopology` and pushes each change, `GetTopology` and `Status`.
//! - [`Cluster`]: nodes + coordinator + balancer, shards configured and roles assigned the
//!   way the coordinator would.
//!
//! Every wait has a deadline and every loop a bounded count ([`Budget`]); nothing waits on
//! a fixed sleep.

// Each test binary uses part of the harness.
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod coordinator;
pub mod node;

pub use cluster::{Cluster, Layout};

use std::future::Future;
use std::time::{Duration, Instant};

/// Runs `f`, panicking if it takes longer than `limit`.
pub async fn within<F: Future>(limit: Duration, what: &str, f: F) -> F::Output {
    match tokio::time::timeout(limit, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: did not finish within {limit:?}"),
    }
}

/// A polling budget: bounded in wall time and in attempts.
pub struct Budget {
    what: String,
    until: Instant,
    attempts: u32,
    max_attempts: u32,
    interval: Duration,
}

impl Budget {
    /// At most `within` of time, polled every 20 ms.
    pub fn new(what: impl Into<String>, within: Duration) -> Budget {
        let interval = Duration::from_millis(20);
        Budget {
            what: what.into(),
            until: Instant::now() + within,
            attempts: 0,
            max_attempts: (within.as_millis() / interval.as_millis()).max(1) as u32 + 1,
            interval,
        }
    }

    /// Pauses one interval and says whether another attempt is allowed.
    pub async fn retry(&mut self) -> bool {
        self.attempts += 1;
        if self.attempts >= self.max_attempts || Instant::now() >= self.until {
            return false;
        }
        tokio::time::sleep(self.interval).await;
        true
    }

    /// What was waited for and how many attempts it took.
    pub fn spent(&self) -> String {
        format!("{} after {} attempts", self.what, self.attempts)
    }
}
