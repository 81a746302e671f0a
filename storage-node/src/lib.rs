//! Shardline's storage node: shard replicas that keep rows in redb behind a checksummed,
//! majority-replicated log.
//!
//! - [`config`]: the node's validated configuration.
//! - [`error`]: the node's typed errors, and where they become the wire's error codes.
//! - [`node`]: the shard replicas a node holds and the dispatch of every message.
//! - [`replica`]: one shard replica's decisions, sans-IO: messages and time in, effects
//!   out (the primary's write path, the follower's side, replication, roles).
//! - [`shard`]: the tokio task that drives a replica core, and its follower connections.
//! - [`wal`]: the log's segment files and in-memory view, on a [`disk::Disk`].
//! - [`disk`]: the log's disk: real files, or a simulated disk that can crash and fail.
//! - [`store`]: the table of rows, metadata and client marks: redb, or in memory.
//! - [`heartbeats`]: the coordinator's recent heartbeats, which lease grants count from.
//! - [`failpoint`]: crash points for fault tests (a real node aborts there; in the
//!   simulator the node dies there).
//!
//! A node starts with no roles: the coordinator (or a test playing it) configures shard
//! replicas and tells each one to lead or follow at a term.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use shardline_storage_node::{config::NodeConfig, failpoint::Failpoints, node::Node};
//! let cfg = NodeConfig::new("Server0", "127.0.0.1:7200".parse()?, "/tmp/shardline/Server0");
//! let limits = cfg.limits();
//! let node = Node::open(cfg, Failpoints::none())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7200").await?;
//! node.serve(listener, limits, std::future::pending()).await;
//! # Ok(()) }
//! ```

pub mod config;
pub mod disk;
pub mod error;
pub mod failpoint;
pub mod heartbeats;
pub mod metrics;
pub mod node;
pub mod replica;
pub mod shard;
pub mod store;
pub mod wal;
