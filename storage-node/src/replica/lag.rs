//! How far behind each follower is, as its primary sees it: in entries, and in time since
//! the oldest entry it lacks was logged (what an operator means by replication lag).
//!
//! The primary keeps one mark (last index, time) per log append, not per entry, and drops
//! the marks every follower has passed; past [`MAX_MARKS`] the oldest go, and a follower
//! behind all that remain is reported as behind since the oldest kept (a lower bound).

use std::collections::VecDeque;
use std::time::Duration;

use super::Time;

/// Most append marks kept.
pub const MAX_MARKS: usize = 4096;

/// One follower's lag, as its primary sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerLag {
    /// The follower's server name.
    pub follower: String,
    /// Whether it votes (a learner still catching up does not).
    pub voter: bool,
    /// Entries the primary has logged that the follower does not durably hold.
    pub entries: u64,
    /// How long ago the oldest of those entries was logged; zero when it holds them all.
    pub behind: Duration,
}

/// When recent appends were logged.
#[derive(Debug, Default)]
pub(super) struct AppendTimes {
    marks: VecDeque<(u64, Time)>,
}

impl AppendTimes {
    /// The log now ends at `last`, logged at `now`; every follower holds `held` already.
    pub(super) fn logged(&mut self, last: u64, now: Time, held: u64) {
        while self.marks.front().is_some_and(|(i, _)| *i <= held) {
            self.marks.pop_front();
        }
        self.marks.push_back((last, now));
        if self.marks.len() > MAX_MARKS {
            self.marks.pop_front();
        }
    }

    /// How long a follower that durably holds up to `durable` has lacked an entry, at `now`.
    pub(super) fn behind(&self, durable: u64, now: Time) -> Duration {
        let first_lacking = self.marks.iter().find(|(i, _)| *i > durable).or(self.marks.front());
        match first_lacking {
            Some((last, at)) if *last > durable => now.saturating_sub(*at),
            _ => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn lag_is_the_age_of_the_oldest_entry_a_follower_lacks() {
        let mut t = AppendTimes::default();
        t.logged(1, 10 * MS, 0);
        t.logged(5, 20 * MS, 0);
        t.logged(9, 30 * MS, 0);
        assert_eq!(t.behind(0, 100 * MS), 90 * MS);
        assert_eq!(t.behind(1, 100 * MS), 80 * MS, "entries 2..=5 were logged at 20 ms");
        assert_eq!(t.behind(4, 100 * MS), 80 * MS);
        assert_eq!(t.behind(5, 100 * MS), 70 * MS);
        assert_eq!(t.behind(9, 100 * MS), Duration::ZERO);
    }

    #[test]
    fn marks_every_follower_passed_are_dropped_and_the_rest_bounded() {
        let mut t = AppendTimes::default();
        t.logged(1, 10 * MS, 0);
        t.logged(2, 20 * MS, 0);
        t.logged(3, 30 * MS, 2);
        assert_eq!(t.marks.len(), 1);
        for i in 0..(MAX_MARKS as u64 + 10) {
            t.logged(4 + i, 40 * MS, 0);
        }
        assert_eq!(t.marks.len(), MAX_MARKS);
        // Behind every kept mark: counted from the oldest kept, a lower bound.
        assert_eq!(t.behind(0, 50 * MS), 10 * MS);
    }
}
