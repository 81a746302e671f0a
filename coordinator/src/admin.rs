//! The seed's admin operations: Init, AddServers, RemoveServers.
//!
//! Each is checked in full by `plan` first (a refused request changes nothing), then
//! persisted, then carried out: spawn, wait until the nodes answer, configure replicas,
//! elect or re-point primaries (through the core), queue voters for the core to retire one at
//! a time. One admin operation runs at a time; meanwhile the reconcile loop still runs
//! elections and the queued retirements, and nothing else.

use std::sync::Arc;
use std::time::Instant;

use futures::future::join_all;
use shardline_protocol::{
    AddServersRequest, ControlRequest, ControlResponse, ErrorCode, InitRequest, ShardId, Topology,
};
use tracing::{info, warn};

use crate::cluster::Coordinator;
use crate::error::CoordinatorError;
use crate::failover::POLL;
use crate::meta::{ServerMeta, ShardMeta};
use crate::plan::{self, AddPlan};

impl Coordinator {
    /// Creates the cluster: schema, shards, servers; spawns and configures the nodes and
    /// elects every shard's first primary.
    pub async fn init(self: &Arc<Self>, request: InitRequest) -> Result<Topology, CoordinatorError> {
        let _admin = self.admin.lock().await;
        let plan = plan::init(&request, &self.meta())?;
        let schema = request.schema.clone();
        self.update(|m| m.schema = Some(schema))?;
        info!(servers = plan.servers.len(), shards = plan.new_shards.len(), "initializing the cluster");
        self.apply(plan).await?;
        Ok(self.topology())
    }

    /// Adds servers (and shards); new replicas of existing shards join as learners: they
    /// catch up from their primary, then serve reads and, one at a time, become voters.
    pub async fn add_servers(self: &Arc<Self>, request: AddServersRequest) -> Result<Topology, CoordinatorError> {
        let _admin = self.admin.lock().await;
        if self.meta().schema.is_none() {
            return Err(ErrorCode::BadRequest("the cluster is not initialized yet: init it first".into()).into());
        }
        let plan = plan::add_servers(&request, &self.meta())?;
        info!(servers = plan.servers.len(), shards = plan.new_shards.len(), "adding servers");
        self.apply(plan).await?;
        Ok(self.topology())
    }

    /// Persists, spawns, configures and elects for an [`AddPlan`].
    async fn apply(self: &Arc<Self>, plan: AddPlan) -> Result<(), CoordinatorError> {
        let mut addrs = Vec::new();
        for name in plan.servers.keys() {
            addrs.push((name.clone(), self.spawner.address_for(name)?));
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
                for id in shards.iter().filter(|id| new_shards.contains(id)) {
                    m.shards.get_mut(id).expect("planned shards exist").replicas.push(name.clone());
                }
            }
            m.next_server = plan.next_server;
        })?;
        for (name, _) in &addrs {
            // A server being started is not a dead one: no respawn while it boots.
            self.core().just_started(name, Instant::now());
            self.watch_server(name);
        }
        let started = join_all(addrs.iter().map(|(name, _)| self.start_node(name))).await;
        started.into_iter().collect::<Result<Vec<()>, CoordinatorError>>()?;

        let schema = self.meta().schema.clone().expect("initialized");
        let mut configure = Vec::new();
        for (name, shards) in &plan.servers {
            let addr = self.meta().addr(name).addr;
            for id in shards.iter().filter(|id| new_shards.contains(id)) {
                let spec = self.meta().shards[id].spec;
                let request = ControlRequest::ConfigureShard { shard: spec, schema: schema.clone() };
                let addr = addr.clone();
                configure.push(async move { (addr.clone(), self.control(&addr, &request).await) });
            }
        }
        for (addr, answer) in join_all(configure).await {
            match answer {
                Ok(ControlResponse::Ok) => {}
                Ok(ControlResponse::Error(code)) => return Err(code.into()),
                Ok(other) => return Err(CoordinatorError::Unexpected { addr, answer: format!("{other:?}") }),
                Err(e) => return Err(e),
            }
        }
        let elections = join_all(new_shards.iter().map(|&id| self.elect(id))).await;
        for (id, result) in new_shards.iter().zip(elections) {
            if let Err(e) = result {
                warn!(shard = %id, %e, "first election failed; the reconcile loop will retry");
            }
        }
        // Replicas of existing shards join through the core, as learners: configured
        // empty, then following, the primary told its new set; promoted once caught up.
        let learners: Vec<(ShardId, String)> = plan
            .servers
            .iter()
            .flat_map(|(name, shards)| {
                shards.iter().filter(|id| !new_shards.contains(id)).map(|id| (*id, name.clone()))
            })
            .collect();
        let effects = {
            let mut core = self.core();
            let now = Instant::now();
            learners.iter().flat_map(|(id, name)| core.add_replica(*id, name, now)).collect()
        };
        self.carry_out(effects);
        self.wait_joined(&learners).await?;
        self.publish();
        Ok(())
    }

    /// Waits until every new learner has been configured and told to follow (the core's
    /// calls for it have ended); errs naming those that have not followed.
    async fn wait_joined(&self, learners: &[(ShardId, String)]) -> Result<(), CoordinatorError> {
        let deadline = Instant::now() + self.cfg.call_timeout * 3;
        while Instant::now() < deadline && learners.iter().any(|(id, name)| self.core().joining(*id, name)) {
            tokio::time::sleep(POLL).await;
        }
        let core = self.core();
        let late: Vec<&(ShardId, String)> = learners.iter().filter(|(id, name)| !core.followed(*id, name)).collect();
        match late.first() {
            None => Ok(()),
            Some((shard, _)) => Err(ErrorCode::Unavailable {
                shard: *shard,
                reason: format!(
                    "added as learners but not yet following: {late:?}; the coordinator keeps configuring them"
                ),
            }
            .into()),
        }
    }

    async fn start_node(&self, name: &str) -> Result<(), CoordinatorError> {
        let spec = self.node_spec(name);
        self.spawner.start(&spec).await?;
        self.wait_ready(name, &spec.addr).await
    }

    /// Removes `n` servers, the named ones first. Learners go at once; each shard's voters
    /// are queued in the core, which retires them one at a time, each once the last change
    /// has settled (a retired primary is replaced by an election). A server is stopped once
    /// it holds no replica; if a shard cannot settle in time, what is done stays done and
    /// the error says so.
    pub async fn remove_servers(self: &Arc<Self>, n: usize, named: Vec<String>) -> Result<Topology, CoordinatorError> {
        let _admin = self.admin.lock().await;
        let chosen = plan::remove_servers(n, &named, &self.meta())?;
        info!(servers = ?chosen, "removing servers");
        let shards: Vec<ShardId> = {
            let mut core = self.core();
            let now = Instant::now();
            let mut effects = Vec::new();
            let mut queued = Vec::new();
            for shard in core.meta().shards.values().cloned().collect::<Vec<_>>() {
                let id = shard.spec.id;
                for server in shard.learners.iter().chain(&shard.replicas).filter(|r| chosen.contains(r)) {
                    effects.extend(core.remove_replica(id, server, now));
                }
                if !core.leaving(id).is_empty() {
                    queued.push(id);
                }
            }
            drop(core);
            self.carry_out(effects);
            queued
        };
        self.publish();
        let retired = self.wait_retired(&shards).await;
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
        if let Err(e) = retired {
            let left: Vec<&String> = chosen.iter().filter(|s| !gone.contains(s)).collect();
            return Err(ErrorCode::Timeout(format!(
                "{e}; removed {gone:?}, still to remove {left:?}: run the removal again naming them"
            ))
            .into());
        }
        Ok(self.topology())
    }

    /// Waits until the core has retired every voter queued for `shards` and each has a
    /// primary again; at the deadline, gives up on what is left (it stays queued no more).
    async fn wait_retired(&self, shards: &[ShardId]) -> Result<(), String> {
        let deadline = Instant::now() + self.cfg.ready_timeout;
        loop {
            let waiting: Vec<ShardId> = {
                let core = self.core();
                let busy = |id: &ShardId| {
                    let headless = core.meta().shards.get(id).is_some_and(|s| s.primary.is_none());
                    !core.leaving(*id).is_empty() || headless || core.electing(*id)
                };
                shards.iter().copied().filter(busy).collect()
            };
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let mut core = self.core();
                let left: Vec<(ShardId, Vec<String>)> =
                    waiting.iter().map(|&id| (id, core.cancel_retire(id))).collect();
                return Err(format!(
                    "shards {waiting:?} did not finish in time (left to retire: {left:?}): retiring a voter needs \
                     a primary whose replica set has settled (its primary must show a majority of the set \
                     holding its log) and a majority of healthy voters left without it"
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
