//! What a run reports: a table for people, JSON for machines, and the files in `--out`
//! (one `.hgrm` per operation, `latency.svg`, `spread.svg`, `report.json`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::BenchError;
use crate::hgrm;
use crate::plots;
use crate::rss::ProcMem;
use crate::runner::Outcome;
use crate::spec::{BenchSpec, KeyDist, Op};
use crate::spread::Spread;

/// One operation's line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpRow {
    /// The operation.
    pub op: Op,
    /// Successful measured operations.
    pub count: u64,
    /// Failed measured operations.
    pub errors: u64,
    /// Successful operations per second.
    pub ops_per_s: f64,
    /// Latency percentiles and maximum, in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile (ms).
    pub p90_ms: f64,
    /// 99th percentile (ms).
    pub p99_ms: f64,
    /// 99.9th percentile (ms).
    pub p999_ms: f64,
    /// Maximum (ms).
    pub max_ms: f64,
    /// Mean (ms).
    pub mean_ms: f64,
    /// The first error's message, if any failed.
    pub first_error: Option<String>,
}

/// A run's report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The balancer.
    pub addr: String,
    /// The operation mix, e.g. `read=80,write=20`.
    pub mix: String,
    /// The key distribution.
    pub keys: KeyDist,
    /// `closed` or `open`.
    pub load: &'static str,
    /// Operations per second asked for (open loop).
    pub rate: Option<f64>,
    /// Client connections.
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Bytes per string column.
    pub row_size: usize,
    /// Warm-up, seconds.
    pub warmup_s: f64,
    /// Measured span, seconds.
    pub elapsed_s: f64,
    /// Successful operations per second, all kinds.
    pub throughput: f64,
    /// Errors, all kinds.
    pub errors: u64,
    /// Per operation.
    pub ops: Vec<OpRow>,
    /// Reads per server and shard replica.
    pub spread: Spread,
    /// Memory of the cluster's processes.
    pub memory: Vec<ProcMem>,
    /// Keys in the bench's key set.
    pub key_set: u64,
    /// Rows present at the start (before preloading).
    pub rows_at_start: u64,
    /// Rows inserted before the run.
    pub preloaded: u64,
    /// The bench's own CPU per successful operation over the measured span, microseconds.
    pub bench_cpu_us_per_op: Option<f64>,
    /// The bench's share of the machine over the measured span (1.0: every core busy).
    pub bench_cpu_share: Option<f64>,
    /// Remarks.
    pub notes: Vec<String>,
    /// Files written.
    pub files: Vec<PathBuf>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Report {
    /// The report of `outcome`, a run of `spec`.
    pub fn new(spec: &BenchSpec, outcome: &Outcome) -> Report {
        let secs = outcome.elapsed.as_secs_f64().max(1e-9);
        let ops = outcome
            .ops
            .iter()
            .map(|o| {
                let h = &o.latency;
                let q = |q: f64| if h.is_empty() { 0.0 } else { ms(h.value_at_quantile(q)) };
                OpRow {
                    op: o.op,
                    count: h.len(),
                    errors: o.errors,
                    ops_per_s: h.len() as f64 / secs,
                    p50_ms: q(0.5),
                    p90_ms: q(0.9),
                    p99_ms: q(0.99),
                    p999_ms: q(0.999),
                    max_ms: ms(h.max()),
                    mean_ms: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
                    first_error: o.first_error.clone(),
                }
            })
            .collect::<Vec<_>>();
        let count: u64 = ops.iter().map(|o| o.count).sum();
        let cpu = outcome.bench_cpu.map(|c| c.as_secs_f64());
        Report {
            bench_cpu_us_per_op: cpu.filter(|_| count > 0).map(|c| c * 1e6 / count as f64),
            bench_cpu_share: cpu.map(|c| c / (secs * crate::cpu::cores() as f64)),
            addr: spec.addr.clone(),
            mix: spec.mix.to_string(),
            keys: spec.keys,
            load: if spec.rate.is_some() { "open" } else { "closed" },
            rate: spec.rate,
            connections: spec.connections,
            pipeline: spec.pipeline,
            row_size: spec.row_size,
            warmup_s: spec.warmup.as_secs_f64(),
            elapsed_s: secs,
            throughput: outcome.throughput(),
            errors: ops.iter().map(|o| o.errors).sum(),
            ops,
            spread: outcome.spread.clone(),
            memory: outcome.memory.clone(),
            key_set: outcome.key_set.0,
            rows_at_start: outcome.key_set.1,
            preloaded: outcome.preloaded,
            notes: outcome.notes.clone(),
            files: Vec::new(),
        }
    }

    /// Writes the `.hgrm` files, the charts and `report.json` into `dir`; records their paths.
    pub fn write_files(&mut self, outcome: &Outcome, dir: &Path) -> Result<(), BenchError> {
        std::fs::create_dir_all(dir).map_err(|e| BenchError::io(dir.display(), e))?;
        let mut files = Vec::new();
        for o in &outcome.ops {
            let path = dir.join(format!("{}.hgrm", o.op));
            std::fs::write(&path, hgrm::format(&o.latency, 1000.0)).map_err(|e| BenchError::io(path.display(), e))?;
            files.push(path);
        }
        let title = format!("Shardline latency by percentile ({}, {} loop)", self.mix, self.load);
        let series: Vec<(String, _)> = outcome.ops.iter().map(|o| (o.op.to_string(), o.latency.clone())).collect();
        let path = dir.join("latency.svg");
        plots::latency(&path, &title, &series)?;
        files.push(path);
        if self.spread.servers.iter().any(|s| s.reads > 0) {
            let total: u64 = self.spread.servers.iter().map(|s| s.reads).sum();
            let path = dir.join("spread.svg");
            plots::spread(&path, &format!("Reads handled per server ({total} reads)"), &self.spread.servers)?;
            files.push(path);
        }
        let path = dir.join("report.json");
        files.push(path.clone());
        self.files = files;
        let json = serde_json::to_string_pretty(self).expect("a report serializes");
        std::fs::write(&path, json + "\n").map_err(|e| BenchError::io(path.display(), e))
    }

    /// The report as tables.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let load = match self.rate {
            Some(r) => format!("open loop at {r:.0} ops/s (latency from each op's due time)"),
            None => "closed loop".into(),
        };
        let _ = writeln!(
            out,
            "shardline-bench → {}: {load}, {} connections × {} in flight, mix {}, {} keys, {}-byte strings",
            self.addr,
            self.connections,
            self.pipeline,
            self.mix,
            self.keys.name(),
            self.row_size
        );
        let _ = writeln!(
            out,
            "key set {} keys ({} rows at start, {} preloaded); measured {:.2} s after a {:.1} s warm-up\n",
            self.key_set, self.rows_at_start, self.preloaded, self.elapsed_s, self.warmup_s
        );
        let _ = writeln!(
            out,
            "{:<8} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "op", "count", "errors", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for o in &self.ops {
            let _ = writeln!(
                out,
                "{:<8} {:>9} {:>7} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                o.op.name(),
                o.count,
                o.errors,
                o.ops_per_s,
                o.p50_ms,
                o.p90_ms,
                o.p99_ms,
                o.p999_ms,
                o.max_ms
            );
        }
        let count: u64 = self.ops.iter().map(|o| o.count).sum();
        let _ = writeln!(out, "{:<8} {:>9} {:>7} {:>10.0}", "total", count, self.errors, self.throughput);
        for o in self.ops.iter().filter(|o| o.first_error.is_some()) {
            let _ = writeln!(out, "  first {} error: {}", o.op, o.first_error.as_deref().unwrap_or(""));
        }
        if let (Some(us), Some(share)) = (self.bench_cpu_us_per_op, self.bench_cpu_share) {
            let _ = writeln!(
                out,
                "load generator: {us:.1} µs of CPU per operation, {:.0}% of the machine ({} cores)",
                share * 100.0,
                crate::cpu::cores()
            );
        }
        self.spread_table(&mut out);
        self.memory_table(&mut out);
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        if !self.files.is_empty() {
            let names: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
            let _ = writeln!(out, "\nfiles: {}", names.join(" "));
        }
        out
    }

    fn spread_table(&self, out: &mut String) {
        let total: u64 = self.spread.servers.iter().map(|s| s.reads).sum();
        if total > 0 {
            let _ = writeln!(out, "\nreads handled per server (balancer's counters, {total} shard reads)");
            let _ = writeln!(out, "{:<12} {:>9} {:>7}", "server", "reads", "share");
            for s in &self.spread.servers {
                let _ = writeln!(out, "{:<12} {:>9} {:>6.1}%", s.server, s.reads, s.share);
            }
        }
        let replica_reads: u64 = self.spread.shards.iter().flat_map(|s| &s.replicas).map(|r| r.reads).sum();
        if replica_reads > 0 {
            let _ = writeln!(out, "\nreads per shard replica (nodes' counters; share of the shard's reads)");
            for s in &self.spread.shards {
                let parts: Vec<String> =
                    s.replicas.iter().map(|r| format!("{} {} ({:.1}%)", r.server, r.reads, r.share)).collect();
                let _ = writeln!(out, "{:<6} {}", s.shard, parts.join("  "));
            }
        }
    }

    fn memory_table(&self, out: &mut String) {
        if self.memory.is_empty() {
            return;
        }
        let mib = |kib: u64| kib as f64 / 1024.0;
        let _ = writeln!(
            out,
            "\nmemory (MiB)  {:>8} {:>14} {:>14} {:>10}",
            "pid", "peak VmHWM", "max VmRSS run", "VmRSS end"
        );
        for m in &self.memory {
            let _ = writeln!(
                out,
                "{:<13} {:>8} {:>14.1} {:>14.1} {:>10.1}",
                m.name,
                m.pid,
                mib(m.hwm_kib),
                mib(m.rss_max_kib),
                mib(m.rss_end_kib)
            );
        }
    }
}
