//! A primary is SIGKILLed while clients write through the balancer: the clients see no
//! error (the balancer retries on the new primary, with the same client id and sequence),
//! and afterwards every acknowledged write is readable, none twice. The same with a client
//! that routes by itself, straight to the nodes.

mod harness;

use std::time::{Duration, Instant};

use harness::writers::{assert_rows_are, Writers};
use harness::{poll, signal, Up};
use shardline::{Client, ClientConfig, ShardId};

/// Concurrent writers; writer `w` writes keys `w, w + WRITERS, ...` (all in sh1).
const WRITERS: i64 = 4;
/// Each writer stops after this many writes at most.
const MAX_WRITES: i64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_primary_loses_no_acknowledged_write() {
    let up = Up::start().await;
    let c = up.client().await;
    tokio::time::timeout(Duration::from_secs(180), scenario(&c)).await.expect("the scenario finishes within 180 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_routing_by_itself_loses_none_either() {
    let up = Up::start().await;
    let coordinator = format!("127.0.0.1:{}", up.coordinator_port);
    let c = Client::connect_direct(coordinator, ClientConfig::default(), 2).await.unwrap();
    assert!(c.is_direct());
    tokio::time::timeout(Duration::from_secs(180), scenario(&c)).await.expect("the scenario finishes within 180 s");
}

async fn scenario(c: &Client) {
    let t = c.status().await.unwrap();
    let sh1 = t.shards.iter().find(|s| s.spec.id == ShardId(1)).unwrap();
    let old_primary = sh1.primary.clone().expect("sh1 has a primary");
    let addr = t.server(&old_primary).unwrap().addr.clone();
    let node = Client::connect(addr.clone()).await.unwrap();
    let pid = harness::stats_pid(&node).await;
    drop(node);

    let writers = Writers::start(c, WRITERS, MAX_WRITES);

    poll("100 writes acknowledged", Duration::from_secs(30), || async { (writers.acked() >= 100).then_some(()) }).await;
    signal(pid, libc::SIGKILL);
    let killed_at = Instant::now();
    let at_kill = writers.acked();

    // A new primary for sh1, and writes acknowledged after it took over.
    poll("a new primary for sh1", Duration::from_secs(30), || async {
        let t = c.status().await.ok()?;
        let s = t.shards.iter().find(|s| s.spec.id == ShardId(1))?;
        (s.primary.as_deref().is_some_and(|p| p != old_primary)).then_some(())
    })
    .await;
    poll("200 writes after the kill", Duration::from_secs(30), || async {
        (writers.acked() >= at_kill + 200).then_some(())
    })
    .await;
    let acked = writers.acked();
    eprintln!(
        "failover: {} writes acknowledged, {} of them after the kill ({:?} ago)",
        acked,
        acked - at_kill,
        killed_at.elapsed()
    );
    let written = writers.stop("the failover").await;
    assert_rows_are(c, &written).await;
}
