//! Nodes run by someone else: the coordinator never starts or stops a process.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::{NodeSpec, SpawnError, Spawner};

/// Knows each node's address from configuration (`--node NAME=HOST:PORT`).
#[derive(Debug, Clone, Default)]
pub struct ExternalSpawner {
    addresses: BTreeMap<String, String>,
}

impl ExternalSpawner {
    /// A spawner for nodes at the given addresses.
    pub fn new(addresses: BTreeMap<String, String>) -> ExternalSpawner {
        ExternalSpawner { addresses }
    }
}

impl Spawner for ExternalSpawner {
    fn address_for(&self, name: &str) -> Result<String, SpawnError> {
        self.addresses.get(name).cloned().ok_or_else(|| SpawnError::NoAddress(name.to_owned()))
    }

    fn start(&self, _node: &NodeSpec) -> BoxFuture<'_, Result<(), SpawnError>> {
        async { Ok(()) }.boxed()
    }

    fn can_restart(&self) -> bool {
        false
    }

    fn remove(&self, _node: &NodeSpec) -> BoxFuture<'_, Result<(), SpawnError>> {
        async { Ok(()) }.boxed()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        async {}.boxed()
    }
}
