//! Failure detection from heartbeat answers, as a pure function of time.
//!
//! A server is alive while its last heartbeat answer is younger than `interval × misses`.
//! A server not heard from since the coordinator started gets that much grace from the
//! start, so a restarted coordinator does not declare the whole cluster dead at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Tracks the last heartbeat answer of every server.
#[derive(Debug, Clone)]
pub struct FailureDetector {
    timeout: Duration,
    started: Instant,
    last_ok: HashMap<String, Instant>,
}

impl FailureDetector {
    /// A detector that calls a server dead after `timeout` without an answer.
    pub fn new(timeout: Duration, now: Instant) -> FailureDetector {
        FailureDetector { timeout, started: now, last_ok: HashMap::new() }
    }

    /// Records an answer from `server` at `now`.
    pub fn heard(&mut self, server: &str, now: Instant) {
        self.last_ok.insert(server.to_owned(), now);
    }

    /// Forgets a server (removed from the cluster).
    pub fn forget(&mut self, server: &str) {
        self.last_ok.remove(server);
    }

    /// Whether `server` counts as alive at `now`.
    pub fn alive(&self, server: &str, now: Instant) -> bool {
        let since = self.last_ok.get(server).copied().unwrap_or(self.started);
        now.saturating_duration_since(since) < self.timeout
    }

    /// Whether `server` has answered at least once.
    pub fn ever_heard(&self, server: &str) -> bool {
        self.last_ok.contains_key(server)
    }

    /// How long since `server` last answered, if it ever did.
    pub fn age(&self, server: &str, now: Instant) -> Option<Duration> {
        self.last_ok.get(server).map(|t| now.saturating_duration_since(*t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_after_the_timeout_alive_again_on_an_answer() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = FailureDetector::new(ms(300), t0);
        assert!(d.alive("a", t0 + ms(299)), "grace from the start");
        assert!(!d.alive("a", t0 + ms(300)));
        d.heard("a", t0 + ms(400));
        assert!(d.alive("a", t0 + ms(699)) && !d.alive("a", t0 + ms(700)));
        assert_eq!(d.age("a", t0 + ms(500)), Some(ms(100)));
        d.forget("a");
        assert!(!d.ever_heard("a"));
    }
}
