//! A primary is SIGKILLed while clients write through the balancer: the clients see no
//! error (the balancer retries on the new primary, with the same client id and sequence),
//! and afterwards every acknowledged write is readable, none twice. The same with a client
//! that routes by itself, straight to the nodes.

mod harness;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{poll, row, signal, Up};
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
    let pid: i32 = node
        .stats()
        .await
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "pid")
        .and_then(|(_, v)| v.parse().ok())
        .expect("the node's STATS has a pid line");
    drop(node);

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (c, stop, acked) = (c.clone(), stop.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..MAX_WRITES {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let key = w + i * WRITERS;
                if let Err(e) = c.write(&[row(key)]).await {
                    return Err(format!("write of {key} failed: {e}"));
                }
                mine.push(key);
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(mine)
        }));
    }

    poll("100 writes acknowledged", Duration::from_secs(30), || async {
        (acked.load(Ordering::Relaxed) >= 100).then_some(())
    })
    .await;
    signal(pid, libc::SIGKILL);
    let killed_at = Instant::now();
    let at_kill = acked.load(Ordering::Relaxed);

    // A new primary for sh1, and writes acknowledged after it took over.
    poll("a new primary for sh1", Duration::from_secs(30), || async {
        let t = c.status().await.ok()?;
        let s = t.shards.iter().find(|s| s.spec.id == ShardId(1))?;
        (s.primary.as_deref().is_some_and(|p| p != old_primary)).then_some(())
    })
    .await;
    poll("200 writes after the kill", Duration::from_secs(30), || async {
        (acked.load(Ordering::Relaxed) >= at_kill + 200).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    eprintln!(
        "failover: {} writes acknowledged, {} of them after the kill ({:?} ago)",
        acked.load(Ordering::Relaxed),
        acked.load(Ordering::Relaxed) - at_kill,
        killed_at.elapsed()
    );

    let mut written = Vec::new();
    for w in writers {
        match w.await.expect("writer task") {
            Ok(keys) => written.extend(keys),
            Err(e) => panic!("a client saw an error during the failover: {e}"),
        }
    }
    written.sort();
    let rows = c.read_primary(0..=4095).await.unwrap();
    let keys: Vec<i64> = rows.iter().map(|r| r.key).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "a key is read twice or out of order");
    assert_eq!(keys, written, "acknowledged writes and readable rows differ");
    for r in &rows {
        assert_eq!(*r, row(r.key));
    }
}
