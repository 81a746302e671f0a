//! Talking to the stack through its published balancer port, in protocol frames
//! (`shardline_protocol::net::Conn`). Every loop is bounded in time and in count.

use std::time::{Duration, Instant};

use shardline_protocol::{Request, Response, Row, ShardId, Topology};

pub(crate) use crate::common::{poll, Outcome};

/// Timeout of one call: above the balancer's 5 s retry deadline across a failover.
pub(crate) const CALL: Duration = Duration::from_secs(8);

/// One request on a fresh connection.
pub(crate) async fn request(addr: &str, request: &Request) -> Result<Response, String> {
    crate::common::request_within(addr, request, CALL).await
}

/// The topology, through the balancer (which asks the coordinator).
pub(crate) async fn topology(addr: &str) -> Topology {
    poll("the topology", Duration::from_secs(20), || async {
        match request(addr, &Request::Status).await {
            Ok(Response::Topology(t)) => Some(t),
            _ => None,
        }
    })
    .await
}

/// Polls until `check` accepts the topology.
pub(crate) async fn wait_topology(
    addr: &str,
    what: &str,
    limit: Duration,
    check: impl Fn(&Topology) -> bool,
) -> Topology {
    poll(what, limit, || async {
        match request(addr, &Request::Status).await {
            Ok(Response::Topology(t)) if check(&t) => Some(t),
            _ => None,
        }
    })
    .await
}

/// The primary of shard `id`.
pub(crate) fn primary_of(t: &Topology, id: u32) -> (String, u64) {
    let s = t.shards.iter().find(|s| s.spec.id == ShardId(id)).expect("the shard");
    (s.primary.clone().expect("a primary"), s.term)
}

/// Writes `key` through the balancer, retrying with the same `(client, seq)` (applied once)
/// while the answer is retryable, for up to `limit`.
pub(crate) async fn write(addr: &str, client: u64, seq: u64, key: i64, limit: Duration) -> Outcome {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    for _ in 0..(limit.as_millis() / 20 + 2) {
        if Instant::now() >= deadline {
            break;
        }
        match crate::common::write_once(addr, client, seq, key, CALL).await {
            Ok(outcome) => return outcome,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Outcome::Failed(format!("gave up: {last}"))
}

/// The keys in `[low, high]`, read from each shard's primary (linearizable).
pub(crate) async fn primary_keys(addr: &str, low: i64, high: i64) -> Vec<i64> {
    poll("a linearizable read", Duration::from_secs(30), || async {
        match request(addr, &Request::Read { low, high, consistency: shardline_protocol::Consistency::Primary }).await {
            Ok(Response::Rows { rows, .. }) => Some(rows.iter().map(|r| r.key).collect()),
            _ => None,
        }
    })
    .await
}

/// The rows server `name` holds of shard `id` (ReadServer, routed by the balancer).
pub(crate) async fn server_rows(addr: &str, name: &str, id: u32) -> Option<Vec<Row>> {
    match request(addr, &Request::ReadServer { server: name.to_owned() }).await {
        Ok(Response::ServerRows(shards)) => shards.into_iter().find(|s| s.shard == ShardId(id)).map(|s| s.rows),
        _ => None,
    }
}

/// Waits until every replica of shard `id` holds exactly the rows of its primary.
pub(crate) async fn converged(addr: &str, id: u32, limit: Duration) {
    poll(&format!("every replica of sh{id} holds the primary's rows"), limit, || async {
        let t = topology(addr).await;
        let shard = t.shards.iter().find(|s| s.spec.id == ShardId(id))?;
        let (low, high) = (shard.spec.low, shard.spec.high()?);
        let want =
            match request(addr, &Request::Read { low, high, consistency: shardline_protocol::Consistency::Primary })
                .await
            {
                Ok(Response::Rows { rows, .. }) => rows,
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
