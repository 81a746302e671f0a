//! Whether this coordinator may act now: always with the embedded store; with etcd, only
//! while it holds the leadership and its etcd lease has surely not run out.
//!
//! The elector (`crate::etcd::Elector`) renews [`Leadership`] with a deadline after every
//! answered lease keep-alive: the time the keep-alive was sent plus the lease's TTL, less
//! a margin, which is before etcd can expire the lease (etcd counts from when it got the
//! keep-alive, later). Every action the driver takes (a control call, a heartbeat, a
//! restart) checks the deadline against the monotonic clock first, so a coordinator that
//! was paused past its lease finds it lapsed the moment it wakes and does nothing, before
//! the elector has even run. Metadata changes are fenced a second time in etcd itself:
//! each save compares the leader key with this coordinator's.

use std::sync::Mutex;
use std::time::Instant;

/// This coordinator's right to act.
#[derive(Debug)]
pub struct Leadership {
    elected: bool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Acting until then (elected mode).
    until: Option<Instant>,
    /// Who leads, as the leader key says (for standbys' `NotLeader` answers).
    leader: Option<String>,
    /// How many times this process has taken the lead.
    terms: u64,
}

impl Leadership {
    /// The only coordinator (embedded store): always acting.
    pub fn sole() -> Leadership {
        Leadership { elected: false, state: Mutex::new(State::default()) }
    }

    /// One of several coordinators: acting only while renewed.
    pub fn elected() -> Leadership {
        Leadership { elected: true, state: Mutex::new(State::default()) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("leadership lock")
    }

    /// Whether leadership is decided by an election (etcd) rather than given.
    pub fn is_elected(&self) -> bool {
        self.elected
    }

    /// Whether this coordinator may act at `now`.
    pub fn acting(&self, now: Instant) -> bool {
        !self.elected || self.state().until.is_some_and(|until| now < until)
    }

    /// Took the lead, acting until `until`; `me` is its address.
    pub fn won(&self, until: Instant, me: &str) {
        let mut s = self.state();
        s.until = Some(until);
        s.leader = Some(me.to_owned());
        s.terms += 1;
    }

    /// Still leading: acting until `until` (never moved back).
    pub fn renew(&self, until: Instant) {
        let mut s = self.state();
        if let Some(held) = s.until.as_mut() {
            *held = (*held).max(until);
        }
    }

    /// Lost the lead (or never had it): acting no more.
    pub fn lose(&self) {
        self.state().until = None;
    }

    /// Another coordinator leads, at `leader` (its address), if known.
    pub fn follow(&self, leader: Option<String>) {
        self.state().leader = leader;
    }

    /// The leader's address, as last seen.
    pub fn leader(&self) -> Option<String> {
        self.state().leader.clone()
    }

    /// How many times this process has taken the lead.
    pub fn terms(&self) -> u64 {
        self.state().terms
    }

    /// `sole`, `leader` or `standby`, for STATS.
    pub fn role(&self, now: Instant) -> &'static str {
        match (self.elected, self.acting(now)) {
            (false, _) => "sole",
            (true, true) => "leader",
            (true, false) => "standby",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_elected_coordinator_acts_only_until_its_deadline() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let l = Leadership::elected();
        assert!(!l.acting(t0), "a standby does not act");
        l.won(t0 + ms(900), "127.0.0.1:1");
        assert!(l.acting(t0 + ms(899)));
        assert!(!l.acting(t0 + ms(900)), "a lapsed deadline stops it, renewed or not");
        l.renew(t0 + ms(500));
        assert!(l.acting(t0 + ms(899)), "a renewal never moves the deadline back");
        l.lose();
        assert!(!l.acting(t0));
        assert_eq!(l.role(t0), "standby");
        assert!(Leadership::sole().acting(t0 + ms(1_000_000)));
    }
}
