//! Redis Cluster beside Shardline on the same machine, the same shape (3 shards × 2 copies
//! on 6 servers), the same concurrency, pipelining and value size: `redis-benchmark
//! --cluster` SET with `appendfsync always` and GET without persistence, against
//! `shardline-bench` writes and reads. Every server started here is stopped by its pid,
//! also on failure (see [`redis::RedisCluster`]).

pub mod redis;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::cluster::LocalCluster;
use crate::error::BenchError;
use crate::report::Report;
use crate::runner;
use crate::seed::round_robin;
use crate::spec::{BenchSpec, KeyDist, Mix, Op, Stop};
use redis::{RedisCluster, RedisResult};

/// How to run the comparison.
#[derive(Debug, Clone)]
pub struct PeerSpec {
    /// The `shardline` CLI binary (it starts the Shardline cluster).
    pub shardline_bin: PathBuf,
    /// Concurrent clients (default 50, redis-benchmark's default).
    pub clients: usize,
    /// Pipeline depths to compare (default 1 and 16).
    pub pipelines: Vec<usize>,
    /// Value bytes (default 64).
    pub value_size: usize,
    /// redis-benchmark SET requests per run (GET runs use 5 times as many).
    pub redis_requests: u64,
    /// Length of each Shardline run (after a 1 s warm-up).
    pub duration: Duration,
    /// Where Shardline's runs leave their files.
    pub out: PathBuf,
    /// Draw progress bars.
    pub progress: bool,
    /// Further flags for the Shardline cluster's `shardline up` (e.g. `--tls`, `--no-auth`).
    pub up_args: Vec<String>,
}

/// One line of the comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerRow {
    /// `write` or `read`.
    pub op: Op,
    /// Pipeline depth.
    pub pipeline: usize,
    /// What redis-benchmark printed.
    pub redis: RedisResult,
    /// Shardline's run through the balancer.
    pub shardline: Report,
    /// Shardline's run with the client routing by itself, straight to the nodes.
    pub direct: Report,
}

/// Shardline's 3 shards of 2 replicas over 6 servers; each shard gets a wide key range.
pub const SHARD_SIZE: u64 = 1 << 32;

/// Runs both systems; returns the rows in table order (writes, then reads).
pub async fn run(spec: &PeerSpec) -> Result<Vec<PeerRow>, BenchError> {
    let mut redis_rows = Vec::new();
    let persistent = RedisCluster::start(true).await?;
    let mut sets = Vec::new();
    for &p in &spec.pipelines {
        sets.push(persistent.benchmark("set", spec.clients, p, spec.value_size, spec.redis_requests).await);
    }
    persistent.stop().await;
    for (&p, r) in spec.pipelines.iter().zip(sets) {
        redis_rows.push((Op::Write, p, r?));
    }
    let volatile = RedisCluster::start(false).await?;
    let mut gets = Vec::new();
    match volatile.benchmark("set", spec.clients, 16, spec.value_size, spec.redis_requests).await {
        Ok(_) => {
            for &p in &spec.pipelines {
                gets.push(volatile.benchmark("get", spec.clients, p, spec.value_size, spec.redis_requests * 5).await);
            }
        }
        Err(e) => gets.push(Err(e)),
    }
    volatile.stop().await;
    for (&p, r) in spec.pipelines.iter().zip(gets) {
        redis_rows.push((Op::Read, p, r?));
    }

    let init = round_robin(6, 3, 2, SHARD_SIZE);
    let cluster =
        LocalCluster::start_with(&spec.shardline_bin, Some(&init), Duration::from_secs(120), &spec.up_args).await?;
    let mut rows = Vec::new();
    let result = async {
        for (op, p, redis) in redis_rows {
            let bench = BenchSpec {
                addr: cluster.addr(),
                mix: Mix::only(op),
                keys: KeyDist::Uniform,
                row_size: spec.value_size,
                connections: spec.clients,
                pipeline: p,
                stop: Stop::Duration(spec.duration),
                warmup: Duration::from_secs(1),
                key_space: 3_000_000,
                preload: if op == Op::Read { Some(100_000) } else { Some(0) },
                out: spec.out.join(format!("peer-{op}-p{p}")),
                progress: spec.progress,
                ..BenchSpec::default()
            };
            let outcome = runner::run(&bench).await?;
            let mut report = Report::new(&bench, &outcome);
            report.write_files(&outcome, &bench.out)?;
            let direct_bench = BenchSpec {
                direct: Some(cluster.coordinator_addr()),
                out: spec.out.join(format!("peer-{op}-p{p}-direct")),
                ..bench.clone()
            };
            let outcome = runner::run(&direct_bench).await?;
            let mut direct = Report::new(&direct_bench, &outcome);
            direct.write_files(&outcome, &direct_bench.out)?;
            rows.push(PeerRow { op, pipeline: p, redis, shardline: report, direct });
        }
        Ok::<_, BenchError>(())
    }
    .await;
    cluster.stop(Duration::from_secs(30)).await;
    result.map(|()| rows)
}

/// The side-by-side table.
pub fn table(spec: &PeerSpec, rows: &[PeerRow]) -> String {
    let mut out = format!(
        "Redis Cluster (3 masters + 3 replicas) and Shardline (6 nodes, 3 shards × 2 replicas) on this machine: \
         {} clients, {}-byte values\n\n",
        spec.clients, spec.value_size
    );
    let _ = writeln!(
        out,
        "{:<38} {:>4} | {:>11} {:>8} {:>8} | {:>11} {:>8} {:>8} | {:>9} | {:>11} {:>8} {:>8} | {:>9}",
        "operation",
        "pipe",
        "Redis op/s",
        "p50 ms",
        "p99 ms",
        "Shardline",
        "p50 ms",
        "p99 ms",
        "SL/Redis",
        "SL direct",
        "p50 ms",
        "p99 ms",
        "dir/Redis"
    );
    for r in rows {
        let what = match r.op {
            Op::Write => "write (Redis SET, appendfsync always)",
            _ => "read (Redis GET, no persistence)",
        };
        let sl = r.shardline.ops.first();
        let dir = r.direct.ops.first();
        let _ = writeln!(
            out,
            "{:<38} {:>4} | {:>11.0} {:>8.3} {:>8.3} | {:>11.0} {:>8.3} {:>8.3} | {:>8.2}x | {:>11.0} {:>8.3} {:>8.3} | {:>8.2}x",
            what,
            r.pipeline,
            r.redis.rps,
            r.redis.p50_ms.unwrap_or(f64::NAN),
            r.redis.p99_ms.unwrap_or(f64::NAN),
            r.shardline.throughput,
            sl.map_or(0.0, |o| o.p50_ms),
            sl.map_or(0.0, |o| o.p99_ms),
            r.shardline.throughput / r.redis.rps.max(1e-9),
            r.direct.throughput,
            dir.map_or(0.0, |o| o.p50_ms),
            dir.map_or(0.0, |o| o.p99_ms),
            r.direct.throughput / r.redis.rps.max(1e-9),
        );
        let cpu = |r: &Report| match (r.bench_cpu_us_per_op, r.bench_cpu_share) {
            (Some(us), Some(share)) => format!("{us:.1} µs/op, {:.0}% of the machine", share * 100.0),
            _ => "not measured".to_owned(),
        };
        let _ = writeln!(out, "  load generator CPU: {} (balancer); {} (direct)", cpu(&r.shardline), cpu(&r.direct));
        if r.direct.errors > 0 {
            let _ = writeln!(out, "  note: {} Shardline operations failed (client routing)", r.direct.errors);
        }
        if r.shardline.errors > 0 {
            let _ = writeln!(out, "  note: {} Shardline operations failed", r.shardline.errors);
        }
    }
    out.push_str(
        "\nWhat an acknowledgement means: a Redis SET is acknowledged after the master's own fsync; its \
         replica copies asynchronously (a failover can lose it). A Shardline write is acknowledged after \
         a majority of the shard's replicas (here both) have it on disk. redis-benchmark runs a fixed \
         count of requests; shardline-bench runs for a fixed time and measures latency per operation \
         with HdrHistogram; both report client-observed latency. \"SL direct\": the same load from one \
         Shardline client that routes by itself (the coordinator's topology, straight to the nodes, the \
         balancer's retry rules), shared by all workers.\n",
    );
    out
}
