//! The balancer's own counters, answered to `STATS`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Instant;

/// Counters, all atomics; the per-server read map takes a shared lock per read (an
/// exclusive one only the first time a server is seen).
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    requests: AtomicU64,
    retries: AtomicU64,
    errors: AtomicU64,
    refreshes: AtomicU64,
    reads: RwLock<BTreeMap<String, AtomicU64>>,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            started: Instant::now(),
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
            reads: RwLock::new(BTreeMap::new()),
        }
    }
}

impl Stats {
    /// Counts a client request.
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a retry of one part of a request.
    pub fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request answered with an error.
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a topology fetch from the coordinator.
    pub fn refresh(&self) {
        self.refreshes.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a shard read served by `server`.
    pub fn read_on(&self, server: &str) {
        if let Some(n) = self.reads.read().expect("stats lock").get(server) {
            n.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut reads = self.reads.write().expect("stats lock");
        reads.entry(server.to_owned()).or_insert_with(|| AtomicU64::new(0)).fetch_add(1, Ordering::Relaxed);
    }

    /// Retries so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Topology fetches so far.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// Reads served per server so far.
    pub fn reads(&self) -> BTreeMap<String, u64> {
        let reads = self.reads.read().expect("stats lock");
        reads.iter().map(|(server, n)| (server.clone(), n.load(Ordering::Relaxed))).collect()
    }

    /// Name/value pairs in a stable order.
    pub fn snapshot(&self) -> Vec<(String, String)> {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed).to_string();
        let mut out = vec![
            ("pid".to_owned(), std::process::id().to_string()),
            ("uptime_s".to_owned(), self.started.elapsed().as_secs().to_string()),
            ("requests".to_owned(), n(&self.requests)),
            ("retries".to_owned(), n(&self.retries)),
            ("errors".to_owned(), n(&self.errors)),
            ("topology_refreshes".to_owned(), n(&self.refreshes)),
        ];
        for (server, count) in self.reads() {
            out.push((format!("reads.{server}"), count.to_string()));
        }
        out
    }
}
