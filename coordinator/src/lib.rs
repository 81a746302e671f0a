//! Shardline's coordinator: cluster membership, failure detection, elections, respawn.
//!
//! The decisions are pure and tested with simulated time; the driver does the I/O:
//!
//! - [`detector`]: a node is dead after `dead_after` without a heartbeat answer.
//! - [`reconcile`]: from the configuration and heartbeats, the actions the cluster needs
//!   (elect, re-send a role, respawn) and which replicas may serve reads.
//! - [`election`]: choosing the new primary from the votes.
//! - [`round`]: one election as a sans-IO state machine (queries out, answers in, the
//!   outcome's requests out), driven by [`driver`].
//! - [`driver`]: the driver's steps as one sans-IO [`driver::Core`] (heartbeats, leases,
//!   reconcile, elections, replica set changes): time and answers in, calls out. The
//!   tokio driver and the simulator both run it.
//! - [`lease`]: lease grants, and when a shard's leases have surely ended.
//! - [`plan`]: admin requests checked and turned into plans (refusals change nothing).
//! - [`meta`]: the persisted configuration; terms are saved before they are used (redb,
//!   the default, through [`driver::MetaSink`]).
//! - [`etcd`]: the same configuration in etcd, every save a compare-and-swap, and the
//!   election of one leading coordinator among several.
//! - [`leadership`]: whether this coordinator may act now; every control call checks it.
//! - [`spawner`]: starting nodes: child processes, Docker containers, or nodes run by
//!   someone else.
//! - `switchover`: waits out a planned move of a shard's primary, which the core drives
//!   ([`driver::switch`]).
//! - `cluster`, `failover`, `admin`: the tokio driver around the core: it makes the core's
//!   calls over real connections, runs the heartbeat and reconcile timers, restarts nodes,
//!   publishes the topology; admin operations spawn nodes and queue changes for the core.
//!   [`service`]: the network face.
//! - [`error`]: [`CoordinatorError`], and where it becomes the wire's `ErrorCode`.
//! - [`metrics`]: what `/metrics` reports (elections, failovers, topology, requests).
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use shardline_coordinator::{config::CoordinatorConfig, spawner::ProcessSpawner, Coordinator};
//! let cfg = CoordinatorConfig::new("127.0.0.1:7100".parse()?, "/tmp/shardline");
//! let spawner = ProcessSpawner::new("target/release/shardline-node".into(), "127.0.0.1".into(), 7200, vec![]);
//! let coordinator = Coordinator::open(cfg, Box::new(spawner))?;
//! tokio::spawn(coordinator.clone().reconcile_loop());
//! # Ok(()) }
//! ```

mod admin;
mod cluster;
pub mod config;
pub mod detector;
pub mod driver;
pub mod election;
pub mod error;
pub mod etcd;
mod failover;
pub mod leadership;
pub mod lease;
pub mod meta;
pub mod metrics;
pub mod plan;
pub mod reconcile;
pub mod round;
pub mod service;
pub mod spawner;
mod switchover;

pub use cluster::Coordinator;
pub use error::CoordinatorError;
pub use failover::majority;
