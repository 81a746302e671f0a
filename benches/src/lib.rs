//! Shardline's benchmarks as a library, driven by the `shardline-bench` binary (and
//! `make bench-seed`, `make bench-peer`, `make bench-failover`); the criterion codec benchmarks and the
//! `write-path` bench live in `benches/` and `src/bin/`.
//!
//! How the modules fit:
//!
//! - [`spec`]: what a run does (mix, keys, load model, limits), validated.
//! - [`keys`]: the key set, which keys hold rows, uniform / zipfian / sequential picks.
//! - [`schedule`]: closed and open loop pacing, and the intended-time latency accounting.
//! - [`prepare`]: connect, read the schema and shards, scan and preload rows.
//! - [`runner`]: the workers, their HdrHistograms, counters and memory around the run.
//! - [`spread`], [`rss`]: reads per server and shard replica; the processes' memory.
//! - [`report`], [`hgrm`], [`plots`]: the table, JSON, `.hgrm` files and SVG charts.
//! - [`cluster`]: a local cluster from `shardline up`, stopped by pid.
//! - [`seed`]: the course system's three layouts and its published table.
//! - [`peer`]: Redis Cluster and Shardline of the same shape, side by side.
//! - [`failover`]: faults on primaries under load: unavailability windows, nothing lost.
//!
//! ```no_run
//! use shardline_benches::{report::Report, runner, spec::BenchSpec};
//!
//! # async fn example() -> Result<(), shardline_benches::BenchError> {
//! let spec = BenchSpec { mix: "read=90,update=10".parse()?, ..BenchSpec::default() };
//! let outcome = runner::run(&spec).await?;
//! let mut report = Report::new(&spec, &outcome);
//! report.write_files(&outcome, &spec.out)?;
//! print!("{}", report.table());
//! # Ok(()) }
//! ```

pub mod cluster;
pub mod cpu;
pub mod error;
pub mod failover;
pub mod hgrm;
pub mod keys;
pub mod peer;
pub mod plots;
pub mod prepare;
pub mod report;
pub mod rss;
pub mod runner;
pub mod schedule;
pub mod seed;
pub mod spec;
pub mod spread;

pub use error::BenchError;
