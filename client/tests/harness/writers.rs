//! Writers of sh1's keys under a fault, and the check that follows: every acknowledged
//! write readable exactly once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use shardline::Client;
use tokio::task::JoinHandle;

use super::row;

/// `n` concurrent writers through one client; writer `w` writes keys `w, w + n, ...` (all
/// in sh1), each once, at most `max` each, until stopped. Any error ends its writer.
pub(crate) struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<Result<Vec<i64>, String>>>,
}

impl Writers {
    /// Starts the writers.
    pub(crate) fn start(c: &Client, n: i64, max: i64) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for w in 0..n {
            let (c, stop, acked) = (c.clone(), stop.clone(), acked.clone());
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in 0..max {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = w + i * n;
                    if let Err(e) = c.write(&[row(key)]).await {
                        return Err(format!("write of {key} failed: {e}"));
                    }
                    mine.push(key);
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(mine)
            }));
        }
        Writers { stop, acked, tasks }
    }

    /// Writes acknowledged so far.
    pub(crate) fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// The counter of acknowledged writes, to sample from another task.
    pub(crate) fn acked_counter(&self) -> Arc<AtomicU64> {
        self.acked.clone()
    }

    /// The flag that stops the writers (other load may stop on it too).
    pub(crate) fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Stops the writers and returns every key acknowledged, sorted; panics with the first
    /// error a writer saw, saying it happened `during` what.
    pub(crate) async fn stop(self, during: &str) -> Vec<i64> {
        self.stop.store(true, Ordering::Relaxed);
        let mut written = Vec::new();
        for task in self.tasks {
            match task.await.expect("writer task") {
                Ok(keys) => written.extend(keys),
                Err(e) => panic!("a client saw an error during {during}: {e}"),
            }
        }
        written.sort();
        written
    }
}

/// sh1's rows, read from its primary, are exactly the `written` keys (sorted), once each,
/// with the values the writers wrote.
pub(crate) async fn assert_rows_are(c: &Client, written: &[i64]) {
    let rows = c.read_primary(0..=4095).await.unwrap();
    let keys: Vec<i64> = rows.iter().map(|r| r.key).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "a key is read twice or out of order");
    assert_eq!(keys, written, "acknowledged writes and readable rows differ");
    for r in &rows {
        assert_eq!(*r, row(r.key));
    }
}
