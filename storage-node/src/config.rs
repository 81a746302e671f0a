//! The node's configuration: a validated value with documented defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shardline_protocol::{DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_PAYLOAD};

/// Everything a storage node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's server name (e.g. `Server0`), as the coordinator knows it.
    pub id: String,
    /// Where to listen for clients, peers and the coordinator.
    pub listen: SocketAddr,
    /// Where shard replicas keep their files.
    pub data_dir: PathBuf,
    /// How long a write may wait for a majority before it is answered `Timeout`.
    pub write_timeout: Duration,
    /// How often a primary sends each follower an (empty, if idle) append.
    pub sync_heartbeat: Duration,
    /// How long a primary waits for a follower's answer before calling it unreachable.
    pub peer_timeout: Duration,
    /// A follower further behind than this many entries gets a snapshot instead of the log.
    pub snapshot_lag: u64,
    /// Bytes of snapshot rows a shard replica sends a second at most (0: unlimited).
    pub snapshot_rate: u64,
    /// Entries kept in the log behind the point every replica has applied.
    pub log_retain: u64,
    /// Largest frame payload accepted or sent.
    pub max_payload: usize,
    /// Requests one connection may have in flight before it gets `Overloaded`.
    pub max_in_flight: usize,
    /// Connections served at once.
    pub max_connections: usize,
}

impl NodeConfig {
    /// A configuration with defaults for everything but identity, address and directory.
    pub fn new(id: impl Into<String>, listen: SocketAddr, data_dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            id: id.into(),
            listen,
            data_dir: data_dir.into(),
            write_timeout: Duration::from_millis(2000),
            sync_heartbeat: Duration::from_millis(50),
            peer_timeout: Duration::from_millis(500),
            snapshot_lag: 1000,
            snapshot_rate: crate::replica::DEFAULT_SNAPSHOT_RATE,
            log_retain: 1000,
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_connections: 1024,
        }
    }

    /// The limits the node's listener enforces.
    pub fn limits(&self) -> shardline_protocol::net::Limits {
        shardline_protocol::net::Limits {
            max_payload: self.max_payload,
            max_in_flight: self.max_in_flight,
            max_connections: self.max_connections,
            ..Default::default()
        }
    }

    /// Checks that the values make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id.is_empty() || self.id.contains(char::is_whitespace) {
            return Err(ConfigError::NodeId(self.id.clone()));
        }
        if self.sync_heartbeat.is_zero() || self.write_timeout.is_zero() || self.peer_timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout);
        }
        if self.peer_timeout <= self.sync_heartbeat {
            return Err(ConfigError::PeerTimeoutTooShort);
        }
        if self.max_in_flight == 0 || self.max_connections == 0 || self.max_payload < 1024 {
            return Err(ConfigError::Limits);
        }
        Ok(())
    }
}

/// Why a node's configuration was refused at start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The node id is empty or has white space.
    #[error("node id `{0}` must be non-empty with no spaces")]
    NodeId(String),
    /// A timeout or the sync heartbeat is zero.
    #[error("timeouts and the sync heartbeat must be above zero")]
    ZeroTimeout,
    /// The peer timeout would expire between two sync heartbeats.
    #[error("the peer timeout must be longer than the sync heartbeat")]
    PeerTimeoutTooShort,
    /// A limit leaves no room for a connection, a request or a useful frame.
    #[error("limits must allow at least one connection, one request and 1 KiB frames")]
    Limits,
}
