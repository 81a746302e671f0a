//! One simulated history: build the cluster, run clients under faults, heal, check.
//!
//! The cluster: five storage nodes, shard 1 (keys 0..100) on three of them and shard 2
//! (keys 100..200) on all five, the coordinator, and three clients contending for a few
//! keys of each shard. Faults run from 0.3 s to `fault_end`; then everything heals and the
//! clients go on until `stop_at`, when they stop starting operations; the run ends once
//! they are idle (bounded). Then every checker runs.

use shardline_coordinator::meta::{ClusterMeta, ServerMeta, ShardMeta};
use shardline_protocol::{Schema, ShardId, ShardSpec, Value};
use shardline_storage_node::config::NodeConfig;
use shardline_storage_node::failpoint::Fired;
use shardline_storage_node::replica::{Regressions, ReplicaConfig};
use shardline_storage_node::store::TableStore;
use std::collections::BTreeMap;

use crate::check;
use crate::client::SimClient;
use crate::coordinator::SimCoordinator;
use crate::faults::{self, Fault, FaultMix};
use crate::history::{History, Key};
use crate::node::SimNode;
use crate::world::{Addr, Event, Msg, Nanos, NetConfig, World, MS};

/// A rule of the protocol put back as it was before its fix (issue 11), to show that the
/// scenario written for it catches the old behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Broken {
    /// The primary commits on its own fsync, without a majority.
    CommitRule,
    /// Scenario 1: a new replica votes (and counts toward commits) at once, and the
    /// replica set changes again without waiting for the last change to settle.
    Membership,
    /// Scenario 2: a replica whose log was cut at corruption still counts toward the
    /// election's majority.
    DamagedVotes,
    /// Scenario 3: a lease counts from when the node reads the grant, not from when it
    /// handled the heartbeat the grant answers.
    LeaseFromReceipt,
    /// Scenario 5: a retry is refused definitely (`LeaseExpired`, `NoQuorum`) by a primary
    /// that logged an earlier attempt of it, and the client is told the last attempt's
    /// error, even a definite refusal after an attempt that may have been logged.
    DefiniteRefusals,
    /// Scenario 4: a replica rebuilt from a snapshot has no retry marks.
    SnapshotMarks,
    /// Scenario 8: snapshots are cut into chunks by rows, not bytes.
    ChunksByRows,
    /// Scenario 9: a follower takes any later chunk as the next one of its install.
    ChunkIdentity,
    /// A voter re-created on an empty data directory counts toward majorities at once.
    WipedVoter,
    /// Scenario 10: while an admin operation waits (a RemoveServers whose next voter cannot
    /// retire yet), the coordinator holds every election back.
    AdminBlocksFailover,
    /// A planned switchover elects its target without waiting for it to catch up, and the
    /// target wins even with a shorter log (never the real rule: the `switchover` scenario
    /// shows the checkers would catch such a transfer).
    SwitchoverIgnoresLogs,
    /// Issue 16: a follower serves bounded reads with no proof of freshness (as `any`).
    BoundedUnchecked,
    /// Issue 16: clients send session reads with an empty session token.
    SessionIgnored,
    /// Issue 16: followers apply (and serve) entries before they are committed.
    ApplyUncommitted,
    /// A primary whose log write failed leads again on the same term's vote (found as
    /// seed 16009967; replays as seed 16016375 since issue 13).
    ReleadAfterLogFailure,
    /// A bounded read's contact age is compared in whole milliseconds (found as seed
    /// 16019633; replays as seed 16013055 since issue 13).
    BoundInWholeMs,
    /// A voter counts toward a retirement's healthy majority on its last heartbeat answer,
    /// however old, while the failure detector still calls it alive: a node that crashed
    /// with a damaged log after answering counts as whole (found as seed 24016889).
    StaleRetire,
}

/// What one run does.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The seed: everything else random follows from it.
    pub seed: u64,
    /// Which faults to draw.
    pub faults: FaultMix,
    /// When faults stop and everything heals.
    pub fault_end: Nanos,
    /// When clients stop starting operations.
    pub stop_at: Nanos,
    /// Test-only: one rule put back as it was before its fix (the checkers must catch it).
    pub broken: Option<Broken>,
    /// Print every event.
    pub verbose: bool,
    /// Clock drift bound, in parts per million.
    pub drift_ppm: i64,
    /// A scripted schedule (faults at fixed times) instead of, or beside, random faults.
    pub script: Vec<(Nanos, Fault)>,
    /// The frame limit on every message (a larger one is refused, as a connection does).
    pub max_payload: usize,
    /// Bytes of rows and marks in one snapshot chunk at most.
    pub snapshot_chunk_bytes: usize,
    /// Bytes of filler in every written row (wide rows make snapshots big).
    pub row_filler: usize,
    /// How long the run goes on after clients stop, for replicas to catch up.
    pub settle: Nanos,
}

impl RunConfig {
    /// The default run for `seed`: every fault kind, 3 s of faults, 6 s of clients.
    pub fn new(seed: u64) -> RunConfig {
        RunConfig {
            seed,
            faults: FaultMix::all(),
            fault_end: 3_000 * MS,
            stop_at: 7_000 * MS,
            broken: None,
            verbose: false,
            drift_ppm: 500,
            script: Vec::new(),
            max_payload: shardline_protocol::DEFAULT_MAX_PAYLOAD,
            snapshot_chunk_bytes: shardline_storage_node::replica::room::SNAPSHOT_CHUNK_BYTES,
            row_filler: 0,
            settle: 500 * MS,
        }
    }
}

/// What a run found.
#[derive(Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Events handled.
    pub events: u64,
    /// Hash of the event trace (equal seeds, equal hashes).
    pub trace_hash: u64,
    /// Client operations recorded.
    pub ops: usize,
    /// Acknowledged writes.
    pub acked: usize,
    /// Simulated time at the end.
    pub sim_time: Nanos,
    /// Each checker that fired, with what it saw.
    pub violations: Vec<String>,
    /// What the clients did and saw.
    pub history: History,
    /// Each armed failpoint that killed a node: the node, when, and which.
    pub fired: Vec<(usize, Nanos, Fired)>,
}

const NODES: usize = 5;
const SHARDS: [(u32, i64, usize); 2] = [(1, 0, 3), (2, 100, 5)];
const KEYS_PER_SHARD: i64 = 4;
const CLIENTS: u32 = 3;

/// The simulated cluster and its observers.
struct Cluster {
    world: World,
    nodes: Vec<SimNode>,
    coordinator: SimCoordinator,
    clients: Vec<SimClient>,
    history: History,
    /// When the faults healed, some shard had more damaged replicas than it tolerates.
    beyond_tolerance_at_heal: bool,
}

/// The replicas' settings: the node's defaults, but a short log and the broken rule.
fn replica_settings(cfg: &RunConfig) -> ReplicaConfig {
    // The node's defaults, except a short log, so that replicas that fall behind catch up
    // by snapshot often.
    let node = NodeConfig::new("", "127.0.0.1:0".parse().expect("an address"), "/nonexistent");
    ReplicaConfig {
        node: String::new(),
        addr: String::new(),
        write_timeout: node.write_timeout,
        sync_heartbeat: node.sync_heartbeat,
        peer_timeout: node.peer_timeout,
        snapshot_lag: 20,
        log_retain: 4,
        max_payload: cfg.max_payload,
        snapshot_chunk_bytes: cfg.snapshot_chunk_bytes,
        snapshot_rate: shardline_storage_node::replica::DEFAULT_SNAPSHOT_RATE,
        incarnation: 1,
        regressions: Regressions {
            commit_rule: cfg.broken == Some(Broken::CommitRule),
            definite_refusals: cfg.broken == Some(Broken::DefiniteRefusals),
            chunk_identity: cfg.broken == Some(Broken::ChunkIdentity),
            chunks_by_rows: cfg.broken == Some(Broken::ChunksByRows),
            bounded_unchecked: cfg.broken == Some(Broken::BoundedUnchecked),
            apply_uncommitted: cfg.broken == Some(Broken::ApplyUncommitted),
            relead_after_log_failure: cfg.broken == Some(Broken::ReleadAfterLogFailure),
            bound_in_whole_ms: cfg.broken == Some(Broken::BoundInWholeMs),
        },
    }
}

/// Configures every shard of [`SHARDS`] on its first replicas; every key and its shard.
fn configure_shards(nodes: &mut [SimNode], schema: &Schema, meta: &mut ClusterMeta) -> Vec<(i64, ShardId)> {
    let mut keys = Vec::new();
    for (id, low, replicas) in SHARDS {
        let spec = ShardSpec { id: ShardId(id), low, size: 100 };
        let names: Vec<String> = nodes[..replicas].iter().map(|n| n.name.clone()).collect();
        for n in &mut nodes[..replicas] {
            n.configure(spec, schema.clone());
        }
        meta.shards.insert(
            spec.id,
            ShardMeta {
                spec,
                term: 0,
                primary: None,
                replicas: names,
                catch_up: Default::default(),
                learners: vec![],
                unsettled: false,
            },
        );
        keys.extend((low + 1..=low + KEYS_PER_SHARD).map(|k| (k, spec.id)));
    }
    keys
}

fn build(cfg: &RunConfig) -> Cluster {
    let mut world =
        World::new(cfg.seed, NetConfig { loss: 0.0, duplicate: 0.0, min_delay: 100_000, max_delay: 100_000 });
    world.verbose = cfg.verbose;
    if cfg.faults.partitions {
        world.net = NetConfig {
            loss: world.rng.range(0, 30) as f64 / 1000.0,
            duplicate: world.rng.range(0, 20) as f64 / 1000.0,
            min_delay: 50_000,
            max_delay: world.rng.range(200_000, 3 * MS),
        };
    }
    let settings = replica_settings(cfg);
    let schema = Schema::seed();
    let mut meta = ClusterMeta { schema: Some(schema.clone()), ..ClusterMeta::default() };
    let mut nodes: Vec<SimNode> = (0..NODES)
        .map(|i| {
            let drift = world.rng.range(0, 2 * cfg.drift_ppm as u64 + 1) as i64 - cfg.drift_ppm;
            let mut node = SimNode::new(i, drift, settings.clone());
            node.lease_from_receipt = cfg.broken == Some(Broken::LeaseFromReceipt);
            node.drop_snapshot_marks = cfg.broken == Some(Broken::SnapshotMarks);
            node
        })
        .collect();
    for n in &nodes {
        meta.servers.insert(n.name.clone(), ServerMeta { addr: n.name.clone() });
    }
    let keys = configure_shards(&mut nodes, &schema, &mut meta);
    let coordinator = SimCoordinator::new(meta, cfg.broken);
    let clients = (0..CLIENTS)
        .map(|c| {
            let mut client = SimClient::new(c, keys.clone());
            client.last_error_only = cfg.broken == Some(Broken::DefiniteRefusals);
            client.forget_session = cfg.broken == Some(Broken::SessionIgnored);
            client.filler = cfg.row_filler;
            client
        })
        .collect();
    world.after(0, Event::Heartbeat);
    world.after(50 * MS, Event::Reconcile);
    for n in 0..NODES {
        let offset = world.rng.range(0, 10 * MS);
        world.after(offset, Event::NodeTick(n));
    }
    for c in 0..CLIENTS {
        world.after(300 * MS + u64::from(c) * MS, Event::ClientStep(c));
    }
    for (at, fault) in &cfg.script {
        world.after(*at, Event::Fault(fault.clone()));
    }
    if cfg.faults.any() {
        faults::schedule(&mut world, NODES, cfg.faults, 300 * MS, cfg.fault_end);
    }
    Cluster { world, nodes, coordinator, clients, history: History::new(), beyond_tolerance_at_heal: false }
}

impl Cluster {
    fn handle(&mut self, event: Event) {
        let w = &mut self.world;
        match event {
            Event::Deliver { from, to, msg } => match (to, msg) {
                (Addr::Node(n), msg) => self.nodes[n].handle(w, from, msg),
                (Addr::Coord, Msg::ControlAnswer { id, response }) => self.coordinator.on_answer(w, id, response),
                (Addr::Client(c), Msg::ClientAnswer { id, answer }) => {
                    self.clients[c as usize].on_answer(w, &mut self.history, id, answer)
                }
                _ => {}
            },
            Event::NodeTick(n) => {
                self.nodes[n].tick(w);
                w.after(10 * MS, Event::NodeTick(n));
            }
            Event::FlushAppends(n) => self.nodes[n].flush_appends(w),
            Event::Heartbeat => self.coordinator.heartbeat(w),
            Event::Reconcile => self.coordinator.reconcile(w),
            Event::Wake => self.coordinator.wake(w),
            Event::ClientStep(c) => self.clients[c as usize].step(w, &mut self.history, &self.coordinator),
            Event::ClientTimeout { client, attempt } => {
                self.clients[client as usize].on_timeout(w, &mut self.history, attempt)
            }
            Event::Fault(Fault::OnPrimary { shard, fault, then, after }) => {
                let primary = self.coordinator.primary_of(ShardId(shard)).and_then(|p| p.strip_prefix('N'));
                if let Some(node) = primary.and_then(|n| n.parse().ok()) {
                    faults::apply(w, &mut self.nodes, fault.at(node));
                    if let Some(then) = then {
                        w.after(after, Event::Fault(then.at(node)));
                    }
                }
            }
            Event::Fault(Fault::OnFollower { shard, nth, fault, then, after }) => {
                let s = &self.coordinator.meta().shards[&ShardId(shard)];
                let mut followers: Vec<&String> =
                    s.replicas.iter().filter(|r| Some(*r) != s.primary.as_ref()).collect();
                followers.sort();
                if let Some(node) = followers.get(nth).and_then(|n| n.strip_prefix('N')).and_then(|n| n.parse().ok()) {
                    faults::apply(w, &mut self.nodes, fault.at(node));
                    if let Some(then) = then {
                        w.after(after, Event::Fault(then.at(node)));
                    }
                }
            }
            Event::Fault(f @ (Fault::AddReplica { .. } | Fault::Switchover { .. } | Fault::RemoveReplica { .. })) => {
                self.membership(f)
            }
            Event::Fault(Fault::HealAll) => {
                faults::apply(&mut self.world, &mut self.nodes, Fault::HealAll);
                // Judged once crashed nodes are back: a flipped bit shows when a log is opened.
                self.beyond_tolerance_at_heal =
                    self.coordinator.meta().shards.keys().any(|&id| beyond_tolerance(self, id));
            }
            Event::Fault(fault) => faults::apply(w, &mut self.nodes, fault),
        }
    }

    /// A membership change the coordinator carries out: a replica added or removed, a
    /// switchover.
    fn membership(&mut self, fault: Fault) {
        let w = &mut self.world;
        match fault {
            Fault::AddReplica { shard, pick } => {
                let id = ShardId(shard);
                let s = &self.coordinator.meta().shards[&id];
                let free: Vec<&SimNode> = self.nodes.iter().filter(|n| !s.holds(&n.name)).collect();
                if !free.is_empty() {
                    let name = free[(pick % free.len() as u64) as usize].name.clone();
                    self.coordinator.add_replica(w, id, &name);
                }
            }
            Fault::Switchover { shard, to } => {
                let id = ShardId(shard);
                let s = &self.coordinator.meta().shards[&id];
                let followers: Vec<&String> = s.replicas.iter().filter(|r| Some(*r) != s.primary.as_ref()).collect();
                let to = to.and_then(|pick| {
                    (!followers.is_empty()).then(|| followers[(pick % followers.len() as u64) as usize].clone())
                });
                self.coordinator.switchover(w, id, to);
            }
            Fault::RemoveReplica { shard, primary, pick } => {
                let id = ShardId(shard);
                let s = &self.coordinator.meta().shards[&id];
                let target = if primary {
                    s.primary.clone()
                } else {
                    let followers: Vec<&String> = s.holders().filter(|r| Some(*r) != s.primary.as_ref()).collect();
                    (!followers.is_empty()).then(|| followers[(pick % followers.len() as u64) as usize].clone())
                };
                if let Some(node) = target {
                    self.coordinator.remove_replica(w, id, &node);
                }
            }
            _ => {}
        }
    }
}

/// Runs one history and checks it.
pub fn run(cfg: &RunConfig) -> Report {
    let mut c = build(cfg);
    let mut stopped = false;
    let hard_end = cfg.stop_at + cfg.settle + 8_000 * MS;
    while let Some(event) = c.world.pop(hard_end) {
        c.handle(event);
        for n in &mut c.nodes {
            n.drain_journal();
        }
        if !stopped && c.world.now >= cfg.stop_at {
            stopped = true;
            for client in &mut c.clients {
                client.stopped = true;
            }
        }
        if stopped && c.clients.iter().all(|cl| !cl.busy()) && c.world.now >= cfg.stop_at + cfg.settle {
            break;
        }
    }
    let violations = check_all(&c, cfg);
    let history = std::mem::take(&mut c.history);
    Report {
        seed: cfg.seed,
        events: c.world.handled,
        trace_hash: c.world.trace_hash,
        ops: history.len(),
        acked: c.clients.iter().map(|cl| cl.acks.len()).sum(),
        sim_time: c.world.now,
        violations,
        history,
        fired: c.nodes.iter().flat_map(|n| n.fired.iter().map(|&(at, f)| (n.index, at, f))).collect(),
    }
}

fn value_of(values: &[Value]) -> u64 {
    match values.get(1) {
        Some(Value::Int(v)) => *v as u64,
        _ => 0,
    }
}

/// Whether more of the shard's replicas may have lost acknowledged entries (damaged logs)
/// than it tolerates: then standing still is correct, not a liveness failure.
fn beyond_tolerance(c: &Cluster, shard: ShardId) -> bool {
    let Some(meta) = c.coordinator.meta().shards.get(&shard) else { return false };
    // Damaged: its log was cut at corruption, or it could not open at all (its node is up,
    // the replica is not there, and it was configured once: it is a voter).
    let damaged = meta
        .replicas
        .iter()
        .filter_map(|name| c.nodes.iter().find(|n| &n.name == name && n.up))
        .filter(|n| n.replicas.get(&shard).is_none_or(|r| r.state().fault.is_some()))
        .count();
    damaged > meta.replicas.len() - shardline_coordinator::majority(meta.replicas.len())
}

/// Every checker, on the finished run.
fn check_all(c: &Cluster, cfg: &RunConfig) -> Vec<String> {
    let mut out = Vec::new();
    let mut final_state: BTreeMap<Key, Option<u64>> = BTreeMap::new();
    let mut complete = true;
    for (&shard, meta) in &c.coordinator.meta().shards {
        let primary = meta.primary.as_deref().and_then(|p| c.nodes.iter().find(|n| n.name == p && n.up));
        let beyond_tolerance = beyond_tolerance(c, shard);
        let Some(replica) = primary.and_then(|n| n.replicas.get(&shard)).filter(|r| r.ready()) else {
            if beyond_tolerance {
                // More replicas may have lost acknowledged data (a damaged log) than the
                // shard tolerates: standing still is the correct answer (electing would
                // risk losing an acknowledged write).
                complete = false;
                continue;
            }
            let states: Vec<String> = meta
                .holders()
                .map(|name| match c.nodes.iter().find(|n| &n.name == name).and_then(|n| n.replicas.get(&shard)) {
                    Some(r) => {
                        let s = r.state();
                        let fault = s.fault.map(|f| format!(" fault: {f}")).unwrap_or_default();
                        format!(
                            "{name} {:?}@{} last {}@{} serving {}{fault}",
                            s.role, s.term, s.last.index, s.last.term, s.serving
                        )
                    }
                    None => format!("{name} (no replica)"),
                })
                .collect();
            out.push(format!(
                "liveness: shard {shard} has no ready primary at the end of the run (term {}, primary {:?}; {})",
                meta.term,
                meta.primary,
                states.join("; ")
            ));
            complete = false;
            continue;
        };
        let rows = replica.table().read_range(meta.spec.low, meta.spec.high().unwrap_or(i64::MAX)).unwrap_or_default();
        for k in meta.spec.low + 1..=meta.spec.low + KEYS_PER_SHARD {
            final_state.insert(k, rows.iter().find(|r| r.key == k).map(|r| value_of(&r.values)));
        }
        let state = replica.state();
        let mut logs = Vec::new();
        let mut tables = Vec::new();
        for name in meta.holders() {
            let Some(r) = c.nodes.iter().find(|n| &n.name == name && n.up).and_then(|n| n.replicas.get(&shard)) else {
                continue;
            };
            logs.push((name.clone(), r.log_digest()));
            let s = r.state();
            if s.applied_index < state.commit_index {
                // Healed and quiet for a while: every replica that runs has caught up (a
                // snapshot that cannot be sent, say, would leave one behind for good).
                out.push(format!(
                    "caught_up: shard {shard}: {name} applied only up to {} of the primary's commit {} at the end \
                     ({:?}@{}{})",
                    s.applied_index,
                    state.commit_index,
                    s.role,
                    s.term,
                    s.fault.map(|f| format!(", fault: {f}")).unwrap_or_default()
                ));
            }
            if s.serving && s.applied_index == state.applied_index {
                let rows = r.table().read_range(i64::MIN, i64::MAX).unwrap_or_default();
                tables.push((name.clone(), rows.iter().map(|row| (row.key, value_of(&row.values))).collect()));
            }
        }
        if let Err(v) = check::logs_converge(&logs, state.commit_index) {
            out.push(format!("shard {shard}: {v}"));
        }
        if let Err(v) = check::tables_converge(&tables) {
            out.push(format!("shard {shard}: {v}"));
        }
    }
    out.extend(check_history(c, cfg, &final_state, complete));
    out
}

/// The checkers that read the clients' history and what the nodes recorded, with the
/// final table state where every shard ended `complete` (a ready primary).
fn check_history(
    c: &Cluster,
    cfg: &RunConfig,
    final_state: &BTreeMap<Key, Option<u64>>,
    complete: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let result = if complete {
        check::linearizable_with_final(&c.history, final_state)
    } else {
        check::linearizable(&c.history)
    };
    if let Err(v) = result {
        out.push(v.to_string());
    }
    if complete {
        if let Err(v) = check::refused_absent(&c.history, final_state) {
            out.push(v.to_string());
        }
    }
    let journal = c.nodes.iter().flat_map(|n| n.journal.iter().map(|(shard, e)| (shard.0, e.clone())));
    let committed = check::CommittedLog::from_entries(journal);
    let levels = [
        check::reads_committed(&c.history, &committed),
        check::session_monotonic(&c.history),
        check::bounded_fresh(&c.history, cfg.drift_ppm.unsigned_abs()),
    ];
    out.extend(levels.into_iter().filter_map(Result::err).map(|v| v.to_string()));
    let fresh: Vec<_> = c.nodes.iter().flat_map(|n| n.fresh_commits.iter().copied()).collect();
    if let Err(v) = check::applied_once(&fresh) {
        out.push(v.to_string());
    }
    let acks: Vec<_> = c.clients.iter().flat_map(|cl| cl.acks.iter().cloned()).collect();
    if let Err(v) = check::one_primary_per_term(&acks) {
        out.push(v.to_string());
    }
    let leases: Vec<_> = c
        .nodes
        .iter()
        .flat_map(|n| n.leases.iter().map(|l| (l.shard, l.term, l.node.clone(), l.from, l.until)))
        .collect();
    if let Err(v) = check::leases_disjoint(&leases) {
        out.push(v.to_string());
    }
    let healed_acks = c.clients.iter().flat_map(|cl| cl.acked_at.iter()).filter(|&&t| t >= cfg.fault_end).count();
    if healed_acks == 0 && !c.beyond_tolerance_at_heal {
        out.push(format!("liveness: no write was acknowledged after the faults healed at {} ms", cfg.fault_end / MS));
    }
    out
}
