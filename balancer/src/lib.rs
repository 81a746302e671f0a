//! Shardline's balancer: the stateless router between clients and storage nodes.
//!
//! Clients send it the same frames (or nc text lines) they would send anyone; it routes
//! each by key from a cached, versioned topology that the coordinator pushes to it:
//! writes to their shard's primary, reads to one replica picked on the shard's
//! consistent-hash ring (or to the primary, for a linearizable read), admin operations to
//! the coordinator. It reads frame headers and write-batch indexes only; rows travel as
//! the bytes that came in. When a node has died or moved it refreshes the topology and
//! retries, with the same (client id, sequence) for writes, so a retry applies once.
//!
//! - [`config`]: the validated configuration.
//! - [`route`] and [`ring`]: the routing decisions, pure and unit-tested.
//! - [`merge`]: splicing per-shard answers without decoding rows.
//! - [`service`]: the [`net::Service`] and its dispatch; the write and read paths and the
//!   retry loop live beside it.
//! - [`topology`]: the topology cache, the coordinator subscription and refreshes.
//! - [`pool`]: a few multiplexed connections ([`shardline_protocol::net::MuxConn`]) per node.
//! - [`stats`]: counters for `STATS`.
//! - [`metrics`]: what `/metrics` reports ([`run_with_metrics`] serves it).
//!
//! ```no_run
//! # async fn example() -> Result<(), shardline_balancer::error::BalancerError> {
//! use shardline_balancer::{config::BalancerConfig, run};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7000").await?;
//! run(listener, BalancerConfig::new("127.0.0.1:7100"), std::future::pending()).await
//! # }
//! ```

pub mod config;
pub mod error;
pub mod merge;
pub mod metrics;
pub mod pool;
mod read;
mod retry;
pub mod ring;
pub mod route;
pub mod service;
pub mod stats;
pub mod topology;
mod write;

use std::future::Future;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use shardline_metrics::{exporter, MetricsAddr};
use shardline_protocol::net;
use tokio::net::TcpListener;
use tracing::info;

use crate::config::BalancerConfig;
use crate::error::BalancerError;
use crate::service::Balancer;

/// Serves clients on `listener` until `shutdown` completes, following the coordinator's
/// topology in the background.
pub async fn run(
    listener: TcpListener,
    config: BalancerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BalancerError> {
    run_with_metrics(listener, config, MetricsAddr::Off, shutdown).await
}

/// Like [`run`] on `ports` (a TLS port, and a plaintext one beside it, if they say so),
/// also serving Prometheus `/metrics` where `metrics` says.
pub async fn run_with_metrics(
    ports: impl Into<net::Ports>,
    config: BalancerConfig,
    metrics: MetricsAddr,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BalancerError> {
    config.validate()?;
    let balancer = Arc::new(Balancer::new(config.clone()));
    let ports = ports.into();
    let listen = ports.listener.local_addr()?;
    info!(%listen, coordinator = %config.coordinator, client_id = balancer.client_id(), "balancer starting");
    let mut registry = Registry::default();
    metrics::register(&balancer, &mut registry);
    let exporter = exporter::start(metrics, listen, registry).await?;
    let follower = tokio::spawn(topology::follow(balancer.topology().clone(), config.clone()));
    net::serve_ports(ports, balancer, config.limits(), config.gate.clone(), shutdown).await;
    follower.abort();
    if let Some((_, task)) = exporter {
        task.abort();
    }
    info!("balancer stopped");
    Ok(())
}
