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
/// Where the configuration is stored.
const KEY: &str = "cluster-v2";
/// Where versions before learners stored it (read once, then replaced by [`KEY`]).
const LEGACY_KEY: &str = "cluster";

/// One shard: range, term, primary and replicas.
///
/// The replica set changes one voter at a time: a new replica joins as a learner (it gets
/// the log, counts toward no majority), becomes a voter once it has caught up, and a
/// leaving voter is retired; after each change the set is `unsettled` until its primary
/// shows that a majority of the new set holds everything the old one may have committed.
/// So any majority of the set now meets any majority that ever committed an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    /// Identity and key range.
    pub spec: ShardSpec,
    /// The last term handed out for this shard.
    pub term: u64,
    /// The primary elected at `term`, if an election succeeded.
    pub primary: Option<String>,
    /// The voting replicas' servers, the primary included: elections and commits count a
    /// majority of these.
    pub replicas: Vec<String>,
    /// Replicas that must reach this applied index before they serve reads (or vote).
    pub catch_up: BTreeMap<String, u64>,
    /// Replicas catching up: they follow the primary but vote in nothing yet.
    pub learners: Vec<String>,
    /// The last change of the set (or of primary) is not yet known to be settled.
    pub unsettled: bool,
}

impl ShardMeta {
    /// Every server holding a replica: voters, then learners.
    pub fn holders(&self) -> impl Iterator<Item = &String> + '_ {
        self.replicas.iter().chain(&self.learners)
    }

    /// Whether `server` holds a replica (voter or learner).
    pub fn holds(&self, server: &str) -> bool {
        self.holders().any(|r| r == server)
    }

    /// Makes learner `server` a voter, if the set has settled and has a primary; returns
    /// whether it did.
    pub fn promote(&mut self, server: &str) -> bool {
        if self.unsettled || self.primary.is_none() || !self.learners.iter().any(|l| l == server) {
            return false;
        }
        self.learners.retain(|l| l != server);
        self.replicas.push(server.to_owned());
        self.unsettled = true;
        true
    }

    /// Retires voter `server`, if the set has settled and has a primary: `Some(whether it
    /// was the primary)` (the shard then has none), or `None` when it cannot now.
    pub fn retire(&mut self, server: &str) -> Option<bool> {
        if self.unsettled || self.primary.is_none() || !self.replicas.iter().any(|r| r == server) {
            return None;
        }
        self.replicas.retain(|r| r != server);
        self.catch_up.remove(server);
        self.unsettled = true;
        let was_primary = self.primary.as_deref() == Some(server);
        if was_primary {
            self.primary = None;
        }
        Some(was_primary)
    }

    /// `server`, a voter that came back without its replica (a wiped or replaced data
    /// directory), lost whatever it held: it rejoins as a learner, to vote again once it has
    /// caught up, instead of counting toward majorities with an empty log. Removing a voter
    /// that holds nothing keeps every majority of the rest meeting every majority that
    /// committed an entry; keeping it would not. Like any change, only once the last one has
    /// settled (two demoted at once could leave a majority without a holder). Returns
    /// whether it was demoted.
    pub fn demote(&mut self, server: &str) -> bool {
        let voter = self.replicas.iter().any(|r| r == server);
        if !voter || self.unsettled || self.primary.is_none() || self.primary.as_deref() == Some(server) {
            return false;
        }
        self.replicas.retain(|r| r != server);
        self.learners.push(server.to_owned());
        self.catch_up.insert(server.to_owned(), u64::MAX);
        self.unsettled = true;
        true
    }

    /// The replica set a primary of this shard must be told.
    pub fn replica_set(&self) -> ReplicaSet {
        ReplicaSet {
            term: self.term,
            primary: self.primary.clone(),
            voters: self.replicas.clone(),
            learners: self.learners.clone(),
        }
    }
}

/// A shard's replica set as one primary was told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSet {
    /// The term.
    pub term: u64,
    /// The primary.
    pub primary: Option<String>,
    /// Voters, the primary included.
    pub voters: Vec<String>,
    /// Learners.
    pub learners: Vec<String>,
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
        self.shards.values().filter(move |s| s.holds(server))
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
    /// An etcd call failed (no member reachable, timed out, refused).
    #[error("coordinator metadata in etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// The compare-and-swap failed: another coordinator changed the configuration since
    /// this one read it, or this one no longer holds the leadership. Nothing was written.
    #[error("coordinator metadata changed under this coordinator, or it no longer leads: {0}")]
    Conflict(String),
    /// The etcd backend did not answer in time, or its worker is gone.
    #[error("coordinator metadata in etcd unavailable: {0}")]
    Unavailable(String),
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
        if let Some(v) = table.get(KEY).map_err(Wrap)? {
            return postcard::from_bytes(v.value()).map_err(|e| MetaError::Decode(e.to_string()));
        }
        match table.get(LEGACY_KEY).map_err(Wrap)? {
            Some(v) => legacy::decode(v.value()),
            None => Ok(ClusterMeta::default()),
        }
    }

    /// Durably replaces the stored configuration.
    pub fn save(&self, meta: &ClusterMeta) -> Result<(), MetaError> {
        let bytes = postcard::to_allocvec(meta).map_err(|e| MetaError::Decode(e.to_string()))?;
        let tx = self.db.begin_write().map_err(Wrap)?;
        {
            let mut table = tx.open_table(META).map_err(Wrap)?;
            table.insert(KEY, bytes.as_slice()).map_err(Wrap)?;
            table.remove(LEGACY_KEY).map_err(Wrap)?;
        }
        tx.commit().map_err(Wrap)?;
        Ok(())
    }
}

/// The configuration as versions before learners wrote it.
mod legacy {
    use super::*;

    #[derive(Deserialize)]
    struct Shard {
        spec: ShardSpec,
        term: u64,
        primary: Option<String>,
        replicas: Vec<String>,
        catch_up: BTreeMap<String, u64>,
    }

    #[derive(Deserialize)]
    struct Cluster {
        schema: Option<Schema>,
        shards: BTreeMap<ShardId, Shard>,
        servers: BTreeMap<String, ServerMeta>,
        version: u64,
        next_server: u64,
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<ClusterMeta, MetaError> {
        let old: Cluster = postcard::from_bytes(bytes).map_err(|e| MetaError::Decode(e.to_string()))?;
        let shards = old
            .shards
            .into_iter()
            .map(|(id, s)| {
                let shard = ShardMeta {
                    spec: s.spec,
                    term: s.term,
                    primary: s.primary,
                    replicas: s.replicas,
                    catch_up: s.catch_up,
                    learners: Vec::new(),
                    unsettled: true,
                };
                (id, shard)
            })
            .collect();
        Ok(ClusterMeta {
            schema: old.schema,
            shards,
            servers: old.servers,
            version: old.version,
            next_server: old.next_server,
        })
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
