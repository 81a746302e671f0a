//! `shardline`: the native Rust client of Shardline, a sharded, replicated record store.
//!
//! A [`Client`] holds one TCP connection to a balancer (default `127.0.0.1:7000`) and
//! pipelines every call over it (the protocol's `MuxConn`): calls encode into one output
//! buffer a writer task flushes, a reader task hands each answer to the call with the same
//! request id, so clones of one client
//! can have many calls in flight at once from many tasks. Every call has a timeout
//! ([`ClientConfig::timeout`], 10 s by default) and fails with a typed [`ClientError`]:
//! a connection or timeout problem, an error the server answered ([`ErrorCode`]), or a
//! protocol mismatch.
//!
//! Writes, updates and deletes carry the client's random id and an increasing sequence
//! number; the balancer and the storage nodes apply a given (id, sequence) at most once,
//! so a write sent again after a failover or a broken connection is not applied twice.
//!
//! - [`cli`]: what the command-line programs share (answering a bad command line).
//! - [`client`]: [`Client`], its configuration and [`WriteResult`].
//! - [`direct`]: routing in the client ([`Client::connect_direct`]): requests straight to
//!   the storage nodes, on the coordinator's topology, with the balancer's rules.
//! - [`error`]: the [`ClientError`] enum.
//! - [`layout`]: init and add layouts from the seed's JSON or our TOML.
//! - [`read`]: reads at a consistency level ([`Client::read_at`]) and the session token.
//! - [`rows`]: rows from words, CSV and JSON lines, typed by the schema, and back to JSON.
//!
//! The `shardline` binary in this package is the CLI built on it (`shardline --help`),
//! including `shardline up`, which starts a local cluster.
//!
//! ```no_run
//! use shardline::{Client, Row, Value};
//!
//! # #[tokio::main] async fn main() -> Result<(), shardline::ClientError> {
//! let client = Client::connect("127.0.0.1:7000").await?;
//! let schema = client.status().await?.schema.expect("the cluster is initialized");
//! println!("columns: {:?}", schema.columns);
//!
//! let rows: Vec<Row> = (0..10)
//!     .map(|k| Row::new(k * 1000, vec![Value::Str(format!("s{k}")), Value::Int(k)]))
//!     .collect();
//! let done = client.write(&rows).await?; // split by shard, each part atomic
//! for commit in &done.commits {
//!     println!("{}: index {} on {:?}", commit.shard, commit.index, commit.replicas);
//! }
//! let back = client.read_primary(0..=9000).await?; // in key order, linearizable
//! assert_eq!(back.len(), 10);
//! client.update(Row::new(0, vec![Value::Str("s0".into()), Value::Int(99)])).await?;
//! client.delete(1000).await?;
//! # Ok(()) }
//! ```

pub mod cli;
pub mod client;
mod connection;
pub mod direct;
pub mod error;
pub mod layout;
pub mod read;
pub mod rows;

pub use client::{Client, ClientConfig, WriteResult};
pub use error::ClientError;
pub use shardline_protocol::net::auth::Credential;
pub use shardline_protocol::net::tls::ClientTls;
pub use shardline_protocol::{
    AddServersRequest, Column, ColumnType, CopyDirection, CopyProgress, CopySize, ErrorCode, InitRequest, Row, Schema,
    ShardCommit, ShardCopy, ShardId, ShardRows, ShardSpec, ShardTopology, Topology, Value,
};
