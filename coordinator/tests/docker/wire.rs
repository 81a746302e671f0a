//! Talking to the stack through its published balancer port, in protocol frames
//! (`shardline_protocol::net::Conn`). Every loop is bounded in time and in count.

use std::future::Future;
use std::time::{Duration, Instant};

use shardline_protocol::net::Conn;
use shardline_protocol::{ErrorCode, Request, Response, Row, ShardCommit, ShardId, Topology, Value, WriteBatch};

/// Timeout of one call: above the balancer's 5 s retry deadline across a failover.
pub const CALL: Duration = Duration::from_secs(8);

/// One request on a fresh connection.
pub async fn request(addr: &str, request: &Request) -> Result<Response, String> {
    let mut conn =
        Conn::connect(addr, CALL, shardline_protocol::DEFAULT_MAX_PAYLOAD).await.map_err(|e| e.to_string())?;
    conn.call(request, CALL).await.map_err(|e| e.to_string())
}

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

/// The topology, through the balancer (which asks the coordinator).
pub async fn topology(addr: &str) -> Topology {
    poll("the topology", Duration::from_secs(20), || async {
        match request(addr, &Request::Status).await {
            Ok(Response::Topology(t)) => Some(t),
            _ => None,
        }
    })
    .await
}

/// Polls until `check` accepts the topology.
pub async fn wait_topology(addr: &str, what: &str, limit: Duration, check: impl Fn(&Topology) -> bool) -> Topology {
    poll(what, limit, || async {
        match request(addr, &Request::Status).await {
            Ok(Response::Topology(t)) if check(&t) => Some(t),
            _ => None,
        }
    })
    .await
}

/// Every shard has a primary, every replica serves, every server is healthy.
pub fn settled(t: &Topology) -> bool {
    !t.shards.is_empty()
        && t.shards.iter().all(|s| s.primary.is_some() && s.readable.len() == s.replicas.len())
        && t.servers.iter().all(|s| s.healthy)
}

/// The primary of shard `id`.
pub fn primary_of(t: &Topology, id: u32) -> (String, u64) {
    let s = t.shards.iter().find(|s| s.spec.id == ShardId(id)).expect("the shard");
    (s.primary.clone().expect("a primary"), s.term)
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

/// Writes `key` through the balancer, retrying with the same `(client, seq)` (applied once)
/// while the answer is retryable, for up to `limit`.
pub async fn write(addr: &str, client: u64, seq: u64, key: i64, limit: Duration) -> Outcome {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    for _ in 0..(limit.as_millis() / 20 + 2) {
        if Instant::now() >= deadline {
            break;
        }
        let batch = WriteBatch::encode(client, seq, &[row(key)]).expect("a batch");
        match request(addr, &Request::Write(batch)).await {
            Ok(Response::Committed(mut c)) => return Outcome::Acked(c.remove(0)),
            Ok(Response::Error(e)) if !retryable(&e) => return Outcome::Failed(e.to_string()),
            Ok(other) => last = format!("{other:?}"),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Outcome::Failed(format!("gave up: {last}"))
}

fn retryable(e: &ErrorCode) -> bool {
    e.is_retryable() || matches!(e, ErrorCode::Timeout(_))
}

/// The keys in `[low, high]`, read from each shard's primary (linearizable).
pub async fn primary_keys(addr: &str, low: i64, high: i64) -> Vec<i64> {
    poll("a linearizable read", Duration::from_secs(30), || async {
        match request(addr, &Request::Read { low, high, primary: true }).await {
            Ok(Response::Rows(rows)) => Some(rows.iter().map(|r| r.key).collect()),
            _ => None,
        }
    })
    .await
}

/// The rows server `name` holds of shard `id` (ReadServer, routed by the balancer).
pub async fn server_rows(addr: &str, name: &str, id: u32) -> Option<Vec<Row>> {
    match request(addr, &Request::ReadServer { server: name.to_owned() }).await {
        Ok(Response::ServerRows(shards)) => shards.into_iter().find(|s| s.shard == ShardId(id)).map(|s| s.rows),
        _ => None,
    }
}

/// Waits until every replica of shard `id` holds exactly the rows of its primary.
pub async fn converged(addr: &str, id: u32, limit: Duration) {
    poll(&format!("every replica of sh{id} holds the primary's rows"), limit, || async {
        let t = topology(addr).await;
        let shard = t.shards.iter().find(|s| s.spec.id == ShardId(id))?;
        let (low, high) = (shard.spec.low, shard.spec.high()?);
        let want = match request(addr, &Request::Read { low, high, primary: true }).await {
            Ok(Response::Rows(rows)) => rows,
            _ => return None,
        };
        for replica in &shard.replicas {
            if server_rows(addr, replica, id).await? != want {
                return None;
            }
        }
        Some(())
    })
    .await
}
