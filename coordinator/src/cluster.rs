//! The coordinator's tokio driver: it owns the sockets, the timers, the spawner and the
//! published topology, and carries out what [`Core`] asks for. The decisions and the
//! driver state between steps live in the core (run by the simulator too); this module
//! makes its calls concurrently, feeds the answers back, and restarts nodes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shardline_metrics::RequestMetrics;
use shardline_protocol::net::Conn;
use shardline_protocol::{
    ControlRequest, ControlResponse, ErrorCode, Request, Response, ServerInfo, ShardCopy, ShardTopology, Topology,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};

use crate::config::CoordinatorConfig;
use crate::driver::{Core, CoreConfig, Effect, MetaSink};
use crate::error::CoordinatorError;
use crate::leadership::Leadership;
use crate::meta::{ClusterMeta, MetaError, MetaStore};
use crate::reconcile;
use crate::spawner::{NodeSpec, Spawner};

/// The coordinator.
#[derive(Debug)]
pub struct Coordinator {
    pub(crate) cfg: CoordinatorConfig,
    /// The configuration and the driver's state; saved through the metadata store.
    core: Mutex<Core>,
    pub(crate) spawner: Box<dyn Spawner>,
    /// Serializes admin operations; while one runs, the reconcile loop only elects (and
    /// retires the voters the operation queued).
    pub(crate) admin: tokio::sync::Mutex<()>,
    topology: watch::Sender<Topology>,
    heartbeats: Mutex<HashMap<String, JoinHandle<()>>>,
    respawns: AtomicU64,
    /// Nodes being restarted now: a slow start is not begun again beside itself.
    restarting: Mutex<HashSet<String>>,
    /// Requests by operation and outcome, for `/metrics`.
    requests: RequestMetrics,
    /// Where the configuration is kept (redb, or etcd shared with other coordinators).
    store: Arc<dyn MetaSink>,
    /// Whether this coordinator may act now; checked before every control call.
    leadership: Arc<Leadership>,
    /// Control calls (heartbeats included) sent, and when the last one was.
    calls: Mutex<(u64, Option<Instant>)>,
}

impl Coordinator {
    /// Loads the cluster from the data directory and starts heartbeating its nodes.
    pub fn open(cfg: CoordinatorConfig, spawner: Box<dyn Spawner>) -> Result<Arc<Coordinator>, MetaError> {
        let store = MetaStore::open(&cfg.data_dir)?;
        Coordinator::open_with(cfg, spawner, Arc::new(store), Arc::new(Leadership::sole()))
    }

    /// A coordinator on `store`. With [`Leadership::sole`] it loads the cluster and starts
    /// heartbeating at once; an elected one stands by (serving STATUS from the stored
    /// configuration) until its elector calls [`Coordinator::take_over`].
    pub fn open_with(
        cfg: CoordinatorConfig,
        spawner: Box<dyn Spawner>,
        store: Arc<dyn MetaSink>,
        leadership: Arc<Leadership>,
    ) -> Result<Arc<Coordinator>, MetaError> {
        let meta = if leadership.is_elected() { store.load().unwrap_or_default() } else { store.load()? };
        info!(servers = meta.servers.len(), shards = meta.shards.len(), version = meta.version, "cluster loaded");
        let version = meta.version;
        let core_cfg = CoreConfig::new(&cfg, spawner.can_restart());
        let core = Core::new(core_cfg, meta, Box::new(store.clone()), Instant::now());
        let coordinator = Arc::new(Coordinator {
            topology: watch::channel(Topology { version, ..Default::default() }).0,
            cfg,
            core: Mutex::new(core),
            spawner,
            admin: tokio::sync::Mutex::new(()),
            heartbeats: Mutex::new(HashMap::new()),
            respawns: AtomicU64::new(0),
            restarting: Mutex::new(HashSet::new()),
            requests: RequestMetrics::new(shardline_metrics::ops::CLIENT),
            store,
            leadership,
            calls: Mutex::new((0, None)),
        });
        if coordinator.acting() {
            coordinator.watch_all();
        }
        coordinator.publish();
        Ok(coordinator)
    }

    /// Starts heartbeating every server of the configuration.
    fn watch_all(self: &Arc<Self>) {
        let servers: Vec<String> = self.core().meta().servers.keys().cloned().collect();
        for name in servers {
            self.watch_server(&name);
        }
    }

    /// Whether this coordinator may act now (always, with the embedded store).
    pub fn acting(&self) -> bool {
        self.leadership.acting(Instant::now())
    }

    /// This coordinator's leadership.
    pub fn leadership(&self) -> &Arc<Leadership> {
        &self.leadership
    }

    /// Counts a control call about to be sent, if this coordinator may act; the fence
    /// every call passes, checked at the last moment.
    fn may_call(&self) -> bool {
        let now = Instant::now();
        if !self.leadership.acting(now) {
            return false;
        }
        let mut calls = self.calls.lock().expect("calls lock");
        calls.0 += 1;
        calls.1 = Some(now);
        true
    }

    /// Elected leader: reloads the configuration from the store, treats every shard as
    /// leased by the predecessor until a lease from now has passed, starts acting (until
    /// `until`, renewed by the elector; `me` is this coordinator's address) and adopts the
    /// nodes (heartbeats; the reconcile loop restarts, re-elects and re-points as needed).
    /// Nothing acts on the standby's copy of the configuration: acting starts only once
    /// the reloaded one is in place.
    pub async fn take_over(self: &Arc<Self>, until: Instant, me: &str) -> Result<(), MetaError> {
        let store = self.store.clone();
        let meta = tokio::task::spawn_blocking(move || store.load())
            .await
            .map_err(|e| MetaError::Unavailable(format!("loading the configuration: {e}")))??;
        let now = Instant::now();
        let mut core =
            Core::new(CoreConfig::new(&self.cfg, self.spawner.can_restart()), meta, Box::new(self.store.clone()), now);
        core.take_over(now);
        core.number_calls_after(&self.core());
        info!(
            servers = core.meta().servers.len(),
            shards = core.meta().shards.len(),
            version = core.meta().version,
            terms = ?core.meta().shards.values().map(|s| (s.spec.id.0, s.term)).collect::<Vec<_>>(),
            "leading: configuration reloaded, adopting the nodes"
        );
        *self.core() = core;
        self.leadership.won(until, me);
        self.watch_all();
        self.publish();
        Ok(())
    }

    /// Elected leader no more: stops heartbeating (the leadership gate has already
    /// stopped every call); the configuration stays, for STATUS, until refreshed.
    pub fn step_down(&self) {
        for (_, task) in self.heartbeats.lock().expect("heartbeats lock").drain() {
            task.abort();
        }
        self.restarting.lock().expect("restarting lock").clear();
        // Wakes the topology subscriptions, which end now that this one does not lead.
        self.topology.send_modify(|_| ());
    }

    /// Standing by: reloads the configuration so STATUS shows the cluster as stored.
    pub async fn refresh_standby(self: &Arc<Self>) {
        let store = self.store.clone();
        let Ok(Ok(meta)) = tokio::task::spawn_blocking(move || store.load()).await else {
            debug!("standby could not reload the configuration");
            return;
        };
        if self.acting() {
            return;
        }
        let core_cfg = CoreConfig::new(&self.cfg, self.spawner.can_restart());
        let mut core = Core::new(core_cfg, meta, Box::new(self.store.clone()), Instant::now());
        let mut held = self.core();
        core.number_calls_after(&held);
        *held = core;
        drop(held);
        self.publish();
    }

    /// The core, locked (never across an await).
    pub(crate) fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().expect("core lock")
    }

    /// A copy of the configuration now.
    pub(crate) fn meta(&self) -> ClusterMeta {
        self.core().meta().clone()
    }

    /// Changes the configuration and persists it before anyone acts on the change.
    pub(crate) fn update<T>(&self, change: impl FnOnce(&mut ClusterMeta) -> T) -> Result<T, CoordinatorError> {
        Ok(self.core().update(change)?)
    }

    /// The topology now.
    pub fn topology(&self) -> Topology {
        self.topology.borrow().clone()
    }

    /// The request metrics.
    pub fn requests(&self) -> &RequestMetrics {
        &self.requests
    }

    /// The core's counters now (elections, failovers).
    pub fn counters(&self) -> crate::driver::Counters {
        self.core().counters().clone()
    }

    /// Nodes restarted so far.
    pub fn respawns(&self) -> u64 {
        self.respawns.load(Ordering::Relaxed)
    }

    /// A receiver of every new topology.
    pub fn subscribe(&self) -> watch::Receiver<Topology> {
        self.topology.subscribe()
    }

    /// Recomputes the topology; if it changed, bumps and persists the version and pushes it.
    pub(crate) fn publish(&self) {
        let now = Instant::now();
        let mut core = self.core();
        let mut next = topology_of(&core, now);
        let current = self.topology.borrow().clone();
        if same_shape(&current, &next) || !self.leadership.acting(now) {
            // Only heartbeat ages moved: refresh them for STATUS without a new version.
            self.topology.send_replace(next);
            return;
        }
        if let Err(e) = core.update(|m| m.version += 1) {
            warn!(%e, "could not persist the topology version; not publishing");
            return;
        }
        next.version = core.meta().version;
        debug!(version = next.version, "topology changed");
        self.topology.send_replace(next);
    }

    /// Carries out what the core asked for: each call on its own task, its answer fed
    /// back (and what that asks for carried out in turn); wake-ups and restarts likewise.
    pub(crate) fn carry_out(self: &Arc<Self>, effects: Vec<Effect>) {
        if !self.acting() {
            return;
        }
        for effect in effects {
            let me = self.clone();
            match effect {
                Effect::Call(call) => {
                    let span = tracing::debug_span!("call", node = %call.to.name, id = call.id);
                    tokio::spawn(
                        async move {
                            let answer = me.control(&call.to.addr, &call.request).await;
                            if let Err(e) = &answer {
                                debug!(%e, "control call failed");
                            }
                            let more = me.core().on_answer(call.id, answer.ok(), Instant::now());
                            me.carry_out(more);
                            me.publish();
                        }
                        .instrument(span),
                    );
                }
                Effect::WakeAt(at) => {
                    tokio::spawn(async move {
                        tokio::time::sleep_until(at.into()).await;
                        let more = me.core().tick(Instant::now());
                        me.carry_out(more);
                        me.publish();
                    });
                }
                Effect::Respawn(server) => {
                    tokio::spawn(async move { me.respawn(&server).await });
                }
            }
        }
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
        self.core().forget(server);
    }

    async fn heartbeat_loop(self: Arc<Self>, server: String) {
        let mut tick = tokio::time::interval(self.cfg.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut conn: Option<Conn> = None;
        let timeout = self.cfg.dead_after / 2;
        loop {
            tick.tick().await;
            let addr = self.core().meta().addr(&server).addr;
            if conn.is_none() {
                conn = Conn::connect(&addr, timeout, self.cfg.limits.max_payload).await.ok();
            }
            let Some(c) = conn.as_mut() else { continue };
            let call = self.core().heartbeat_call(&server, Instant::now());
            if !self.may_call() {
                // Stood down (or paused past the lease): the heartbeat is not sent.
                continue;
            }
            if let ControlRequest::Heartbeat { seq, grant, .. } = &call.request {
                tracing::trace!(seq, grant = ?grant.as_ref().map(|g| g.seq), "heartbeat");
            }
            let answer = match c.call::<_, ControlResponse>(&call.request, timeout).await {
                Ok(status @ ControlResponse::Status(_)) => Some(status),
                Ok(other) => {
                    debug!(?other, "unexpected heartbeat answer");
                    conn = None;
                    None
                }
                Err(e) => {
                    debug!(%e, "heartbeat failed");
                    conn = None;
                    None
                }
            };
            // A heartbeat answer updates health, and may move a switchover on (its target
            // has caught up: elect it).
            let more = self.core().on_answer(call.id, answer, Instant::now());
            self.carry_out(more);
        }
    }

    /// Runs the reconcile loop until the process ends.
    pub async fn reconcile_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.cfg.heartbeat_interval / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !self.acting() {
                continue;
            }
            // An admin operation under way (spawning, configuring, retiring replicas) does
            // not hold up failover elsewhere: elections run whatever else is going on.
            let admin_held = self.admin.try_lock().is_err();
            let effects = self.core().reconcile(Instant::now(), admin_held);
            self.carry_out(effects);
            self.publish();
        }
    }

    /// Restarts `server` on its data (the core decided it is due).
    async fn respawn(&self, server: &str) {
        if !self.acting() {
            return;
        }
        if !self.restarting.lock().expect("restarting lock").insert(server.to_owned()) {
            return;
        }
        let spec = self.node_spec(server);
        let started = self.spawner.start(&spec).await;
        self.restarting.lock().expect("restarting lock").remove(server);
        match started {
            Ok(()) => {
                self.respawns.fetch_add(1, Ordering::Relaxed);
                info!(node = server, "node not answering: (re)started it on its data");
            }
            Err(e) => warn!(node = server, %e, "respawn failed"),
        }
    }

    /// What the spawner needs to (re)start `server`.
    pub(crate) fn node_spec(&self, server: &str) -> NodeSpec {
        let addr = self.core().meta().addr(server).addr;
        NodeSpec { name: server.to_owned(), addr, data_dir: self.cfg.node_dir(server) }
    }

    /// One control call on a fresh connection.
    pub(crate) async fn control(
        &self,
        addr: &str,
        request: &ControlRequest,
    ) -> Result<ControlResponse, CoordinatorError> {
        let timeout = self.cfg.call_timeout;
        let failed = |source| CoordinatorError::Call { addr: addr.to_owned(), source };
        let mut conn = Conn::connect(addr, timeout, self.cfg.limits.max_payload).await.map_err(failed)?;
        if !self.may_call() {
            return Err(self.not_leader().into());
        }
        conn.call(request, timeout).await.map_err(failed)
    }

    /// Waits until `addr` answers a ping, up to the ready timeout.
    pub(crate) async fn wait_ready(&self, name: &str, addr: &str) -> Result<(), CoordinatorError> {
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
        Err(CoordinatorError::NotReady { name: name.to_owned(), addr: addr.to_owned(), after: self.cfg.ready_timeout })
    }

    /// The answer of a coordinator that does not lead.
    pub(crate) fn not_leader(&self) -> ErrorCode {
        ErrorCode::NotLeader { leader: self.leadership.leader() }
    }

    /// Stops background tasks and, with the process spawner, the nodes, unless other
    /// coordinators share the cluster (etcd): then the nodes are the cluster's, not this
    /// process's, and go on for the next leader.
    pub async fn shutdown(&self) {
        for (_, task) in self.heartbeats.lock().expect("heartbeats lock").drain() {
            task.abort();
        }
        if !self.leadership.is_elected() {
            self.spawner.shutdown().await;
        }
    }

    /// STATS lines.
    pub(crate) fn stats(&self) -> Vec<(String, String)> {
        let c = self.core().counters().clone();
        let t = self.topology();
        let now = Instant::now();
        let (calls, last_call) = *self.calls.lock().expect("calls lock");
        let last_call_ms = last_call.map_or("never".to_owned(), |at| now.duration_since(at).as_millis().to_string());
        vec![
            ("role".into(), self.leadership.role(now).into()),
            ("leader".into(), self.leadership.leader().unwrap_or_default()),
            ("times_led".into(), self.leadership.terms().to_string()),
            ("control_calls".into(), calls.to_string()),
            ("last_control_call_ms_ago".into(), last_call_ms),
            ("topology_version".into(), t.version.to_string()),
            ("servers".into(), t.servers.len().to_string()),
            ("servers_healthy".into(), t.servers.iter().filter(|s| s.healthy).count().to_string()),
            ("shards".into(), t.shards.len().to_string()),
            ("shards_without_primary".into(), t.shards.iter().filter(|s| s.primary.is_none()).count().to_string()),
            ("elections".into(), c.elections.to_string()),
            ("failed_elections".into(), c.failed_elections.to_string()),
            ("last_election_ms".into(), c.last_election_ms.to_string()),
            ("respawns".into(), self.respawns.load(Ordering::Relaxed).to_string()),
        ]
    }
}

/// The topology the core's configuration and heartbeats show at `now` (version as persisted).
fn topology_of(core: &Core, now: Instant) -> Topology {
    let meta = core.meta();
    let shards = meta
        .shards
        .values()
        .map(|s| ShardTopology {
            spec: s.spec,
            term: s.term,
            primary: s.primary.clone(),
            // Voters, then learners still catching up (not readable until they have).
            replicas: s.holders().cloned().collect(),
            readable: reconcile::readable(s, |n| core.observe(n, now)),
        })
        .collect();
    let servers = meta
        .servers
        .iter()
        .map(|(name, s)| ServerInfo {
            name: name.clone(),
            addr: s.addr.clone(),
            healthy: core.observe(name, now).alive,
            last_heartbeat_ms: core.heard_age(name, now).map(|d| d.as_millis() as u64),
        })
        .collect();
    // Copies under way, as each live node's last heartbeat answer showed them.
    let mut copies = Vec::new();
    for name in meta.servers.keys() {
        let seen = core.observe(name, now);
        let Some(status) = seen.status.filter(|_| seen.alive) else { continue };
        for s in &status.shards {
            let progress = s.copies.iter().cloned();
            copies.extend(progress.map(|progress| ShardCopy { shard: s.spec.id, server: name.clone(), progress }));
        }
    }
    Topology { version: meta.version, schema: meta.schema.clone(), shards, servers, copies }
}

/// Whether two topologies differ only in heartbeat ages (and version).
fn same_shape(a: &Topology, b: &Topology) -> bool {
    let servers = |t: &Topology| -> Vec<(String, String, bool)> {
        t.servers.iter().map(|s| (s.name.clone(), s.addr.clone(), s.healthy)).collect()
    };
    a.schema == b.schema && a.shards == b.shards && servers(a) == servers(b)
}
