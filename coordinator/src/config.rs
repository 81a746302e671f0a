//! The coordinator's configuration: a validated value with documented defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shardline_protocol::net::Limits;

/// Everything the coordinator needs to start.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Where to listen for balancers, the CLI and people at `nc`.
    pub listen: SocketAddr,
    /// Where the cluster metadata (and, with the process spawner, node data) lives.
    pub data_dir: PathBuf,
    /// How often every node is sent a heartbeat.
    pub heartbeat_interval: Duration,
    /// A node whose heartbeats have not been answered for this long is dead.
    pub dead_after: Duration,
    /// How long a primary's lease lasts from each heartbeat; shorter than `dead_after`, so
    /// a primary cut off from the coordinator stops taking writes before it is replaced.
    pub lease: Duration,
    /// Timeout of control calls (configure, roles, election queries).
    pub call_timeout: Duration,
    /// How long a freshly spawned node may take to answer.
    pub ready_timeout: Duration,
    /// Minimum time between two restarts of the same node.
    pub respawn_backoff: Duration,
    /// Limits on the coordinator's own listener.
    pub limits: Limits,
}

impl CoordinatorConfig {
    /// A configuration with the defaults: heartbeats every 100 ms, dead after 400 ms
    /// without an answer, leases of 300 ms.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> CoordinatorConfig {
        CoordinatorConfig {
            listen,
            data_dir: data_dir.into(),
            heartbeat_interval: Duration::from_millis(100),
            dead_after: Duration::from_millis(400),
            lease: Duration::from_millis(300),
            call_timeout: Duration::from_millis(1000),
            ready_timeout: Duration::from_secs(15),
            respawn_backoff: Duration::from_millis(1000),
            limits: Limits::default(),
        }
    }

    /// Checks that the timings are consistent.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval.is_zero() || self.lease.is_zero() {
            return Err(ConfigError::Zero);
        }
        if self.heartbeat_interval >= self.dead_after {
            return Err(ConfigError::DeadAfterTooShort);
        }
        if self.lease >= self.dead_after {
            return Err(ConfigError::LeaseOutlivesDeadAfter);
        }
        if self.lease <= self.heartbeat_interval {
            return Err(ConfigError::LeaseTooShort);
        }
        Ok(())
    }

    /// Where a node's data directory goes (process spawner).
    pub fn node_dir(&self, name: &str) -> PathBuf {
        self.data_dir.join("nodes").join(name)
    }
}

/// Why a coordinator's timings were refused at start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The heartbeat interval or the lease is zero.
    #[error("the heartbeat interval and the lease must be above zero")]
    Zero,
    /// A node would be declared dead between two heartbeats.
    #[error("dead-after must be longer than the heartbeat interval")]
    DeadAfterTooShort,
    /// An isolated primary's lease would outlive the wait before its replacement.
    #[error("the lease must be shorter than dead-after, or an isolated primary could still take writes when its replacement is elected")]
    LeaseOutlivesDeadAfter,
    /// Leases would lapse between heartbeats.
    #[error("the lease must outlast the heartbeat interval, or leases lapse between heartbeats")]
    LeaseTooShort,
}
