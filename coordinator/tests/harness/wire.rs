//! What every coordinator test binary (processes and Docker) shares: polling with a
//! deadline, the rows the tests write, how a write ended, and what "settled" means.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use shardline_protocol::{ErrorCode, Row, ShardCommit, Topology, Value};

/// Polls `probe` every 50 ms until it gives a value; panics after `limit`.
pub async fn poll<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    for _ in 0..(limit.as_millis() / 50 + 2) {
        if let Some(v) = probe().await {
            return v;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within {limit:?}");
}

/// Every shard has a primary, every replica serves, every server is healthy.
pub fn settled(t: &Topology) -> bool {
    !t.shards.is_empty()
        && t.shards.iter().all(|s| s.primary.is_some() && s.readable.len() == s.replicas.len())
        && t.servers.iter().all(|s| s.healthy)
}

/// The row the tests write for `key`.
pub fn row(key: i64) -> Row {
    Row::new(key, vec![Value::Str(format!("student{key}")), Value::Int(key % 100)])
}

/// How one write ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Committed by a majority.
    Acked(ShardCommit),
    /// Refused, or not known to have committed.
    Failed(String),
}

/// Whether a write's error is worth retrying (with the same client id and sequence).
pub fn retryable(e: &ErrorCode) -> bool {
    e.is_retryable() || matches!(e, ErrorCode::Timeout(_))
}
