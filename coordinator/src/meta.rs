//! The cluster's configuration as the coordinator persists it, and the redb file it lives in.
//!
//! Every change is written (with `Durability::Immediate`) before the coordinator acts on
//! it: in particular a shard's term is persisted before any replica hears of it, so a
//! restarted coordinator resumes the same cluster and never hands out a term twice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use shardline_protocol::{Schema, ServerAddr, ShardId, ShardSpec};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// One shard: range, term, primary and replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    /// Identity and key range.
    pub spec: ShardSpec,
    /// The last term handed out for this shard.
    pub term: u64,
    /// The primary elected at `term`, if an election succeeded.
    pub primary: Option<String>,
    /// Every replica's server, the primary included.
    pub replicas: Vec<String>,
    /// Replicas that must reach this applied index before they serve reads.
    pub catch_up: BTreeMap<String, u64>,
}

/// One server: where it listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerMeta {
    /// `host:port` the coordinator, peers and balancers reach it at.
    pub addr: String,
}

/// The whole cluster configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeta {
    /// The schema; `None` until Init.
    pub schema: Option<Schema>,
    /// Shards by id.
    pub shards: BTreeMap<ShardId, ShardMeta>,
    /// Servers by name.
    pub servers: BTreeMap<String, ServerMeta>,
    /// The topology version last published.
    pub version: u64,
    /// Number for the next generated server name.
    pub next_server: u64,
}

impl ClusterMeta {
    /// A server's name and address, as role messages carry it.
    pub fn addr(&self, server: &str) -> ServerAddr {
        let addr = self.servers.get(server).map(|s| s.addr.clone()).unwrap_or_default();
        ServerAddr { name: server.to_owned(), addr }
    }

    /// The shards `server` holds a replica of.
    pub fn shards_of<'a>(&'a self, server: &'a str) -> impl Iterator<Item = &'a ShardMeta> + 'a {
        self.shards.values().filter(move |s| s.replicas.iter().any(|r| r == server))
    }

    /// Every server name in use.
    pub fn server_names(&self) -> BTreeSet<String> {
        self.servers.keys().cloned().collect()
    }
}

/// Why the metadata store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    /// redb failed.
    #[error("coordinator metadata: {0}")]
    Redb(#[from] redb::Error),
    /// The data directory could not be created.
    #[error("coordinator data directory: {0}")]
    Io(#[from] std::io::Error),
    /// The stored configuration does not decode.
    #[error("coordinator metadata does not decode: {0}")]
    Decode(String),
}

impl<E: Into<redb::Error>> From<Wrap<E>> for MetaError {
    fn from(e: Wrap<E>) -> MetaError {
        MetaError::Redb(e.0.into())
    }
}

/// Lets `?` turn any redb error into a [`MetaError`].
struct Wrap<E>(E);

/// The coordinator's redb file.
#[derive(Debug)]
pub struct MetaStore {
    db: Database,
}

impl MetaStore {
    /// Opens or creates `<dir>/coordinator.redb`.
    pub fn open(dir: &Path) -> Result<MetaStore, MetaError> {
        std::fs::create_dir_all(dir)?;
        let db = Database::create(dir.join("coordinator.redb")).map_err(Wrap)?;
        Ok(MetaStore { db })
    }

    /// The stored configuration (empty if none was ever saved).
    pub fn load(&self) -> Result<ClusterMeta, MetaError> {
        let tx = self.db.begin_read().map_err(Wrap)?;
        let table = match tx.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(ClusterMeta::default()),
            Err(e) => return Err(Wrap(e).into()),
        };
        match table.get("cluster").map_err(Wrap)? {
            Some(v) => postcard::from_bytes(v.value()).map_err(|e| MetaError::Decode(e.to_string())),
            None => Ok(ClusterMeta::default()),
        }
    }

    /// Durably replaces the stored configuration.
    pub fn save(&self, meta: &ClusterMeta) -> Result<(), MetaError> {
        let bytes = postcard::to_allocvec(meta).map_err(|e| MetaError::Decode(e.to_string()))?;
        let tx = self.db.begin_write().map_err(Wrap)?;
        tx.open_table(META).map_err(Wrap)?.insert("cluster", bytes.as_slice()).map_err(Wrap)?;
        tx.commit().map_err(Wrap)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), ClusterMeta::default());
        let mut meta = ClusterMeta { schema: Some(Schema::seed()), version: 3, ..Default::default() };
        meta.servers.insert("Server0".into(), ServerMeta { addr: "127.0.0.1:7200".into() });
        store.save(&meta).unwrap();
        drop(store);
        assert_eq!(MetaStore::open(dir.path()).unwrap().load().unwrap(), meta);
    }
}
