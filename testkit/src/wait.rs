//! Waiting in tests, always with a deadline and a bounded number of attempts.

use std::future::Future;
use std::time::{Duration, Instant};

/// Runs `f` and panics if it takes longer than `limit`: a test's overall timeout.
///
/// Call it with the cluster owned by the caller, so that a timeout panics while the
/// processes are still alive and their logs can be printed.
pub async fn within<F: Future>(limit: Duration, what: &str, f: F) -> F::Output {
    match tokio::time::timeout(limit, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: did not finish within {limit:?}"),
    }
}

/// Polls `probe` every 100 ms until it gives a value; panics after `limit`.
pub async fn poll<T, F, Fut>(what: &str, limit: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll_every(what, limit, Duration::from_millis(100), probe).await
}

/// Polls `probe` every `interval` until it gives a value; panics after `limit`.
pub async fn poll_every<T, F, Fut>(what: &str, limit: Duration, interval: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let mut budget = Budget::every(what, limit, interval);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if !budget.retry().await {
            panic!("{}", budget.spent());
        }
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
        let max_attempts = u32::try_from(within.as_millis() / interval.as_millis().max(1)).unwrap_or(u32::MAX - 2) + 2;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_budget_ends_by_count_and_by_time() {
        let mut b = Budget::every("nothing", Duration::from_millis(50), Duration::from_millis(10));
        let mut n = 0;
        while b.retry().await {
            n += 1;
            assert!(n < 10, "a 50 ms budget polled every 10 ms stops within 7 tries");
        }
        assert!(!b.left() || n >= 3);
        assert!(b.spent().starts_with("nothing: gave up after"));
    }

    #[tokio::test]
    async fn poll_returns_the_first_value() {
        let mut calls = 0;
        let v = poll_every("the third call", Duration::from_secs(5), Duration::from_millis(1), || {
            calls += 1;
            let c = calls;
            async move { (c == 3).then_some(c) }
        })
        .await;
        assert_eq!(v, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "never: gave up")]
    async fn poll_panics_when_the_budget_is_spent() {
        poll_every("never", Duration::from_millis(30), Duration::from_millis(5), || async { None::<()> }).await;
    }
}
