//! Starting and stopping storage nodes: the `Spawner` trait and its backends.
//!
//! - [`ProcessSpawner`]: child processes of the coordinator (for `shardline up` and tests).
//! - [`DockerSpawner`]: containers on a Docker network, through the Docker Engine API.
//! - [`ExternalSpawner`]: nodes run by someone else (systemd, Kubernetes); the coordinator
//!   only elects and configures.
//!
//! The trait is object safe (`Box<dyn Spawner>`), so the binary picks a backend by flag.

mod docker;
mod external;
mod process;

use std::path::PathBuf;

use futures::future::BoxFuture;

pub use docker::{container_name, DockerConfig, DockerError, DockerSpawner, MANAGED_LABEL, NODE_PORT};
pub use external::ExternalSpawner;
pub use process::ProcessSpawner;

/// A node to start: its name, where it listens, and where its data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// The server's name.
    pub name: String,
    /// The `host:port` it listens on (and is reached at).
    pub addr: String,
    /// Its data directory.
    pub data_dir: PathBuf,
}

/// Why a spawner could not do what it was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// Starting the node failed.
    #[error("starting {name}: {reason}")]
    Start {
        /// The node.
        name: String,
        /// Why.
        reason: String,
    },
    /// Stopping or removing the node failed.
    #[error("stopping {name}: {reason}")]
    Stop {
        /// The node.
        name: String,
        /// Why.
        reason: String,
    },
    /// This backend does not know where the node is.
    #[error("no address is known for {0}: give it with --node NAME=HOST:PORT")]
    NoAddress(String),
}

/// Starts, restarts and removes storage nodes.
pub trait Spawner: Send + Sync + std::fmt::Debug {
    /// The address a new node called `name` will listen on (allocated now, kept forever).
    fn address_for(&self, name: &str) -> Result<String, SpawnError>;

    /// Starts the node (again, on its existing data, if it ran before). Starting a node
    /// that is running is a no-op.
    fn start(&self, node: &NodeSpec) -> BoxFuture<'_, Result<(), SpawnError>>;

    /// Whether this backend can restart the node if it dies (all but external ones can).
    fn can_restart(&self) -> bool {
        true
    }

    /// Stops the node and deletes its data (RemoveServers).
    fn remove(&self, node: &NodeSpec) -> BoxFuture<'_, Result<(), SpawnError>>;

    /// Stops every node this backend started (coordinator shutdown).
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}
