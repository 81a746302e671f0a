//! The course system's published table (`seed/original-README.md`), reproduced: for each of
//! its three layouts a local cluster (`shardline up`), 10,000 writes then 10,000 reads from
//! 20 concurrent workers, and Shardline's reads/s and writes/s beside the seed's.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use shardline::{InitRequest, Schema, ShardId, ShardSpec};

use crate::cluster::LocalCluster;
use crate::error::BenchError;
use crate::report::Report;
use crate::runner;
use crate::spec::{BenchSpec, KeyDist, Mix, Op, Stop};

/// Keys per shard in the seed's layouts.
pub const SHARD_SIZE: u64 = 4096;

/// One row of the seed's table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SeedLayout {
    /// Servers.
    pub servers: usize,
    /// Shards.
    pub shards: u32,
    /// Replicas of each shard.
    pub replicas: usize,
    /// The seed's reads per second.
    pub seed_reads_per_s: f64,
    /// The seed's writes per second.
    pub seed_writes_per_s: f64,
}

/// The seed's three configurations and figures.
pub const LAYOUTS: [SeedLayout; 3] = [
    SeedLayout { servers: 6, shards: 4, replicas: 3, seed_reads_per_s: 105.31, seed_writes_per_s: 28.78 },
    SeedLayout { servers: 6, shards: 4, replicas: 6, seed_reads_per_s: 138.06, seed_writes_per_s: 18.63 },
    SeedLayout { servers: 10, shards: 6, replicas: 8, seed_reads_per_s: 145.43, seed_writes_per_s: 16.86 },
];

impl SeedLayout {
    /// "6 servers, 4 shards, 3 replicas".
    pub fn name(&self) -> String {
        format!("{} servers, {} shards, {} replicas", self.servers, self.shards, self.replicas)
    }

    /// The init request: the seed's schema, shards of [`SHARD_SIZE`] keys, replica `j` of
    /// shard `i` on server `(i × replicas + j) mod servers` (round robin).
    pub fn init(&self) -> InitRequest {
        round_robin(self.servers, self.shards, self.replicas, SHARD_SIZE)
    }
}

/// `servers` servers named `Server0..`, `shards` shards of `size` keys from 0, each with
/// `replicas` replicas spread round robin over the servers (distinct while replicas ≤ servers).
pub fn round_robin(servers: usize, shards: u32, replicas: usize, size: u64) -> InitRequest {
    let specs: Vec<ShardSpec> =
        (0..shards).map(|i| ShardSpec { id: ShardId(i + 1), low: i64::from(i) * size as i64, size }).collect();
    let mut map: BTreeMap<String, Vec<ShardId>> = (0..servers).map(|s| (format!("Server{s}"), Vec::new())).collect();
    for (i, spec) in specs.iter().enumerate() {
        for j in 0..replicas {
            let server = (i * replicas + j) % servers;
            map.get_mut(&format!("Server{server}")).expect("every server is in the map").push(spec.id);
        }
    }
    InitRequest { n: servers, schema: Schema::seed(), shards: specs, servers: map }
}

/// One layout's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedRow {
    /// The layout and the seed's figures.
    pub layout: SeedLayout,
    /// The write run.
    pub writes: Report,
    /// The read run.
    pub reads: Report,
}

/// How to run the reproduction.
#[derive(Debug, Clone)]
pub struct SeedSpec {
    /// The `shardline` CLI binary (it starts the clusters).
    pub shardline_bin: PathBuf,
    /// Reads, and writes, per layout (the seed: 10,000).
    pub requests: u64,
    /// Concurrent workers (the seed's figure: 20).
    pub workers: usize,
    /// Bytes of the name column (default 16).
    pub row_size: usize,
    /// Where each run's files go (a folder per layout).
    pub out: PathBuf,
    /// Draw progress bars.
    pub progress: bool,
}

fn run_spec(seed: &SeedSpec, addr: &str, op: Op, layout: &SeedLayout, out: &Path) -> BenchSpec {
    BenchSpec {
        addr: addr.to_owned(),
        mix: Mix::only(op),
        keys: KeyDist::Uniform,
        row_size: seed.row_size,
        connections: seed.workers,
        pipeline: 1,
        stop: Stop::Requests(seed.requests),
        warmup: Duration::ZERO,
        preload: Some(0),
        key_space: SHARD_SIZE * u64::from(layout.shards),
        out: out.to_path_buf(),
        progress: seed.progress,
        ..BenchSpec::default()
    }
}

/// Runs every layout in turn, each on a fresh cluster stopped afterwards.
pub async fn run(seed: &SeedSpec, mut each: impl FnMut(&SeedRow)) -> Result<Vec<SeedRow>, BenchError> {
    let mut rows = Vec::new();
    for layout in LAYOUTS {
        let init = layout.init();
        let cluster = LocalCluster::start(&seed.shardline_bin, Some(&init), Duration::from_secs(120)).await?;
        let dir = seed.out.join(format!("seed-{}-{}-{}", layout.servers, layout.shards, layout.replicas));
        let result = async {
            let mut reports = Vec::new();
            for op in [Op::Write, Op::Read] {
                let spec = run_spec(seed, &cluster.addr(), op, &layout, &dir.join(op.name()));
                let outcome = runner::run(&spec).await?;
                let mut report = Report::new(&spec, &outcome);
                report.write_files(&outcome, &spec.out)?;
                reports.push(report);
            }
            Ok::<_, BenchError>(reports)
        }
        .await;
        cluster.stop(Duration::from_secs(30)).await;
        let mut reports = result?;
        let reads = reports.pop().expect("a read report");
        let writes = reports.pop().expect("a write report");
        let row = SeedRow { layout, writes, reads };
        each(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// The side-by-side table.
pub fn table(seed: &SeedSpec, rows: &[SeedRow]) -> String {
    let mut out = format!(
        "The course system's table on local clusters: {} writes then {} reads per layout, {} concurrent workers, \
         {}-byte names\n\n",
        seed.requests, seed.requests, seed.workers, seed.row_size
    );
    let _ = writeln!(
        out,
        "{:<34} {:>10} {:>9} {:>8} {:>8} | {:>10} {:>9} {:>8} {:>8}",
        "configuration", "reads/s", "seed", "ratio", "p99 ms", "writes/s", "seed", "ratio", "p99 ms"
    );
    for r in rows {
        let p99 = |rep: &Report| rep.ops.first().map_or(0.0, |o| o.p99_ms);
        let _ = writeln!(
            out,
            "{:<34} {:>10.1} {:>9.2} {:>7.0}x {:>8.2} | {:>10.1} {:>9.2} {:>7.0}x {:>8.2}",
            r.layout.name(),
            r.reads.throughput,
            r.layout.seed_reads_per_s,
            r.reads.throughput / r.layout.seed_reads_per_s,
            p99(&r.reads),
            r.writes.throughput,
            r.layout.seed_writes_per_s,
            r.writes.throughput / r.layout.seed_writes_per_s,
            p99(&r.writes),
        );
    }
    for r in rows {
        let errors = r.reads.errors + r.writes.errors;
        if errors > 0 {
            let _ = writeln!(out, "note: {}: {errors} operations failed (see report.json)", r.layout.name());
        }
        let spread: Vec<String> = r.reads.spread.servers.iter().map(|s| format!("{} {}", s.server, s.reads)).collect();
        let _ = writeln!(out, "reads per server, {}: {}", r.layout.name(), spread.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_spread_replicas_round_robin() {
        for l in LAYOUTS {
            let init = l.init();
            assert_eq!(init.servers.len(), l.servers);
            for shard in &init.shards {
                let holders: Vec<&String> =
                    init.servers.iter().filter(|(_, s)| s.contains(&shard.id)).map(|(n, _)| n).collect();
                assert_eq!(holders.len(), l.replicas, "{} in {}", shard.id, l.name());
            }
            let loads: Vec<usize> = init.servers.values().map(Vec::len).collect();
            let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
            assert!(max - min <= 1, "{loads:?}");
            assert_eq!(init.shards.last().unwrap().low, (i64::from(l.shards) - 1) * 4096);
        }
        assert_eq!(round_robin(6, 4, 3, 4096).servers["Server0"], vec![ShardId(1), ShardId(3)]);
    }
}
