//! What every coordinator test binary (processes and Docker) shares: polling with a
//! deadline, one request on a fresh connection, the rows the tests write, how a write ended.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use shardline_protocol::net::Conn;
use shardline_protocol::{ErrorCode, Request, Response, Row, ShardCommit, Value, WriteBatch};

/// Polls `probe` every 50 ms until it gives a value; panics after `limit`.
pub(crate) async fn poll<T, F, Fut>(what: &str, limit: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    shardline_testkit::poll_every(what, limit, Duration::from_millis(50), probe).await
}

/// One request on a fresh connection, each step bounded by `limit`.
pub(crate) async fn request_within(addr: &str, request: &Request, limit: Duration) -> Result<Response, String> {
    let mut conn =
        Conn::connect(addr, limit, shardline_protocol::DEFAULT_MAX_PAYLOAD).await.map_err(|e| e.to_string())?;
    conn.call(request, limit).await.map_err(|e| e.to_string())
}

/// The row the tests write for `key`.
pub(crate) fn row(key: i64) -> Row {
    Row::new(key, vec![Value::Str(format!("student{key}")), Value::Int(key % 100)])
}

/// How one write ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// Committed by a majority.
    Acked(ShardCommit),
    /// Refused, or not known to have committed.
    Failed(String),
}

/// Whether a write's error is worth retrying (with the same client id and sequence).
pub(crate) fn retryable(e: &ErrorCode) -> bool {
    e.is_retryable() || matches!(e, ErrorCode::Timeout(_))
}

/// One attempt at writing `key` as `(client, seq)` at `addr`, within `limit`: the outcome
/// if it is final (acknowledged, or refused for good), else what went wrong, to retry.
pub(crate) async fn write_once(
    addr: &str,
    client: u64,
    seq: u64,
    key: i64,
    limit: Duration,
) -> Result<Outcome, String> {
    let batch = WriteBatch::encode(client, seq, &[row(key)]).expect("a batch");
    match request_within(addr, &Request::Write(batch), limit).await {
        Ok(Response::Committed(mut c)) => Ok(Outcome::Acked(c.remove(0))),
        Ok(Response::Error(e)) if !retryable(&e) => Ok(Outcome::Failed(e.to_string())),
        Ok(other) => Err(format!("{other:?}")),
        Err(e) => Err(e),
    }
}
