//! Load models: when each operation is meant to go out, whether it is measured, and what its
//! latency is. Pure: time comes in as an argument, so the accounting is tested without a
//! clock.
//!
//! - **Closed loop** (default): each worker sends its next operation as soon as the previous
//!   one is answered; latency is answer time − send time.
//! - **Open loop** (`--rate R`): operation *i* is due at `start + i / R`, whatever happened
//!   before. A worker sends it at that time, or at once if it is late, and its latency is
//!   answer time − *due* time. A stall that holds every worker up therefore shows in the
//!   latency of every operation that was due during it (no coordinated omission; wrk2's and
//!   YCSB's "intended" latency).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use shardline_benches::schedule::{LoadModel, Schedule};
//! use shardline_benches::spec::Stop;
//!
//! let t0 = Instant::now();
//! let s = Schedule::new(LoadModel::Open { rate: 100.0 }, t0, Duration::ZERO, Stop::Requests(10));
//! let ticket = s.next_at(t0).unwrap();
//! assert_eq!(ticket.due, Some(t0));
//! // The answer came 50 ms after the due time: that is its latency, however late it was sent.
//! assert_eq!(s.latency(&ticket, t0 + Duration::from_millis(40), t0 + Duration::from_millis(50)),
//!            Duration::from_millis(50));
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::spec::Stop;

/// How operations are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoadModel {
    /// Each worker sends as soon as its previous operation is answered.
    Closed,
    /// Operations are due at a fixed rate (per second), over all workers.
    Open {
        /// Operations per second.
        rate: f64,
    },
}

/// One operation a worker may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// When it is due (open loop); `None` in a closed loop: now.
    pub due: Option<Instant>,
    /// Whether it counts (past the warm-up).
    pub measured: bool,
}

/// The run's plan, shared by every worker.
#[derive(Debug)]
pub struct Schedule {
    model: LoadModel,
    start: Instant,
    warmup_end: Instant,
    stop: Stop,
    issued: AtomicU64,
    measured: AtomicU64,
}

impl Schedule {
    /// A plan starting at `start`, measuring after `warmup`, ending by `stop`.
    pub fn new(model: LoadModel, start: Instant, warmup: Duration, stop: Stop) -> Schedule {
        Schedule {
            model,
            start,
            warmup_end: start + warmup,
            stop,
            issued: AtomicU64::new(0),
            measured: AtomicU64::new(0),
        }
    }

    /// When measuring starts.
    pub fn warmup_end(&self) -> Instant {
        self.warmup_end
    }

    /// When a run by duration ends; `None` for a run by count.
    pub fn end(&self) -> Option<Instant> {
        match self.stop {
            Stop::Duration(d) => Some(self.warmup_end + d),
            Stop::Requests(_) => None,
        }
    }

    /// When operation `i` is due in an open loop.
    pub fn due(&self, rate: f64, i: u64) -> Instant {
        self.start + Duration::from_secs_f64(i as f64 / rate)
    }

    /// Operations due before the warm-up ends in an open loop.
    fn warmup_tickets(&self, rate: f64) -> u64 {
        ((self.warmup_end - self.start).as_secs_f64() * rate).ceil() as u64
    }

    /// The next operation for a worker asking at `now`, or `None` when the run is over.
    pub fn next_at(&self, now: Instant) -> Option<Ticket> {
        match self.model {
            LoadModel::Closed => {
                if self.end().is_some_and(|end| now >= end) {
                    return None;
                }
                let measured = now >= self.warmup_end;
                if let (true, Stop::Requests(n)) = (measured, self.stop) {
                    if self.measured.fetch_add(1, Ordering::Relaxed) >= n {
                        return None;
                    }
                }
                Some(Ticket { due: None, measured })
            }
            LoadModel::Open { rate } => {
                let i = self.issued.fetch_add(1, Ordering::Relaxed);
                let due = self.due(rate, i);
                let over = match self.stop {
                    Stop::Duration(_) => self.end().is_some_and(|end| due >= end),
                    Stop::Requests(n) => i >= self.warmup_tickets(rate) + n,
                };
                (!over).then_some(Ticket { due: Some(due), measured: due >= self.warmup_end })
            }
        }
    }

    /// The latency of `ticket` sent at `sent` and answered at `done`: from its due time in
    /// an open loop, from its send time in a closed one.
    pub fn latency(&self, ticket: &Ticket, sent: Instant, done: Instant) -> Duration {
        done.saturating_duration_since(ticket.due.unwrap_or(sent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn open_loop_due_times_warmup_and_end() {
        let t0 = Instant::now();
        let s = Schedule::new(LoadModel::Open { rate: 1000.0 }, t0, 100 * MS, Stop::Duration(200 * MS));
        let tickets: Vec<Ticket> = std::iter::from_fn(|| s.next_at(t0)).collect();
        assert_eq!(tickets.len(), 300, "0.3 s at 1000/s, asked for all at once");
        assert_eq!(tickets.iter().filter(|t| t.measured).count(), 200);
        assert_eq!(tickets[150].due, Some(t0 + 150 * MS));
        assert!(!tickets[99].measured && tickets[100].measured);
    }

    #[test]
    fn open_loop_counts_the_stall_it_caused() {
        let t0 = Instant::now();
        let s = Schedule::new(LoadModel::Open { rate: 100.0 }, t0, Duration::ZERO, Stop::Requests(3));
        let a = s.next_at(t0).unwrap(); // due t0
        let b = s.next_at(t0).unwrap(); // due t0 + 10 ms
        let c = s.next_at(t0).unwrap(); // due t0 + 20 ms
        assert_eq!(s.next_at(t0), None, "three requests, no warm-up");
        // The server stalls for 1 s on the first; the others go out late and come back at once.
        let back = t0 + 1000 * MS;
        assert_eq!(s.latency(&a, t0, back), 1000 * MS);
        assert_eq!(s.latency(&b, back, back + MS), 991 * MS);
        assert_eq!(s.latency(&c, back, back + MS), 981 * MS);
    }

    #[test]
    fn closed_loop_measures_from_send_and_counts_requests_after_warmup() {
        let t0 = Instant::now();
        let s = Schedule::new(LoadModel::Closed, t0, 10 * MS, Stop::Requests(2));
        let warm = s.next_at(t0).unwrap();
        assert!(!warm.measured);
        assert!(s.next_at(t0 + 20 * MS).unwrap().measured);
        assert!(s.next_at(t0 + 20 * MS).is_some());
        assert_eq!(s.next_at(t0 + 20 * MS), None);
        assert_eq!(s.latency(&warm, t0 + 5 * MS, t0 + 8 * MS), 3 * MS);
        let timed = Schedule::new(LoadModel::Closed, t0, 10 * MS, Stop::Duration(10 * MS));
        assert!(timed.next_at(t0 + 19 * MS).is_some());
        assert_eq!(timed.next_at(t0 + 20 * MS), None);
    }
}
