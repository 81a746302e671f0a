//! The balancer's test harness: in-process storage nodes, a fake coordinator, a balancer.
//!
//! - [`node`]: a storage node in its own tokio runtime on a `127.0.0.1:0` listener, so a
//!   test can kill it outright (the runtime is shut down: its listener, connections and
//!   shard tasks all vanish at once, as in a crash).
//! - [`coordinator`]: a fake coordinator serving a topology the test controls: it answers
//!   `SubscribeTopology` and pushes each change, `GetTopology` and `Status`.
//! - [`Cluster`]: nodes + coordinator + balancer, shards configured and roles assigned the
//!   way the coordinator would.
//!
//! Every wait has a deadline and every loop a bounded count ([`Budget`]); nothing waits on
//! a fixed sleep.

// Each test binary uses part of the harness.
#![allow(dead_code, unused_imports)]

pub(crate) mod cluster;
pub(crate) mod coordinator;
pub(crate) mod node;

pub(crate) use cluster::{Cluster, Layout};

pub(crate) use shardline_testkit::{within, Budget};
