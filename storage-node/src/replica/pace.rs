//! Pacing a snapshot to a rate, on the time the replica is given.
//!
//! After a chunk of `n` bytes leaves, the next may leave `n / rate` later: the chunks' start
//! times are spread so that, from the first chunk on, `bytes sent before the last chunk <=
//! rate × time elapsed`. A chunk that leaves late (the driver ticks every few
//! milliseconds) earns back at most [`SLACK`] of its lateness, so the average holds the
//! rate without bursting after a pause.

use std::time::Duration;

use super::Time;

/// How much of a late start the next chunks may make up.
pub const SLACK: Duration = Duration::from_millis(20);

/// Paces bytes to at most `rate` bytes a second (0: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacer {
    rate: u64,
    /// When the next chunk may leave; `None` before the first.
    next: Option<Time>,
}

impl Pacer {
    /// A pacer for `rate` bytes a second; 0 never holds anything back.
    pub fn new(rate: u64) -> Pacer {
        Pacer { rate, next: None }
    }

    /// Whether a chunk may leave at `now`.
    pub fn ready(&self, now: Time) -> bool {
        self.rate == 0 || self.next.is_none_or(|t| now >= t)
    }

    /// When the next chunk may leave, if it must wait past `now`.
    pub fn wait_until(&self, now: Time) -> Option<Time> {
        self.next.filter(|&t| self.rate > 0 && t > now)
    }

    /// A chunk of `bytes` left at `now`.
    pub fn sent(&mut self, now: Time, bytes: usize) {
        if self.rate == 0 {
            return;
        }
        let start = self.next.map_or(now, |next| next.max(now.saturating_sub(SLACK)));
        let nanos = (bytes as u128 * 1_000_000_000 / u128::from(self.rate)).min(u128::from(u64::MAX));
        self.next = Some(start + Duration::from_nanos(nanos as u64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn unlimited_never_waits() {
        let mut p = Pacer::new(0);
        p.sent(Duration::ZERO, 1 << 30);
        assert!(p.ready(Duration::ZERO) && p.wait_until(Duration::ZERO).is_none());
    }

    #[test]
    fn chunks_are_spread_by_their_bytes() {
        // 1,000 bytes a second: a chunk of 100 bytes holds the next back 100 ms.
        let mut p = Pacer::new(1000);
        assert!(p.ready(Duration::ZERO), "the first chunk goes at once");
        p.sent(Duration::ZERO, 100);
        assert!(!p.ready(99 * MS) && p.ready(100 * MS));
        assert_eq!(p.wait_until(50 * MS), Some(100 * MS));
        p.sent(105 * MS, 100);
        assert_eq!(p.wait_until(105 * MS), Some(200 * MS), "5 ms late is made up");
    }

    #[test]
    fn a_long_pause_earns_no_burst() {
        let mut p = Pacer::new(1000);
        p.sent(Duration::ZERO, 100);
        p.sent(Duration::from_secs(10), 100);
        assert_eq!(p.wait_until(Duration::from_secs(10)), Some(Duration::from_secs(10) + 80 * MS));
    }

    #[test]
    fn the_rate_holds_over_many_chunks_sent_as_soon_as_allowed() {
        // A driver ticking every 10 ms sends whenever the pacer allows: from the first
        // chunk to the last, the bytes before the last are at most rate × elapsed.
        let (rate, chunk) = (50_000u64, 1_234usize);
        let mut p = Pacer::new(rate);
        let (mut now, mut sent, mut first, mut last) = (Duration::ZERO, 0usize, None, Duration::ZERO);
        for _ in 0..100_000 {
            if sent >= 200 * chunk {
                break;
            }
            if p.ready(now) {
                first.get_or_insert(now);
                last = now;
                p.sent(now, chunk);
                sent += chunk;
            }
            now += 10 * MS;
        }
        let elapsed = (last - first.unwrap()).as_secs_f64();
        let before_last = (sent - chunk) as f64;
        assert!(before_last <= rate as f64 * elapsed + 1.0, "{before_last} bytes in {elapsed} s");
        assert!(before_last >= rate as f64 * elapsed * 0.9, "and close to it: {before_last} in {elapsed} s");
    }
}
