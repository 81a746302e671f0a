//! Shardline's Prometheus metrics: what every process shares.
//!
//! Each server (`shardline-node`, `shardline-coordinator`, `shardline-balancer`) keeps a
//! [`prometheus_client`] registry, counts its requests with [`RequestMetrics`], adds its own
//! facts as collectors read at scrape time, and serves the registry on `/metrics` with
//! [`exporter::spawn`], a listener task of its own, apart from the request path.
//!
//! - [`addr`]: the `--metrics-addr` value: an address, `+N` (the service port plus N), `off`.
//! - [`exporter`]: the HTTP listener (hyper) that answers `GET /metrics`.
//! - [`histogram`]: a lock-free histogram (atomics only), so timing a request takes no lock.
//! - [`requests`]: requests by operation and code, their latency, in-flight requests and
//!   open connections; every counter a request touches is resolved when the process starts.
//! - [`ops`]: the `op` label of each request kind.
//!
//! ```no_run
//! # async fn example() -> Result<(), shardline_metrics::exporter::ExporterError> {
//! use prometheus_client::registry::Registry;
//! use shardline_metrics::{exporter, RequestMetrics};
//! let mut registry = Registry::default();
//! let requests = RequestMetrics::new(shardline_metrics::ops::CLIENT);
//! requests.register(&mut registry);
//! let timer = requests.begin("read");
//! timer.finish("ok");
//! let _task = exporter::spawn("127.0.0.1:9100".parse().unwrap(), registry).await?;
//! # Ok(()) }
//! ```

pub mod addr;
pub mod exporter;
pub mod histogram;
pub mod ops;
pub mod requests;

pub use addr::MetricsAddr;
pub use histogram::AtomicHistogram;
pub use requests::{RequestMetrics, RequestTimer};

/// The label value of a request that succeeded.
pub const OK: &str = "ok";
