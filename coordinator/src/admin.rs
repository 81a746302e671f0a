//! The seed's admin operations: Init, AddServers, RemoveServers.
//!
//! Each is checked in full by `plan` first (a refused request changes nothing), then
//! persisted, then carried out: spawn, wait until the nodes answer, configure replicas,
//! elect or re-point primaries. One admin operation runs at a time, and not while the
//! reconcile loop acts.

use std::sync::Arc;

use futures::future::join_all;
use shardline_protocol::{
    AddServersRequest, ControlRequest, ControlResponse, ErrorCode, InitRequest, ServerAddr, ShardId, Topology,
};
use tracing::{info, warn};

use crate::cluster::Coordinator;
use crate::failover::majority;
use crate::meta::{ServerMeta, ShardMeta};
use crate::plan::{self, AddPlan};

impl Coordinator {
    /// Creates the cluster: schema, shards, servers; spawns and configures the nodes and
    /// elects every shard's first primary.
    pub async fn init(self: &Arc<Self>, request: InitRequest) -> Result<Topology, ErrorCode> {
        let _admin = self.admin.lock().await;
        let plan = plan::init(&request, &self.meta())?;
        let schema = request.schema.clone();
        self.update(|m| m.schema = Some(schema))?;
        info!(servers = plan.servers.len(), shards = plan.new_shards.len(), "initializing the cluster");
        self.carry_out(plan).await?;
        Ok(self.topology())
    }

    /// Adds servers (and shards); new replicas of existing shards catch up from their
    /// primary and serve reads only once they hold everything it had committed.
    pub async fn add_servers(self: &Arc<Self>, request: AddServersRequest) -> Result<Topology, ErrorCode> {
        let _admin = self.admin.lock().await;
        if self.meta().schema.is_none() {
            return Err(ErrorCode::BadRequest("the cluster is not initialized yet: init it first".into()));
        }
        let plan = plan::add_servers(&request, &self.meta())?;
        info!(servers = plan.servers.len(), shards = plan.new_shards.len(), "adding servers");
        self.carry_out(plan).await?;
        Ok(self.topology())
    }

    /// Persists, spawns, configures and elects for an [`AddPlan`].
    async fn carry_out(self: &Arc<Self>, plan: AddPlan) -> Result<(), ErrorCode> {
        let mut addrs = Vec::new();
        for name in plan.servers.keys() {
            addrs.push((name.clone(), self.spawner.address_for(name).map_err(|e| ErrorCode::Internal(e.to_string()))?));
        }
        let new_shards: Vec<ShardId> = plan.new_shards.iter().map(|s| s.id).collect();
        self.update(|m| {
            for spec in &plan.new_shards {
                let shard = ShardMeta {
                    spec: *spec,
                    term: 0,
                    primary: None,
                    replicas: Vec::new(),
                    catch_up: Default::default(),
                };
                m.shards.insert(spec.id, shard);
            }
            for (name, addr) in &addrs {
                m.servers.insert(name.clone(), ServerMeta { addr: addr.clone() });
            }
            for (name, shards) in &plan.servers {
                for id in shards {
                    let shard = m.shards.get_mut(id).expect("planned shards exist");
                    shard.replicas.push(name.clone());
                    if !new_shards.contains(id) {
                        // Not readable until it has caught up; the target is set below.
                        shard.catch_up.insert(name.clone(), u64::MAX);
                    }
                }
            }
            m.next_server = plan.next_server;
        })?;
        for (name, _) in &addrs {
            self.watch_server(name);
        }
        let started = join_all(addrs.iter().map(|(name, _)| self.start_node(name))).await;
        started.into_iter().collect::<Result<Vec<()>, ErrorCode>>()?;

        let schema = self.meta().schema.clone().expect("initialized");
        let mut configure = Vec::new();
        for (name, shards) in &plan.servers {
            let addr = self.meta().addr(name).addr;
            for id in shards {
                let spec = self.meta().shards[id].spec;
                let request = ControlRequest::ConfigureShard { shard: spec, schema: schema.clone() };
                let addr = addr.clone();
                configure.push(async move { (addr.clone(), self.control(&addr, &request).await) });
            }
        }
        for (addr, answer) in join_all(configure).await {
            match answer {
                Ok(ControlResponse::Ok) => {}
                Ok(other) => return Err(ErrorCode::Internal(format!("configuring a shard on {addr}: {other:?}"))),
                Err(e) => return Err(e),
            }
        }
        let elections = join_all(new_shards.iter().map(|&id| self.elect(id, None))).await;
        for (id, result) in new_shards.iter().zip(elections) {
            if let Err(e) = result {
                warn!(shard = %id, %e, "first election failed; the reconcile loop will retry");
            }
        }
        let grown: Vec<ShardId> = self
            .meta()
            .shards
            .values()
            .filter(|s| !new_shards.contains(&s.spec.id) && s.catch_up.values().any(|&t| t == u64::MAX))
            .map(|s| s.spec.id)
            .collect();
        for id in grown {
            self.repoint(id).await?;
        }
        self.publish();
        Ok(())
    }

    async fn start_node(&self, name: &str) -> Result<(), ErrorCode> {
        let spec = self.node_spec(name);
        self.spawner.start(&spec).await.map_err(|e| ErrorCode::Internal(e.to_string()))?;
        self.wait_ready(name, &spec.addr).await
    }

    /// Tells a shard's primary its (changed) follower set at the same term, and new
    /// replicas to follow it; new replicas get their catch-up target.
    async fn repoint(&self, shard: ShardId) -> Result<(), ErrorCode> {
        let (term, primary, followers, fresh) = {
            let meta = self.meta();
            let s = &meta.shards[&shard];
            let Some(p) = &s.primary else { return Ok(()) };
            let followers: Vec<ServerAddr> = s.replicas.iter().filter(|r| *r != p).map(|r| meta.addr(r)).collect();
            let fresh: Vec<String> =
                s.catch_up.iter().filter(|(_, t)| **t == u64::MAX).map(|(n, _)| n.clone()).collect();
            (s.term, meta.addr(p), followers, fresh)
        };
        let target = {
            let health = self.health.lock().expect("health lock");
            health.status.get(&primary.name).and_then(|st| st.shard(shard)).map_or(0, |st| st.last.index)
        };
        self.update(|m| {
            if let Some(s) = m.shards.get_mut(&shard) {
                for name in &fresh {
                    s.catch_up.insert(name.clone(), target);
                }
            }
        })?;
        let follow = ControlRequest::BecomeFollower { shard, term, primary: primary.clone() };
        for f in followers.iter().filter(|f| fresh.contains(&f.name)) {
            self.control(&f.addr, &follow).await?;
            self.role_changed(shard, &f.name);
        }
        let lease_ms = self.cfg.lease.as_millis() as u64;
        let lead = ControlRequest::BecomePrimary { shard, term, followers, lease_ms };
        match self.control(&primary.addr, &lead).await? {
            ControlResponse::Ok => {
                self.role_changed(shard, &primary.name);
                info!(%shard, primary = %primary.name, new = ?fresh, "primary told its new followers");
                Ok(())
            }
            ControlResponse::Error(e) => Err(e),
            other => Err(ErrorCode::Internal(format!("unexpected answer {other:?}"))),
        }
    }

    /// Removes `n` servers, the named ones first; re-elects where a primary leaves.
    pub async fn remove_servers(self: &Arc<Self>, n: usize, named: Vec<String>) -> Result<Topology, ErrorCode> {
        let _admin = self.admin.lock().await;
        let chosen = plan::remove_servers(n, &named, &self.meta())?;
        info!(servers = ?chosen, "removing servers");
        let specs: Vec<_> = chosen.iter().map(|s| self.node_spec(s)).collect();
        let mut reelect = Vec::new();
        let mut repoint = Vec::new();
        self.update(|m| {
            for shard in m.shards.values_mut() {
                let before = shard.replicas.len();
                shard.replicas.retain(|r| !chosen.contains(r));
                shard.catch_up.retain(|r, _| !chosen.contains(r));
                if shard.replicas.len() == before {
                    continue;
                }
                if shard.primary.as_ref().is_some_and(|p| chosen.contains(p)) {
                    shard.primary = None;
                    // Votes needed so that any entry committed by the old set is seen.
                    let needed = majority(shard.replicas.len()).max(before - majority(before) + 1);
                    reelect.push((shard.spec.id, needed));
                } else {
                    repoint.push(shard.spec.id);
                }
            }
            for name in &chosen {
                m.servers.remove(name);
            }
        })?;
        for name in &chosen {
            self.unwatch_server(name);
        }
        for (shard, needed) in reelect {
            if let Err(e) = self.elect(shard, Some(needed)).await {
                warn!(%shard, %e, "re-election after removal failed; the reconcile loop will retry");
            }
        }
        for shard in repoint {
            if let Err(e) = self.repoint(shard).await {
                warn!(%shard, %e, "could not tell the primary its new followers");
            }
        }
        for spec in specs {
            if let Err(e) = self.spawner.remove(&spec).await {
                warn!(node = %spec.name, %e, "could not stop a removed node");
            }
        }
        self.publish();
        Ok(self.topology())
    }
}
