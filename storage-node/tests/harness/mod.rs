//! The process-level test harness: real `shardline-node` processes on 127.0.0.1, and the
//! test playing the coordinator.
//!
//! - [`node`]: one child process with its own port and temporary data dir, killed by pid
//!   (also when a test panics), stopped and continued with SIGSTOP / SIGCONT, restarted on
//!   the same port and data dir, or wiped and restarted empty.
//! - [`client`]: a framed client whose every await has a deadline.
//! - [`cluster`]: a set of nodes holding one shard (shard 1, keys `[0, 4096)`, the seed
//!   schema), with the coordinator's moves: configure, promote, follow.
//! - [`election`]: the coordinator's election at a new term, played by the test.
//! - [`converge`]: wait until the replicas hold the primary's rows; compare logs.
//! - [`ledger`]: every write a test sent and how it ended, and the checks the fault tests
//!   share: no acknowledged write lost, no refused write present, no half-applied batch.
//! - [`segment`]: the on-disk log segments, parsed record by record, to damage one.
//!
//! ```ignore
//! let mut cluster = Cluster::start(3, NodeOpts::default()).await;
//! within(Duration::from_secs(60), "scenario", async {
//!     cluster.setup_shard(0, 1).await;
//!     let mut ledger = Ledger::new(7);
//!     assert!(ledger.write(&cluster, 0, &[1]).await.is_acked());
//! })
//! .await;
//! ```
//!
//! Every loop is bounded in time and in count ([`Budget`]); no readiness is assumed from a
//! fixed sleep. When a test panics, [`cluster::Cluster`]'s `Drop` prints the tail of every
//! node's stderr before the processes are killed.

// Each test binary uses part of the harness.
#![allow(dead_code, unused_imports)]

pub(crate) mod client;
pub(crate) mod cluster;
pub(crate) mod converge;
pub(crate) mod election;
pub(crate) mod ledger;
pub(crate) mod node;
pub(crate) mod segment;

pub(crate) use client::{call_once, CallError, Conn};
pub(crate) use cluster::{Cluster, ReadError, CALL_TIMEOUT, LEASE_MS, SHARD};
pub(crate) use ledger::{classify, row_for, Ledger, Outcome};
pub(crate) use node::{NodeOpts, NodeProc};

pub(crate) use shardline_testkit::{within, Budget};
