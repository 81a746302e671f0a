//! The coordinator's driver: it owns the configuration, the heartbeat tasks, the
//! reconcile loop and the published topology. The decisions themselves are pure
//! (`detector`, `reconcile`, `election`, `plan`); this module does the I/O they ask for.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shardline_protocol::net::Conn;
use shardline_protocol::{
    ControlRequest, ControlResponse, ErrorCode, NodeStatus, Request, Response, ServerInfo, ShardId, ShardTopology,
    Topology,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};

use crate::config::CoordinatorConfig;
use crate::detector::FailureDetector;
use crate::lease::LeaseBook;
use crate::meta::ShardMeta;
use crate::meta::{ClusterMeta, MetaError, MetaStore, ReplicaSet};
use crate::reconcile::{self, Action, Observed};
use crate::spawner::{NodeSpec, Spawner};

/// What heartbeats have shown.
#[derive(Debug)]
pub(crate) struct Health {
    pub detector: FailureDetector,
    pub status: HashMap<String, NodeStatus>,
    /// When the heartbeat that brought each status was sent.
    pub asked: HashMap<String, Instant>,
    /// When each (shard, server) role change was acknowledged.
    pub roles: HashMap<(ShardId, String), Instant>,
    /// The replica set each shard's primary last acknowledged.
    pub told: HashMap<ShardId, ReplicaSet>,
}

impl Health {
    /// Whether `server`'s status was asked for after its last role change on `shard`.
    pub fn fresh(&self, shard: ShardId, server: &str) -> bool {
        match (self.roles.get(&(shard, server.to_owned())), self.asked.get(server)) {
            (Some(changed), Some(asked)) => asked > changed,
            (Some(_), None) => false,
            (None, _) => true,
        }
    }
}

/// Counters for STATS.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub elections: u64,
    pub failed_elections: u64,
    pub respawns: u64,
    pub last_election_ms: u64,
}

/// The coordinator.
#[derive(Debug)]
pub struct Coordinator {
    pub(crate) cfg: CoordinatorConfig,
    store: MetaStore,
    pub(crate) meta: Mutex<ClusterMeta>,
    pub(crate) health: Mutex<Health>,
    pub(crate) spawner: Box<dyn Spawner>,
    /// Serializes admin operations; while one runs, the reconcile loop only elects.
    pub(crate) admin: tokio::sync::Mutex<()>,
    /// Shards with an election under way.
    pub(crate) electing: Mutex<HashSet<ShardId>>,
    topology: watch::Sender<Topology>,
    heartbeats: Mutex<HashMap<String, JoinHandle<()>>>,
    respawned: Mutex<HashMap<String, Instant>>,
    backoff: Mutex<HashMap<ShardId, Instant>>,
    /// Leases granted: a new primary leads only once its predecessor's have ended.
    pub(crate) leases: Mutex<LeaseBook>,
    pub(crate) counters: Mutex<Counters>,
}

impl Coordinator {
    /// Loads the cluster from the data directory and starts heartbeating its nodes.
    pub fn open(cfg: CoordinatorConfig, spawner: Box<dyn Spawner>) -> Result<Arc<Coordinator>, MetaError> {
        let store = MetaStore::open(&cfg.data_dir)?;
        let meta = store.load()?;
        info!(servers = meta.servers.len(), shards = meta.shards.len(), version = meta.version, "cluster loaded");
        let detector = FailureDetector::new(cfg.dead_after, Instant::now());
        let leases = Mutex::new(LeaseBook::new(cfg.lease));
        let coordinator = Arc::new(Coordinator {
            topology: watch::channel(Topology { version: meta.version, ..Default::default() }).0,
            cfg,
            store,
            meta: Mutex::new(meta),
            health: Mutex::new(Health {
                detector,
                status: HashMap::new(),
                asked: HashMap::new(),
                roles: HashMap::new(),
                told: HashMap::new(),
            }),
            spawner,
            admin: tokio::sync::Mutex::new(()),
            electing: Mutex::new(HashSet::new()),
            heartbeats: Mutex::new(HashMap::new()),
            respawned: Mutex::new(HashMap::new()),
            backoff: Mutex::new(HashMap::new()),
            leases,
            counters: Mutex::new(Counters::default()),
        });
        let servers: Vec<String> = coordinator.meta().servers.keys().cloned().collect();
        for name in servers {
            coordinator.watch_server(&name);
        }
        coordinator.publish();
        Ok(coordinator)
    }

    pub(crate) fn meta(&self) -> std::sync::MutexGuard<'_, ClusterMeta> {
        self.meta.lock().expect("meta lock")
    }

    /// Changes the configuration and persists it before anyone acts on the change.
    pub(crate) fn update<T>(&self, change: impl FnOnce(&mut ClusterMeta) -> T) -> Result<T, ErrorCode> {
        let mut meta = self.meta();
        let mut next = meta.clone();
        let out = change(&mut next);
        self.store.save(&next).map_err(|e| ErrorCode::Internal(e.to_string()))?;
        *meta = next;
        Ok(out)
    }

    /// The topology now.
    pub fn topology(&self) -> Topology {
        self.topology.borrow().clone()
    }

    /// A receiver of every new topology.
    pub fn subscribe(&self) -> watch::Receiver<Topology> {
        self.topology.subscribe()
    }

    /// Recomputes the topology; if it changed, bumps and persists the version and pushes it.
    pub(crate) fn publish(&self) {
        let now = Instant::now();
        let mut meta = self.meta();
        let health = self.health.lock().expect("health lock");
        let observe = |s: &str| Observed { alive: health.detector.alive(s, now), status: health.status.get(s) };
        let shards = meta
            .shards
            .values()
            .map(|s| ShardTopology {
                spec: s.spec,
                term: s.term,
                primary: s.primary.clone(),
                // Voters, then learners still catching up (not readable until they have).
                replicas: s.holders().cloned().collect(),
                readable: reconcile::readable(s, observe),
            })
            .collect();
        let servers = meta
            .servers
            .iter()
            .map(|(name, s)| ServerInfo {
                name: name.clone(),
                addr: s.addr.clone(),
                healthy: health.detector.alive(name, now),
                last_heartbeat_ms: health.detector.age(name, now).map(|d| d.as_millis() as u64),
            })
            .collect();
        drop(health);
        let mut next = Topology { version: meta.version, schema: meta.schema.clone(), shards, servers };
        let current = self.topology.borrow().clone();
        if same_shape(&current, &next) {
            // Only heartbeat ages moved: refresh them for STATUS without a new version.
            self.topology.send_replace(next);
            return;
        }
        let mut persisted = meta.clone();
        persisted.version += 1;
        if let Err(e) = self.store.save(&persisted) {
            warn!(%e, "could not persist the topology version; not publishing");
            return;
        }
        *meta = persisted;
        next.version = meta.version;
        debug!(version = next.version, "topology changed");
        self.topology.send_replace(next);
    }

    /// Starts heartbeating `server` (idempotent).
    pub(crate) fn watch_server(self: &Arc<Self>, server: &str) {
        let mut tasks = self.heartbeats.lock().expect("heartbeats lock");
        if tasks.contains_key(server) {
            return;
        }
        let me = self.clone();
        let name = server.to_owned();
        let span = tracing::info_span!("heartbeat", node = %name);
        tasks.insert(server.to_owned(), tokio::spawn(async move { me.heartbeat_loop(name).await }.instrument(span)));
    }

    /// Stops heartbeating `server` and forgets its health.
    pub(crate) fn unwatch_server(&self, server: &str) {
        if let Some(task) = self.heartbeats.lock().expect("heartbeats lock").remove(server) {
            task.abort();
        }
        let mut health = self.health.lock().expect("health lock");
        health.detector.forget(server);
        health.status.remove(server);
        health.asked.remove(server);
        health.roles.retain(|(_, s), _| s != server);
    }

    /// Gives a server the coordinator is starting now the grace of a fresh one: neither
    /// dead nor due a respawn until it has had the time to answer.
    pub(crate) fn just_started(&self, server: &str) {
        let now = Instant::now();
        self.health.lock().expect("health lock").detector.heard(server, now);
        self.respawned.lock().expect("respawn lock").insert(server.to_owned(), now);
    }

    /// Records that `shard`'s primary acknowledged replica set `set`.
    pub(crate) fn told(&self, shard: ShardId, set: ReplicaSet) {
        self.health.lock().expect("health lock").told.insert(shard, set);
    }

    async fn heartbeat_loop(self: Arc<Self>, server: String) {
        let mut tick = tokio::time::interval(self.cfg.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut conn: Option<Conn> = None;
        let lease_ms = self.cfg.lease.as_millis() as u64;
        let timeout = self.cfg.dead_after / 2;
        let mut seq = 0u64;
        let mut answered: Option<(u64, Instant)> = None;
        loop {
            tick.tick().await;
            let addr = self.meta().addr(&server).addr;
            if conn.is_none() {
                conn = Conn::connect(&addr, timeout, self.cfg.limits.max_payload).await.ok();
            }
            let Some(c) = conn.as_mut() else { continue };
            seq += 1;
            let grant = answered.and_then(|(k, at)| {
                let meta = self.meta();
                self.leases.lock().expect("leases lock").grant(&meta, &server, k, at)
            });
            let asked = Instant::now();
            match c.call::<_, ControlResponse>(&ControlRequest::Heartbeat { seq, lease_ms, grant }, timeout).await {
                Ok(ControlResponse::Status(status)) => {
                    let now = Instant::now();
                    answered = Some((seq, now));
                    let mut health = self.health.lock().expect("health lock");
                    health.detector.heard(&server, now);
                    health.status.insert(server.clone(), status);
                    health.asked.insert(server.clone(), asked);
                }
                Ok(other) => {
                    debug!(?other, "unexpected heartbeat answer");
                    conn = None;
                }
                Err(e) => {
                    debug!(%e, "heartbeat failed");
                    conn = None;
                }
            }
        }
    }

    /// Runs the reconcile loop until the process ends.
    pub async fn reconcile_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.cfg.heartbeat_interval / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // An admin operation under way (spawning, configuring, retiring replicas) does
            // not hold up failover elsewhere: elections run whatever else is going on.
            let admin = self.admin.try_lock().ok();
            let actions = {
                let now = Instant::now();
                let meta = self.meta();
                let health = self.health.lock().expect("health lock");
                let observe = |s: &str| Observed { alive: health.detector.alive(s, now), status: health.status.get(s) };
                let told = |s: &ShardMeta| health.told.get(&s.spec.id) == Some(&s.replica_set());
                reconcile::reconcile(&meta, observe, |shard, s| health.fresh(shard, s), told)
            };
            // Elections first: a shard without a primary takes no writes, while a restart
            // (a container start can take half a second) only restores a replica.
            let elections: Vec<ShardId> = actions
                .iter()
                .filter_map(|a| match a {
                    Action::Elect(shard) if self.may_elect(*shard) => Some(*shard),
                    _ => None,
                })
                .collect();
            let results = futures::future::join_all(elections.iter().map(|&s| self.elect(s))).await;
            for (shard, result) in elections.into_iter().zip(results) {
                if let Err(e) = result {
                    warn!(%shard, %e, "election failed; will retry");
                    self.backoff.lock().expect("backoff lock").insert(shard, Instant::now());
                }
            }
            self.publish();
            if admin.is_none() {
                continue;
            }
            for action in actions {
                match action {
                    Action::Elect(_) => {}
                    Action::Follow { shard, server } => self.follow(shard, &server).await,
                    Action::Configure { shard, server } => self.configure(shard, &server).await,
                    Action::Respawn(server) => self.respawn(&server).await,
                    Action::Repoint(shard) => {
                        if let Err(e) = self.repoint(shard).await {
                            debug!(%shard, %e, "could not tell the primary its replica set");
                        }
                    }
                    Action::Settled { shard, term } => self.settled(shard, term),
                    Action::Promote { shard, server } => self.promote(shard, &server).await,
                }
            }
            self.publish();
        }
    }

    fn may_elect(&self, shard: ShardId) -> bool {
        let backoff = self.backoff.lock().expect("backoff lock");
        backoff.get(&shard).is_none_or(|t| t.elapsed() >= self.cfg.heartbeat_interval * 2)
    }

    /// Tells a replica that restarted (or missed its role) to follow the primary again;
    /// it serves reads once it has caught up with the primary's commit index of now.
    async fn follow(&self, shard: ShardId, server: &str) {
        let (term, primary, addr, target) = {
            let meta = self.meta();
            let Some(s) = meta.shards.get(&shard) else {
                return;
            };
            let Some(p) = s.primary.clone() else { return };
            let health = self.health.lock().expect("health lock");
            let target = health.status.get(&p).and_then(|st| st.shard(shard)).map_or(0, |st| st.commit_index);
            (s.term, meta.addr(&p), meta.addr(server).addr, target)
        };
        let request = ControlRequest::BecomeFollower { shard, term, primary };
        match self.control(&addr, &request).await {
            Ok(ControlResponse::Ok) => {
                info!(%shard, node = server, term, "told to follow");
                self.role_changed(shard, server);
                let _ = self.update(|m| {
                    if let Some(s) = m.shards.get_mut(&shard) {
                        s.catch_up.insert(server.to_owned(), target);
                    }
                });
            }
            other => debug!(%shard, node = server, ?other, "follow failed"),
        }
    }

    /// Creates the shard's replica on a node that came back without it, then has it follow:
    /// it catches up from the primary (by snapshot when far behind). A voter that lost its
    /// replica rejoins as a learner (see [`ShardMeta::demote`]).
    async fn configure(&self, shard: ShardId, server: &str) {
        // A voter is re-created only as a learner; if it cannot be demoted now (the set is
        // settling), it stays without a replica, voting in nothing, until it can.
        let decided = self.update(|m| {
            let s = m.shards.get_mut(&shard)?;
            if !s.replicas.iter().any(|r| r == server) {
                return Some(false);
            }
            s.demote(server).then_some(true)
        });
        match decided {
            Ok(Some(true)) => {
                warn!(%shard, node = server, "a voter came back without its replica: it rejoins as a learner")
            }
            Ok(Some(false)) => {}
            Ok(None) => return,
            Err(e) => return warn!(%shard, %e, "could not record the lost replica"),
        }
        let (spec, schema, addr) = {
            let meta = self.meta();
            let Some(s) = meta.shards.get(&shard) else {
                return;
            };
            let Some(schema) = meta.schema.clone() else {
                return;
            };
            (s.spec, schema, meta.addr(server).addr)
        };
        let request = ControlRequest::ConfigureShard { shard: spec, schema };
        match self.control(&addr, &request).await {
            Ok(ControlResponse::Ok) => {
                info!(%shard, node = server, "replica re-created on a fresh data directory");
                self.follow(shard, server).await;
            }
            other => debug!(%shard, node = server, ?other, "configure failed"),
        }
    }

    async fn respawn(&self, server: &str) {
        if !self.spawner.can_restart() {
            return;
        }
        {
            let mut respawned = self.respawned.lock().expect("respawn lock");
            if respawned.get(server).is_some_and(|t| t.elapsed() < self.cfg.respawn_backoff) {
                return;
            }
            respawned.insert(server.to_owned(), Instant::now());
        }
        let spec = self.node_spec(server);
        match self.spawner.start(&spec).await {
            Ok(()) => {
                self.counters.lock().expect("counters lock").respawns += 1;
                info!(node = server, "node not answering: (re)started it on its data");
            }
            Err(e) => warn!(node = server, %e, "respawn failed"),
        }
    }

    /// Records that `server` acknowledged a new role on `shard` just now.
    pub(crate) fn role_changed(&self, shard: ShardId, server: &str) {
        let mut health = self.health.lock().expect("health lock");
        health.roles.insert((shard, server.to_owned()), Instant::now());
    }

    /// What the spawner needs to (re)start `server`.
    pub(crate) fn node_spec(&self, server: &str) -> NodeSpec {
        NodeSpec { name: server.to_owned(), addr: self.meta().addr(server).addr, data_dir: self.cfg.node_dir(server) }
    }

    /// One control call on a fresh connection.
    pub(crate) async fn control(&self, addr: &str, request: &ControlRequest) -> Result<ControlResponse, ErrorCode> {
        let timeout = self.cfg.call_timeout;
        let mut conn = Conn::connect(addr, timeout, self.cfg.limits.max_payload)
            .await
            .map_err(|e| ErrorCode::Unavailable { shard: ShardId(0), reason: e.to_string() })?;
        conn.call(request, timeout).await.map_err(|e| ErrorCode::Timeout(format!("{addr}: {e}")))
    }

    /// Waits until `addr` answers a ping, up to the ready timeout.
    pub(crate) async fn wait_ready(&self, name: &str, addr: &str) -> Result<(), ErrorCode> {
        let deadline = Instant::now() + self.cfg.ready_timeout;
        let step = Duration::from_millis(20);
        while Instant::now() < deadline {
            if let Ok(mut conn) = Conn::connect(addr, step * 10, self.cfg.limits.max_payload).await {
                if let Ok(Response::Pong) = conn.call::<_, Response>(&Request::Ping, step * 10).await {
                    return Ok(());
                }
            }
            tokio::time::sleep(step).await;
        }
        Err(ErrorCode::Timeout(format!("{name} did not answer at {addr} within {:?}", self.cfg.ready_timeout)))
    }

    /// Stops background tasks and, with the process spawner, the nodes.
    pub async fn shutdown(&self) {
        for (_, task) in self.heartbeats.lock().expect("heartbeats lock").drain() {
            task.abort();
        }
        self.spawner.shutdown().await;
    }

    /// STATS lines.
    pub(crate) fn stats(&self) -> Vec<(String, String)> {
        let c = self.counters.lock().expect("counters lock");
        let t = self.topology();
        vec![
            ("topology_version".into(), t.version.to_string()),
            ("servers".into(), t.servers.len().to_string()),
            ("servers_healthy".into(), t.servers.iter().filter(|s| s.healthy).count().to_string()),
            ("shards".into(), t.shards.len().to_string()),
            ("shards_without_primary".into(), t.shards.iter().filter(|s| s.primary.is_none()).count().to_string()),
            ("elections".into(), c.elections.to_string()),
            ("failed_elections".into(), c.failed_elections.to_string()),
            ("last_election_ms".into(), c.last_election_ms.to_string()),
            ("respawns".into(), c.respawns.to_string()),
        ]
    }
}

/// Whether two topologies differ only in heartbeat ages (and version).
fn same_shape(a: &Topology, b: &Topology) -> bool {
    let servers = |t: &Topology| -> Vec<(String, String, bool)> {
        t.servers.iter().map(|s| (s.name.clone(), s.addr.clone(), s.healthy)).collect()
    };
    a.schema == b.schema && a.shards == b.shards && servers(a) == servers(b)
}
