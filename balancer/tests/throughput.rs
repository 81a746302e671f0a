//! A rough throughput figure through the balancer (ignored by default: it measures, it does
//! not check). Everything runs in one process on this machine's cores, so the numbers are
//! a floor, not the balancer's own limit.
//!
//! `cargo test --release -p shardline-balancer --test throughput -- --ignored --nocapture`

mod harness;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{Cluster, Layout};
use shardline_protocol::{Request, Response, Row, Value, WriteBatch};

const CLIENTS: i64 = 16;
const RUN: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn reads_and_writes_per_second() {
    let cluster = Cluster::start(Layout::three_of(60_000), |_| {}).await;
    // Writes: 10-row batches, each within one shard; 16 clients, 3 s.
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut client = cluster.client().await;
        let (done, failed) = (done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut n = 0i64;
            while started.elapsed() < RUN && n < 1_000 {
                // Unique keys, below 16 * 1000 * 10 = 160,000: all three shards.
                let base = (n * CLIENTS + c) * 10;
                let rows: Vec<Row> =
                    (0..10).map(|i| Row::new(base + i, vec![Value::Str("x".into()), Value::Int(i)])).collect();
                let batch = WriteBatch::encode(0, 0, &rows).unwrap();
                match client.call(&Request::Write(batch)).await {
                    Response::Committed(_) => done.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                n += 1;
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    let writes = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "writes failed");

    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let mut client = cluster.client().await;
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            for _ in 0..1_000_000 {
                if started.elapsed() >= RUN {
                    break;
                }
                let read = Request::Read { low: 59_995, high: 60_005, primary: false };
                assert!(matches!(client.call(&read).await, Response::Rows(_)));
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    let reads = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    eprintln!("{CLIENTS} clients: {writes:.0} write requests/s (10-row batches), {reads:.0} reads/s (11 keys across 2 shards)");
}
