//! Throughput of a running cluster through the library: writes/s, reads/s and deletes/s
//! at a fixed number of concurrent requests, with latency percentiles.
//!
//! ```sh
//! cargo build --release && ./target/release/shardline up &     # the seed's layout
//! cargo run --release -p shardline --example throughput -- --concurrency 50 --rows 10000
//! ```
//!
//! Phase 1 writes `--rows` single-row writes (keys `--first-key..`, spread over every
//! shard), phase 2 reads single keys for `--seconds`, phase 3 deletes the rows again so
//! the run can be repeated. Every phase keeps `--concurrency` calls in flight on one
//! pipelined connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use shardline::{Client, Row, Value};

/// Flags.
#[derive(Debug, Parser)]
struct Args {
    /// The balancer.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: String,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 50)]
    concurrency: u64,
    /// Rows written (and deleted) — one call each.
    #[arg(long, default_value_t = 10_000)]
    rows: u64,
    /// First key; keys are first-key.. first-key + rows (the seed's shards hold 0..16384).
    #[arg(long, default_value_t = 0)]
    first_key: i64,
    /// Seconds of reads.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

/// Runs `op(i)` for i in 0..total (or until `limit`) with `concurrency` workers; returns
/// the calls done, the elapsed time and the latencies.
async fn phase<F, Fut>(concurrency: u64, total: u64, limit: Duration, op: F) -> (u64, Duration, Vec<Duration>)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), shardline::ClientError>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (op, next) = (op.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || started.elapsed() >= limit {
                    return Ok::<_, shardline::ClientError>(latencies);
                }
                let t = Instant::now();
                op(i).await?;
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker").expect("call failed"));
    }
    let elapsed = started.elapsed();
    all.sort();
    (all.len() as u64, elapsed, all)
}

fn report(what: &str, (n, elapsed, lat): &(u64, Duration, Vec<Duration>)) {
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{what:<8} {n:>7} calls in {:>6.2} s = {:>8.0}/s   p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        elapsed.as_secs_f64(),
        *n as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        lat.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    );
}

#[tokio::main]
async fn main() -> Result<(), shardline::ClientError> {
    let args = Args::parse();
    let client = Client::connect(args.addr.clone()).await?;
    let (first, rows, c) = (args.first_key, args.rows, args.concurrency);
    let key = move |i: u64| first + i as i64;
    println!("{} at {c} concurrent calls, {rows} rows from key {first}", args.addr);

    let cl = client.clone();
    let writes = phase(c, rows, Duration::from_secs(600), move |i| {
        let cl = cl.clone();
        async move {
            let row = Row::new(key(i), vec![Value::Str(format!("s{i}")), Value::Int(i as i64 % 100)]);
            cl.write(&[row]).await.map(drop)
        }
    })
    .await;
    report("writes", &writes);

    let cl = client.clone();
    let written = writes.0.max(1);
    let reads = phase(c, u64::MAX, Duration::from_secs(args.seconds), move |i| {
        let cl = cl.clone();
        let k = key((i.wrapping_mul(2_654_435_761)) % written);
        async move {
            let got = cl.read(k..=k).await?;
            assert_eq!(got.len(), 1, "key {k} reads back");
            Ok(())
        }
    })
    .await;
    report("reads", &reads);

    let cl = client.clone();
    let deletes = phase(c, writes.0, Duration::from_secs(600), move |i| {
        let cl = cl.clone();
        async move { cl.delete(key(i)).await.map(drop) }
    })
    .await;
    report("deletes", &deletes);
    Ok(())
}
