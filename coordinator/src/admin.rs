//! The seed's admin operations: Init, AddServers, RemoveServers.
//!
//! Each is checked in full by `plan` first (a refused request changes nothing), then
//! persisted, then carried out: spawn, wait until the nodes answer, configure replicas,
//! elect or re-point primaries, retire voters one at a time. One admin operation runs at a
//! time; meanwhile the reconcile loop still runs elections, and nothing else.

use std::sync::Arc;
use std::time::Instant;

use futures::future::join_all;
use shardline_protocol::{
    AddServersRequest, ControlRequest, ControlResponse, ErrorCode, InitRequest, ShardId, Topology,
};
use tracing::{info, warn};

use crate::cluster::Coordinator;
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

    /// Adds servers (and shards); new replicas of existing shards join as learners: they
    /// catch up from their primary, then serve reads and, one at a time, become voters.
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
                    learners: Vec::new(),
                    unsettled: false,
                };
                m.shards.insert(spec.id, shard);
            }
            for (name, addr) in &addrs {
                m.servers.insert(name.clone(), ServerMeta { addr: addr.clone() });
            }
            for (name, shards) in &plan.servers {
                for id in shards {
                    let shard = m.shards.get_mut(id).expect("planned shards exist");
                    if new_shards.contains(id) {
                        shard.replicas.push(name.clone());
                    } else {
                        // A learner of an existing shard: it votes, and serves reads, only
                        // once it has caught up (its target is set when it follows).
                        shard.learners.push(name.clone());
                        shard.catch_up.insert(name.clone(), u64::MAX);
                    }
                }
            }
            m.next_server = plan.next_server;
        })?;
        for (name, _) in &addrs {
            // A server being started is not a dead one: no respawn while it boots.
            self.just_started(name);
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
        let elections = join_all(new_shards.iter().map(|&id| self.elect(id))).await;
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
            if let Err(e) = self.repoint(id).await {
                warn!(shard = %id, %e, "could not tell the primary its new learner; the reconcile loop will retry");
            }
        }
        self.publish();
        Ok(())
    }

    async fn start_node(&self, name: &str) -> Result<(), ErrorCode> {
        let spec = self.node_spec(name);
        self.spawner.start(&spec).await.map_err(|e| ErrorCode::Internal(e.to_string()))?;
        self.wait_ready(name, &spec.addr).await
    }

    /// Removes `n` servers, the named ones first. Learners go at once; each shard's voters
    /// are retired one at a time, each once the last change has settled (a retired primary
    /// is replaced by an election). A server is stopped once it holds no replica; if a
    /// shard cannot settle in time, what is done stays done and the error says so.
    pub async fn remove_servers(self: &Arc<Self>, n: usize, named: Vec<String>) -> Result<Topology, ErrorCode> {
        let _admin = self.admin.lock().await;
        let chosen = plan::remove_servers(n, &named, &self.meta())?;
        info!(servers = ?chosen, "removing servers");
        let (retire, dropped) = self.update(|m| {
            let (mut retire, mut dropped) = (Vec::new(), Vec::new());
            for shard in m.shards.values_mut() {
                let id = shard.spec.id;
                dropped.extend(shard.learners.iter().filter(|r| chosen.contains(r)).map(|r| (id, r.clone())));
                shard.learners.retain(|r| !chosen.contains(r));
                let voters = shard.replicas.clone();
                shard.catch_up.retain(|r, _| !chosen.contains(r) || voters.contains(r));
                let voters: Vec<String> = shard.replicas.iter().filter(|r| chosen.contains(r)).cloned().collect();
                if !voters.is_empty() {
                    retire.push((shard.spec.id, voters));
                }
            }
            (retire, dropped)
        })?;
        self.publish();
        for (shard, server) in dropped {
            // Best effort: a node that keeps other replicas should not keep following for this one.
            let addr = self.meta().addr(&server).addr;
            let _ = self.control(&addr, &ControlRequest::DropShard { shard }).await;
        }
        let deadline = Instant::now() + self.cfg.ready_timeout;
        let retired = join_all(retire.into_iter().map(|(shard, voters)| async move {
            for server in voters {
                self.retire(shard, &server, deadline).await?;
            }
            Ok::<(), ErrorCode>(())
        }))
        .await;
        let gone: Vec<String> = {
            let meta = self.meta();
            chosen.iter().filter(|s| meta.shards_of(s).next().is_none()).cloned().collect()
        };
        let specs: Vec<_> = gone.iter().map(|s| self.node_spec(s)).collect();
        self.update(|m| {
            for name in &gone {
                m.servers.remove(name);
            }
        })?;
        for name in &gone {
            self.unwatch_server(name);
        }
        for spec in specs {
            if let Err(e) = self.spawner.remove(&spec).await {
                warn!(node = %spec.name, %e, "could not stop a removed node");
            }
        }
        self.publish();
        if let Err(e) = retired.into_iter().collect::<Result<Vec<()>, ErrorCode>>() {
            let left: Vec<&String> = chosen.iter().filter(|s| !gone.contains(s)).collect();
            return Err(ErrorCode::Timeout(format!(
                "{e}; removed {gone:?}, still to remove {left:?}: run the removal again naming them"
            )));
        }
        Ok(self.topology())
    }
}
