//! The coordinator's driver steps as one sans-IO state machine, run by the tokio
//! coordinator and by the simulator alike.
//!
//! [`Core`] owns the configuration and everything the driver tracks between steps:
//! heartbeat numbers and answers (for leases and freshness), elections under way, their
//! backoff, the replica set each primary acknowledged, when each role changed, and the
//! queue of voters to retire. Its steps take the time as an argument and return
//! [`Effect`]s: control calls to make (their answers come back through
//! [`Core::on_answer`]), nodes to restart, a time to be woken at. Nothing in it reads a
//! clock, opens a socket or spawns a task; metadata is saved through [`MetaSink`]
//! before any effect that depends on it is returned, so a term is on disk before any
//! replica hears of it.
//!
//! - `answers`: what each kind of answer does.
//! - `elect`: an election: persist the term, query, decide, wait out leases, lead, follow.
//! - `members`: follow, configure, repoint, promote, settle, add and retire replicas.
//! - [`switch`]: a planned switchover: hand off, catch up, elect the target.

mod answers;
mod elect;
mod members;
pub mod switch;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use shardline_protocol::{ControlRequest, NodeStatus, ServerAddr, ShardId, ShardState};
use tracing::warn;

use crate::config::CoordinatorConfig;
use crate::detector::FailureDetector;
use crate::lease::LeaseBook;
use crate::meta::{ClusterMeta, MetaError, MetaStore, ReplicaSet, ShardMeta};
use crate::reconcile::{self, Action, Observed};

use answers::Purpose;
use elect::Election;
use switch::Switch;

/// Where the configuration is kept: loaded when a coordinator starts acting, saved by the
/// core before it acts on a change. Backends: [`MetaStore`] (redb, one coordinator) and
/// [`crate::etcd::EtcdMeta`] (etcd, any number of coordinators, every save a
/// compare-and-swap on the revision last read, fenced by the leader's etcd lease).
pub trait MetaSink: Debug + Send + Sync {
    /// Saves `meta` durably; fails, changing nothing, if another coordinator changed it
    /// since this one loaded or last saved it.
    fn save(&self, meta: &ClusterMeta) -> Result<(), MetaError>;

    /// The stored configuration (empty if none was ever saved); later saves compare
    /// against what this read.
    fn load(&self) -> Result<ClusterMeta, MetaError>;
}

impl MetaSink for MetaStore {
    fn save(&self, meta: &ClusterMeta) -> Result<(), MetaError> {
        MetaStore::save(self, meta)
    }

    fn load(&self) -> Result<ClusterMeta, MetaError> {
        MetaStore::load(self)
    }
}

impl<T: MetaSink + ?Sized> MetaSink for std::sync::Arc<T> {
    fn save(&self, meta: &ClusterMeta) -> Result<(), MetaError> {
        (**self).save(meta)
    }

    fn load(&self) -> Result<ClusterMeta, MetaError> {
        (**self).load()
    }
}

/// A sink that keeps nothing: for the simulator, whose coordinator never restarts.
#[derive(Debug, Default)]
pub struct NoSink;

impl MetaSink for NoSink {
    fn save(&self, _: &ClusterMeta) -> Result<(), MetaError> {
        Ok(())
    }

    fn load(&self) -> Result<ClusterMeta, MetaError> {
        Ok(ClusterMeta::default())
    }
}

/// The timings the core works with.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Between heartbeat rounds.
    pub heartbeat: Duration,
    /// Silence after which a node is dead.
    pub dead_after: Duration,
    /// The lease each heartbeat grants.
    pub lease: Duration,
    /// How long a control call may take before it counts as failed.
    pub call_timeout: Duration,
    /// Minimum time between two restarts of one node.
    pub respawn_backoff: Duration,
    /// Whether dead nodes may be restarted (the spawner can; the simulator's faults do it).
    pub can_restart: bool,
}

impl CoreConfig {
    /// The core's timings from the coordinator's configuration.
    pub fn new(cfg: &CoordinatorConfig, can_restart: bool) -> CoreConfig {
        CoreConfig {
            heartbeat: cfg.heartbeat_interval,
            dead_after: cfg.dead_after,
            lease: cfg.lease,
            call_timeout: cfg.call_timeout,
            respawn_backoff: cfg.respawn_backoff,
            can_restart,
        }
    }
}

/// One control call to make: send `request` to `to`, then give the answer (or `None`
/// if it failed or timed out) to [`Core::on_answer`] with `id`.
#[derive(Debug, Clone)]
pub struct Call {
    /// The call's number.
    pub id: u64,
    /// The node called.
    pub to: ServerAddr,
    /// What it is asked.
    pub request: ControlRequest,
}

/// Something the core asks its driver to do.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Make a control call.
    Call(Call),
    /// Start the named node again on its data.
    Respawn(String),
    /// Call [`Core::tick`] at this time (an election's winner waits out its predecessor's leases).
    WakeAt(Instant),
}

/// Test-only: a coordinator rule put back as it was before its fix (issue 11), so the
/// simulator can show its scenario catches the old behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// A new replica votes at once, and a voter is retired without waiting for the last
    /// change to settle.
    Membership,
    /// A replica whose log was cut at corruption still counts toward a majority.
    DamagedVotes,
    /// A voter re-created on an empty data directory stays a voter.
    WipedVoter,
    /// While voters wait to be retired, every election is held back.
    AdminBlocksFailover,
    /// A switchover elects its target at once, and the target wins even with a shorter
    /// log than another voter's (never fixed code: it shows the simulator would catch an
    /// unsafe leadership transfer).
    SwitchoverIgnoresLogs,
    /// A voter counts toward a retirement's healthy majority on its last heartbeat answer,
    /// however old, while the failure detector still calls it alive (found as seed
    /// 24016889).
    StaleRetire,
}

/// Counters for STATS.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Elections that chose a primary.
    pub elections: u64,
    /// Elections without a quorum.
    pub failed_elections: u64,
    /// Elections that gave a shard another primary than the one it had.
    pub failovers: u64,
    /// How long the last successful election took, in milliseconds.
    pub last_election_ms: u64,
}

/// A call sent and not yet answered.
#[derive(Debug)]
struct Pending {
    purpose: Purpose,
    deadline: Instant,
}

/// The coordinator's decisions and driver state, without I/O.
#[derive(Debug)]
pub struct Core {
    cfg: CoreConfig,
    store: Box<dyn MetaSink>,
    meta: ClusterMeta,
    detector: FailureDetector,
    status: BTreeMap<String, NodeStatus>,
    /// When the heartbeat that brought each status was sent.
    asked: BTreeMap<String, Instant>,
    /// When each (shard, server) role change was acknowledged.
    roles: BTreeMap<(ShardId, String), Instant>,
    /// The replica set each shard's primary last acknowledged.
    told: BTreeMap<ShardId, ReplicaSet>,
    /// Per node: the last heartbeat number sent, and the last answered (with when).
    beats: BTreeMap<String, (u64, Option<(u64, Instant)>)>,
    leases: LeaseBook,
    calls: BTreeMap<u64, Pending>,
    next_call: u64,
    elections: BTreeMap<ShardId, Election>,
    backoff: BTreeMap<ShardId, Instant>,
    respawned: BTreeMap<String, Instant>,
    /// Voters to retire, per shard, one at a time (RemoveServers' queue).
    leaving: BTreeMap<ShardId, Vec<String>>,
    /// Planned switchovers, under way or with an outcome not yet taken.
    switches: BTreeMap<ShardId, Switch>,
    counters: Counters,
    /// Test-only: a rule put back as it was before its fix.
    pub broken: Option<Broken>,
}

impl Core {
    /// A core for `meta` (already persisted in `store`), starting at `now`.
    pub fn new(cfg: CoreConfig, meta: ClusterMeta, store: Box<dyn MetaSink>, now: Instant) -> Core {
        Core {
            detector: FailureDetector::new(cfg.dead_after, now),
            leases: LeaseBook::new(cfg.lease),
            cfg,
            store,
            meta,
            status: BTreeMap::new(),
            asked: BTreeMap::new(),
            roles: BTreeMap::new(),
            told: BTreeMap::new(),
            beats: BTreeMap::new(),
            calls: BTreeMap::new(),
            next_call: 0,
            elections: BTreeMap::new(),
            backoff: BTreeMap::new(),
            respawned: BTreeMap::new(),
            leaving: BTreeMap::new(),
            switches: BTreeMap::new(),
            counters: Counters::default(),
            broken: None,
        }
    }

    /// This core takes over from another coordinator that may have granted leases until
    /// a moment ago: every shard counts as leased from `now`, so no new primary is told to
    /// lead before a predecessor's last grant has surely run out. (The predecessor stopped
    /// granting before its etcd lease ran out, and this one was elected after that.)
    pub fn take_over(&mut self, now: Instant) {
        let shards: Vec<ShardId> = self.meta.shards.keys().copied().collect();
        for shard in shards {
            self.leases.elected(shard, now);
        }
    }

    /// Numbers this core's calls after `previous`'s, so an answer to a call the previous
    /// core made (in flight while it was replaced) never passes for one of this core's.
    pub fn number_calls_after(&mut self, previous: &Core) {
        self.next_call = self.next_call.max(previous.next_call);
    }

    /// The configuration now.
    pub fn meta(&self) -> &ClusterMeta {
        &self.meta
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Changes the configuration and saves it before anyone acts on the change; on a
    /// failed save nothing changes.
    pub fn update<T>(&mut self, change: impl FnOnce(&mut ClusterMeta) -> T) -> Result<T, MetaError> {
        let mut next = self.meta.clone();
        let out = change(&mut next);
        self.store.save(&next)?;
        self.meta = next;
        Ok(out)
    }

    /// What heartbeats show of `server` at `now`.
    pub fn observe(&self, server: &str, now: Instant) -> Observed<'_> {
        Observed { alive: self.detector.alive(server, now), status: self.status.get(server) }
    }

    /// `server` as a retirement may count it: alive only if it answered a heartbeat sent
    /// within the last round and a half. A node that crashed after its last answer stays
    /// alive to the detector for `dead_after`, with the status it had before: a damaged log
    /// it finds on restart would not show, and the retirement could leave the shard fewer
    /// whole voters than a majority.
    pub fn observe_lately(&self, server: &str, now: Instant) -> Observed<'_> {
        let lately = self.broken == Some(Broken::StaleRetire)
            || self.asked.get(server).is_some_and(|&a| now.saturating_duration_since(a) <= self.cfg.heartbeat * 3 / 2);
        let mut seen = self.observe(server, now);
        seen.alive &= lately;
        seen
    }

    /// `server`'s replica of `shard` as its last heartbeat answer showed it, if that
    /// heartbeat was sent at `since` or later.
    pub fn shard_state_since(&self, server: &str, shard: ShardId, since: Instant) -> Option<&ShardState> {
        self.asked.get(server).filter(|&&asked| asked >= since)?;
        self.status.get(server)?.shard(shard)
    }

    /// How long since `server` last answered a heartbeat, if it ever did.
    pub fn heard_age(&self, server: &str, now: Instant) -> Option<Duration> {
        self.detector.age(server, now)
    }

    /// Whether `server`'s status was asked for after its last role change on `shard`.
    pub fn fresh(&self, shard: ShardId, server: &str) -> bool {
        let asked = self.asked.get(server);
        self.roles.get(&(shard, server.to_owned())).is_none_or(|changed| asked.is_some_and(|a| a > changed))
    }

    /// Whether an election of `shard` is under way.
    pub fn electing(&self, shard: ShardId) -> bool {
        self.elections.contains_key(&shard)
    }

    /// The voters still waiting to be retired from `shard`.
    pub fn leaving(&self, shard: ShardId) -> &[String] {
        self.leaving.get(&shard).map_or(&[], |q| q.as_slice())
    }

    /// Whether a configure or follow call for `node`'s replica of `shard` is under way.
    pub fn joining(&self, shard: ShardId, node: &str) -> bool {
        self.awaiting(shard, Some(node))
    }

    /// Whether `node` has acknowledged a role on `shard` (led or followed).
    pub fn followed(&self, shard: ShardId, node: &str) -> bool {
        self.roles.contains_key(&(shard, node.to_owned()))
    }

    /// Whether any voter waits to be retired.
    pub fn retiring(&self) -> bool {
        self.leaving.values().any(|queue| !queue.is_empty())
    }

    /// A server the driver is starting now gets the grace of a fresh one: neither dead
    /// nor due a restart until it has had the time to answer.
    pub fn just_started(&mut self, server: &str, now: Instant) {
        self.detector.heard(server, now);
        self.respawned.insert(server.to_owned(), now);
    }

    /// Forgets a removed server's health.
    pub fn forget(&mut self, server: &str) {
        self.detector.forget(server);
        self.status.remove(server);
        self.asked.remove(server);
        self.beats.remove(server);
        self.roles.retain(|(_, s), _| s != server);
    }

    /// Registers a call to `server`, answered by `deadline` or counted as failed.
    fn call_by(&mut self, server: &str, request: ControlRequest, purpose: Purpose, deadline: Instant) -> Call {
        self.next_call += 1;
        self.calls.insert(self.next_call, Pending { purpose, deadline });
        Call { id: self.next_call, to: self.meta.addr(server), request }
    }

    /// Registers a call to `server` with the usual call timeout.
    fn call(&mut self, server: &str, request: ControlRequest, purpose: Purpose, now: Instant) -> Effect {
        Effect::Call(self.call_by(server, request, purpose, now + self.cfg.call_timeout))
    }

    /// The heartbeat for `server`: asks its status and renews the leases of what it leads,
    /// counted from its last answered heartbeat.
    pub fn heartbeat_call(&mut self, server: &str, now: Instant) -> Call {
        let (seq, answered) = self.beats.get(server).copied().unwrap_or((0, None));
        let seq = seq + 1;
        self.beats.insert(server.to_owned(), (seq, answered));
        let grant = answered.and_then(|(k, at)| self.leases.grant(&self.meta, server, k, at));
        let lease_ms = self.cfg.lease.as_millis() as u64;
        let request = ControlRequest::Heartbeat { seq, lease_ms, grant };
        let purpose = Purpose::Heartbeat { node: server.to_owned(), asked: now, seq };
        // A heartbeat answered after half the time to death tells nothing in time.
        self.call_by(server, request, purpose, now + self.cfg.dead_after / 2)
    }

    /// A heartbeat round: every server is asked for its status.
    pub fn heartbeat(&mut self, now: Instant) -> Vec<Effect> {
        let servers: Vec<String> = self.meta.servers.keys().cloned().collect();
        servers.iter().map(|s| Effect::Call(self.heartbeat_call(s, now))).collect()
    }

    /// Calls past their deadline count as failed; winners whose wait is over are told to lead.
    pub fn tick(&mut self, now: Instant) -> Vec<Effect> {
        let expired: Vec<u64> = self.calls.iter().filter(|(_, p)| now >= p.deadline).map(|(id, _)| *id).collect();
        let mut out = Vec::new();
        for id in expired {
            out.extend(self.on_answer(id, None, now));
        }
        let due: Vec<ShardId> = self.elections.iter().filter(|(_, e)| e.lead_due(now)).map(|(s, _)| *s).collect();
        for shard in due {
            out.extend(self.lead(shard, now));
        }
        out
    }

    /// A reconcile round: what the cluster needs now, from the configuration and the
    /// heartbeats. While an admin operation holds the driver (`admin_held`), only
    /// elections run, and the steps that let queued voters retire.
    pub fn reconcile(&mut self, now: Instant, admin_held: bool) -> Vec<Effect> {
        let mut out = self.tick(now);
        let actions = {
            let observe = |s: &str| self.observe(s, now);
            let told = |s: &ShardMeta| self.told.get(&s.spec.id) == Some(&s.replica_set());
            reconcile::reconcile(&self.meta, observe, |shard, s| self.fresh(shard, s), told)
        };
        for action in actions {
            let queued = |shard: &ShardId| self.leaving.get(shard).is_some_and(|q| !q.is_empty());
            let allowed = match &action {
                // A shard never elected (term 0) is the admin operation's to elect, once it
                // has configured the replicas: asked before, they only answer UnknownShard.
                Action::Elect(shard) => !admin_held || self.meta.shards.get(shard).is_some_and(|s| s.term > 0),
                Action::Repoint(shard) | Action::Settled { shard, .. } => !admin_held || queued(shard),
                _ => !admin_held,
            };
            if allowed {
                self.act(action, now, &mut out);
            }
        }
        self.retire_next(now, &mut out);
        out.extend(self.advance_switches(now));
        out
    }

    fn act(&mut self, action: Action, now: Instant, out: &mut Vec<Effect>) {
        match action {
            Action::Elect(shard) => {
                // Before scenario 10's fix, elections waited for an admin operation.
                let held_back = self.broken == Some(Broken::AdminBlocksFailover) && self.retiring();
                if self.may_elect(shard, now) && !held_back {
                    let prefer = self.switch_target(shard);
                    out.extend(self.elect_preferring(shard, prefer, now));
                }
            }
            // A role or set already on its way is not sent again until that call ends.
            Action::Follow { shard, server } if !self.electing(shard) && !self.awaiting(shard, Some(&server)) => {
                out.extend(self.follow(shard, &server, now))
            }
            Action::Repoint(shard) if !self.electing(shard) && !self.awaiting(shard, None) => {
                out.extend(self.repoint(shard, now))
            }
            Action::Configure { shard, server } if !self.awaiting(shard, Some(&server)) => {
                out.extend(self.configure(shard, &server, now))
            }
            Action::Follow { .. } | Action::Repoint(_) | Action::Configure { .. } => {}
            Action::Settled { shard, term } => self.settled(shard, term),
            Action::Promote { shard, server } => out.extend(self.promote(shard, &server, now)),
            Action::Respawn(server) => out.extend(self.respawn(&server, now)),
        }
    }

    /// Whether a call about `shard` is under way: to `node` a follow or configure, or
    /// (`None`) the primary's replica set.
    fn awaiting(&self, shard: ShardId, node: Option<&str>) -> bool {
        self.calls.values().any(|p| match (&p.purpose, node) {
            (Purpose::Follow { shard: s, node: n, .. } | Purpose::Configure { shard: s, node: n }, Some(node)) => {
                *s == shard && n == node
            }
            (Purpose::Repoint { shard: s, .. }, None) => *s == shard,
            _ => false,
        })
    }

    fn may_elect(&self, shard: ShardId, now: Instant) -> bool {
        !self.electing(shard) && self.backoff.get(&shard).is_none_or(|&t| now >= t + self.cfg.heartbeat * 2)
    }

    fn respawn(&mut self, server: &str, now: Instant) -> Option<Effect> {
        if !self.cfg.can_restart || self.respawned.get(server).is_some_and(|&t| now < t + self.cfg.respawn_backoff) {
            return None;
        }
        self.respawned.insert(server.to_owned(), now);
        Some(Effect::Respawn(server.to_owned()))
    }

    /// Saves a change, or logs why it could not be saved (the step is then not taken).
    fn save<T>(&mut self, what: &str, change: impl FnOnce(&mut ClusterMeta) -> T) -> Option<T> {
        match self.update(change) {
            Ok(out) => Some(out),
            Err(e) => {
                warn!(%e, what, "could not persist the configuration; not acting on it");
                None
            }
        }
    }
}
