//! The failover benchmark (`shardline-bench failover`): under a steady mixed load through
//! the balancer, it kills, pauses or cuts off a shard's primary again and again, and
//! measures for each fault how long the shard took to acknowledge a write and to answer a
//! read again; at the end it reads every written key back and checks that no acknowledged
//! write was lost and no refused one is present.
//!
//! How the modules fit:
//!
//! - [`window`] (pure): faults, the calls the load recorded, the unavailability windows,
//!   percentiles per fault kind and the timeline's buckets.
//! - [`ledger`] (pure): each write's outcome (acknowledged / refused / indeterminate) and
//!   the check against what was read back.
//! - [`load`]: the workers, their key blocks, and the reading back.
//! - [`inject`]: kill, pause and partition of a node, as a process or a container;
//!   [`netcut`]: the process-mode partition (iptables on the node's cgroup).
//! - [`driver`]: one run, fault after fault, waiting for the cluster to heal in between.
//! - [`report`]: the table, `report.json` and `timeline.svg`.

pub mod driver;
pub mod inject;
pub mod ledger;
pub mod load;
pub mod netcut;
pub mod report;
pub mod window;

use std::path::PathBuf;
use std::time::Duration;

use shardline::{InitRequest, ShardId, ShardSpec};

use crate::error::BenchError;
pub use window::FaultKind;

/// Where the cluster under test runs, and how to reach its nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A `shardline up` cluster this run starts in a temporary directory (and stops).
    OwnCluster {
        /// The `shardline` CLI binary.
        shardline_bin: PathBuf,
    },
    /// A running `shardline up` cluster: its balancer, and the coordinator's nodes directory
    /// (`<data-dir>/coordinator/nodes`, where each node's `<name>.pid` is).
    Processes {
        /// The balancer.
        addr: String,
        /// Where the pid files are.
        nodes_dir: PathBuf,
    },
    /// The Docker stack of `make up` with this prefix.
    Docker {
        /// The balancer's published address.
        addr: String,
        /// `SHARDLINE_PREFIX` of the stack.
        prefix: String,
    },
}

/// A validated description of one failover run; [`FailoverSpec::default`] documents the
/// defaults.
#[derive(Debug, Clone)]
pub struct FailoverSpec {
    /// The cluster (default: one of its own).
    pub target: Target,
    /// Fault kinds, taken in turn (default kill, pause, partition).
    pub kinds: Vec<FaultKind>,
    /// Events of each kind (default 20).
    pub events: usize,
    /// How long a pause or a partition lasts (default 3 s).
    pub hold: Duration,
    /// Client connections, one worker each (default 16).
    pub connections: usize,
    /// Calls per second over all workers (default 800).
    pub rate: f64,
    /// Percent of calls that are writes (default 50).
    pub write_percent: u32,
    /// Steady load before the first fault and after each recovery (default 1 s).
    pub interval: Duration,
    /// Longest wait for the cluster to heal after a fault (default 60 s).
    pub recover_timeout: Duration,
    /// Reads from the shard's primary (linearizable) instead of any replica (default off).
    pub primary_reads: bool,
    /// Where report.json and timeline.svg go (default `bench-out/failover`).
    pub out: PathBuf,
    /// Show progress on stderr (default on).
    pub progress: bool,
    /// Seed for the load's choices (default 42).
    pub seed: u64,
}

impl Default for FailoverSpec {
    fn default() -> FailoverSpec {
        FailoverSpec {
            target: Target::OwnCluster { shardline_bin: PathBuf::from("shardline") },
            kinds: FaultKind::ALL.to_vec(),
            events: 20,
            hold: Duration::from_secs(3),
            connections: 16,
            rate: 800.0,
            write_percent: 50,
            interval: Duration::from_secs(1),
            recover_timeout: Duration::from_secs(60),
            primary_reads: false,
            out: PathBuf::from("bench-out/failover"),
            progress: true,
            seed: 42,
        }
    }
}

impl FailoverSpec {
    /// Checks that the values make sense.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: &str| Err(BenchError::InvalidSpec(m.to_owned()));
        if self.kinds.is_empty() || self.events == 0 {
            return bad("--kinds and --events must name at least one event");
        }
        if self.connections == 0 || !(self.rate.is_finite() && self.rate > 0.0) {
            return bad("--connections and --rate must be above zero");
        }
        if self.write_percent == 0 || self.write_percent >= 100 {
            return bad("--write-percent must be between 1 and 99: the windows need both reads and writes");
        }
        if self.hold.is_zero() || self.recover_timeout.is_zero() {
            return bad("--pause and --recover-timeout must be above zero");
        }
        Ok(())
    }

    /// The fault kind of event `i` (kinds taken in turn, so machine noise spreads evenly).
    pub fn kind_of(&self, i: usize) -> FaultKind {
        self.kinds[i % self.kinds.len()]
    }

    /// Events in the whole run.
    pub fn total_events(&self) -> usize {
        self.events * self.kinds.len()
    }
}

/// Keys a shard of [`layout`] owns: room for a long run of unique keys.
pub const SHARD_KEYS: u64 = 1_000_000;

/// The layout this benchmark initializes a cluster with: the seed's (6 servers, 4 shards,
/// 3 replicas each, its schema), with shards of [`SHARD_KEYS`] keys so writes of fresh keys
/// do not run out (the seed's shards hold 4096).
pub fn layout() -> InitRequest {
    let mut init = shardline::InitRequest::seed();
    init.shards = (0..4u32)
        .map(|i| ShardSpec { id: ShardId(i + 1), low: i64::from(i) * SHARD_KEYS as i64, size: SHARD_KEYS })
        .collect();
    init
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_spec_is_valid_and_takes_kinds_in_turn() {
        let spec = FailoverSpec::default();
        spec.validate().unwrap();
        assert_eq!(spec.total_events(), 60);
        assert_eq!((spec.kind_of(0), spec.kind_of(4)), (FaultKind::Kill, FaultKind::Pause));
        let bad = FailoverSpec { write_percent: 100, ..FailoverSpec::default() };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn the_layout_has_room() {
        let init = layout();
        assert_eq!(init.shards.len(), 4);
        assert_eq!(init.shards[3].low, 3 * SHARD_KEYS as i64);
        assert_eq!(init.servers.len(), 6);
    }
}
