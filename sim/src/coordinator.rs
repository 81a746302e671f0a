//! The simulated coordinator: the coordinator's own logic (failure detection, reconcile,
//! the [`ElectionRound`] state machine, majorities) driven by simulated heartbeats and calls.
//!
//! It follows the real driver's steps: heartbeat every node (renewing leases), reconcile
//! after each round, and for an election persist a new term, query every replica with it,
//! decide on the answers (all of them, or whatever arrived when the call timeout ran out),
//! tell the winner to lead and the voters to follow.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use shardline_coordinator::config::CoordinatorConfig;
use shardline_coordinator::detector::FailureDetector;
use shardline_coordinator::lease::LeaseBook;
use shardline_coordinator::meta::{ClusterMeta, ReplicaSet};
use shardline_coordinator::reconcile::{can_retire, reconcile, Action, Observed};
use shardline_coordinator::round::{ElectionRound, Outcome};
use shardline_protocol::{ControlRequest, ControlResponse, NodeStatus, ShardId};

use crate::run::Broken;
use crate::world::{Addr, Event, Msg, Nanos, World};

/// The coordinator's timing (its defaults, as in `CoordinatorConfig`).
#[derive(Debug, Clone)]
pub struct CoordTiming {
    /// Between heartbeats.
    pub heartbeat: Nanos,
    /// Silence after which a node is dead.
    pub dead_after: Nanos,
    /// The lease each heartbeat grants.
    pub lease_ms: u64,
    /// How long a call may take.
    pub call_timeout: Nanos,
}

impl Default for CoordTiming {
    /// The coordinator's own defaults.
    fn default() -> Self {
        let c = CoordinatorConfig::new("127.0.0.1:0".parse().expect("an address"), "/nonexistent");
        CoordTiming {
            heartbeat: c.heartbeat_interval.as_nanos() as Nanos,
            dead_after: c.dead_after.as_nanos() as Nanos,
            lease_ms: c.lease.as_millis() as u64,
            call_timeout: c.call_timeout.as_nanos() as Nanos,
        }
    }
}

/// What an outstanding call was for.
#[derive(Debug, Clone)]
enum Call {
    Heartbeat { node: String, asked: Nanos, seq: u64 },
    Vote { shard: ShardId, term: u64, node: String },
    Lead { shard: ShardId, term: u64, node: String },
    Follow { shard: ShardId, node: String, target: u64 },
    Configure { shard: ShardId, node: String },
    Repoint { shard: ShardId, node: String, set: ReplicaSet },
    Drop,
}

/// An election under way: the coordinator's own round, and when its calls time out.
#[derive(Debug)]
struct Election {
    round: ElectionRound,
    deadline: Nanos,
    /// The follow requests to send once the new primary accepts.
    follow: Option<Vec<(shardline_protocol::ServerAddr, ControlRequest)>>,
    /// The lead request, until it is sent.
    lead: Option<(shardline_protocol::ServerAddr, ControlRequest)>,
}

/// The simulated coordinator.
#[derive(Debug)]
pub struct SimCoordinator {
    /// The cluster's configuration (terms, primaries, replicas).
    pub meta: ClusterMeta,
    timing: CoordTiming,
    origin: Instant,
    detector: FailureDetector,
    status: BTreeMap<String, NodeStatus>,
    asked: BTreeMap<String, Nanos>,
    roles: BTreeMap<(ShardId, String), Nanos>,
    calls: BTreeMap<u64, Call>,
    next_call: u64,
    elections: BTreeMap<ShardId, Election>,
    backoff: BTreeMap<ShardId, Nanos>,
    /// Per node: the last heartbeat number sent, and the last answered (with when).
    beats: BTreeMap<String, (u64, Option<(u64, Nanos)>)>,
    leases: LeaseBook,
    /// The replica set each shard's primary last acknowledged.
    told: BTreeMap<ShardId, ReplicaSet>,
    /// Voters to retire, per shard, one at a time (RemoveServers' queue).
    leaving: BTreeMap<ShardId, Vec<String>>,
    /// Elections that chose a primary.
    pub elections_won: u64,
    /// Test-only: a rule put back as it was before its fix.
    pub broken: Option<Broken>,
}

fn node_of(name: &str) -> Addr {
    Addr::Node(name.strip_prefix('N').and_then(|n| n.parse().ok()).unwrap_or(usize::MAX))
}

impl SimCoordinator {
    /// A coordinator for `meta`, starting now.
    pub fn new(meta: ClusterMeta, timing: CoordTiming) -> SimCoordinator {
        let origin = Instant::now();
        let detector = FailureDetector::new(Duration::from_nanos(timing.dead_after), origin);
        let leases = LeaseBook::new(Duration::from_millis(timing.lease_ms));
        SimCoordinator {
            meta,
            timing,
            origin,
            detector,
            status: BTreeMap::new(),
            asked: BTreeMap::new(),
            roles: BTreeMap::new(),
            calls: BTreeMap::new(),
            next_call: 0,
            elections: BTreeMap::new(),
            backoff: BTreeMap::new(),
            beats: BTreeMap::new(),
            leases,
            told: BTreeMap::new(),
            leaving: BTreeMap::new(),
            elections_won: 0,
            broken: None,
        }
    }

    fn instant(&self, now: Nanos) -> Instant {
        self.origin + Duration::from_nanos(now)
    }

    fn call(&mut self, world: &mut World, node: &str, request: ControlRequest, purpose: Call) {
        self.next_call += 1;
        self.calls.insert(self.next_call, purpose);
        world.send(Addr::Coord, node_of(node), Msg::Control { id: self.next_call, request });
    }

    /// A heartbeat round: every server is asked for its status and its leases renewed.
    pub fn heartbeat(&mut self, world: &mut World) {
        let servers: Vec<String> = self.meta.servers.keys().cloned().collect();
        for node in servers {
            let (seq, answered) = self.beats.get(&node).copied().unwrap_or((0, None));
            let seq = seq + 1;
            self.beats.insert(node.clone(), (seq, answered));
            let grant = answered.and_then(|(k, at)| self.leases.grant(&self.meta, &node, k, self.instant(at)));
            let request = ControlRequest::Heartbeat { seq, lease_ms: self.timing.lease_ms, grant };
            let asked = world.now;
            self.call(world, &node, request, Call::Heartbeat { node: node.clone(), asked, seq });
        }
        world.after(self.timing.heartbeat, Event::Heartbeat);
    }

    /// A reconcile round: elections, followers told their role, elections that timed out.
    pub fn reconcile(&mut self, world: &mut World) {
        let now = world.now;
        let expired: Vec<(ShardId, bool)> =
            self.elections.iter().filter(|(_, e)| now >= e.deadline).map(|(s, e)| (*s, e.follow.is_some())).collect();
        for (shard, leading) in expired {
            if leading {
                // The new primary never answered: the call failed, the election with it.
                self.elections.remove(&shard);
                self.backoff.insert(shard, now);
            } else {
                self.decide(world, shard);
            }
        }
        let instant = self.instant(now);
        let actions = {
            let observe = |s: &str| Observed { alive: self.detector.alive(s, instant), status: self.status.get(s) };
            let fresh = |shard: ShardId, s: &str| {
                let asked = self.asked.get(s).copied();
                self.roles.get(&(shard, s.to_owned())).is_none_or(|&changed| asked.is_some_and(|a| a > changed))
            };
            let told = |s: &shardline_coordinator::meta::ShardMeta| self.told.get(&s.spec.id) == Some(&s.replica_set());
            reconcile(&self.meta, observe, fresh, told)
        };
        for action in actions {
            match action {
                Action::Elect(shard) => {
                    let backed_off = self.backoff.get(&shard).is_some_and(|&t| now < t + 2 * self.timing.heartbeat);
                    // Before scenario 10's fix, the reconcile loop skipped its round while an
                    // admin operation held the lock: failover waited for the removal.
                    let held_back = self.broken == Some(Broken::AdminBlocksFailover)
                        && self.leaving.values().any(|queue| !queue.is_empty());
                    if !self.elections.contains_key(&shard) && !backed_off && !held_back {
                        self.start_election(world, shard);
                    }
                }
                Action::Follow { shard, server } => {
                    if !self.elections.contains_key(&shard) {
                        self.follow(world, shard, &server);
                    }
                }
                Action::Repoint(shard) => {
                    if !self.elections.contains_key(&shard) {
                        self.repoint(world, shard);
                    }
                }
                Action::Settled { shard, term } => {
                    let s = self.meta.shards.get_mut(&shard).expect("known");
                    if s.term == term && s.primary.is_some() {
                        s.unsettled = false;
                    }
                }
                Action::Promote { shard, server } => {
                    if self.meta.shards.get_mut(&shard).expect("known").promote(&server) {
                        self.repoint(world, shard);
                    }
                }
                Action::Configure { shard, server } => {
                    // Alive without the shard (a replacement, or an AddServers whose
                    // configure was lost): create it, then it follows, as `configure` does;
                    // a voter that lost its replica rejoins as a learner.
                    // (Before either fix, a voter was configured as a voter.)
                    let s = self.meta.shards.get_mut(&shard).expect("known");
                    let voter = s.replicas.contains(&server);
                    if voter
                        && !matches!(self.broken, Some(Broken::WipedVoter | Broken::Membership))
                        && !s.demote(&server)
                    {
                        // Settling: it stays without a replica, voting in nothing, for now.
                        continue;
                    }
                    let spec = self.meta.shards[&shard].spec;
                    let schema = self.meta.schema.clone().expect("initialized");
                    let request = ControlRequest::ConfigureShard { shard: spec, schema };
                    self.call(world, &server.clone(), request, Call::Configure { shard, node: server });
                }
                // The fault schedule restarts what it crashed.
                Action::Respawn(_) => {}
            }
        }
        self.retire_next(world);
        world.after(self.timing.heartbeat / 2, Event::Reconcile);
    }

    /// Tells `server` to follow the shard's primary; once it does, it serves reads after
    /// reaching the primary's commit index of now (as the coordinator's `follow`).
    fn follow(&mut self, world: &mut World, shard: ShardId, server: &str) {
        let s = &self.meta.shards[&shard];
        let Some(primary) = s.primary.clone() else { return };
        let target = self.status.get(&primary).and_then(|st| st.shard(shard)).map_or(0, |st| st.commit_index);
        let request = ControlRequest::BecomeFollower { shard, term: s.term, primary: self.meta.addr(&primary) };
        self.call(world, server, request, Call::Follow { shard, node: server.to_owned(), target });
    }

    /// Retires the next leaving voter of each shard whose last change has settled, as the
    /// coordinator's `remove_servers` does, one voter at a time.
    fn retire_next(&mut self, world: &mut World) {
        let instant = self.instant(world.now);
        let observe = |s: &str| Observed { alive: self.detector.alive(s, instant), status: self.status.get(s) };
        let ready: Vec<(ShardId, String)> = self
            .leaving
            .iter()
            .filter_map(|(id, queue)| {
                let s = &self.meta.shards[id];
                let settled = !s.unsettled && s.primary.is_some() && !self.elections.contains_key(id);
                let next = queue.first().filter(|_| settled)?;
                let healthy = self.broken == Some(Broken::Membership) || can_retire(s, next, observe);
                healthy.then(|| (*id, next.clone()))
            })
            .collect();
        for (shard, node) in ready {
            self.leaving.get_mut(&shard).expect("queued").remove(0);
            let s = self.meta.shards.get_mut(&shard).expect("known");
            let Some(was_primary) = s.retire(&node) else { continue };
            if was_primary {
                self.start_election(world, shard);
            } else {
                self.repoint(world, shard);
            }
            self.call(world, &node, ControlRequest::DropShard { shard }, Call::Drop);
        }
    }

    fn start_election(&mut self, world: &mut World, shard: ShardId) {
        let s = self.meta.shards.get_mut(&shard).expect("a known shard");
        s.term += 1;
        s.primary = None;
        let (term, voters, learners) = (s.term, s.replicas.clone(), s.learners.clone());
        let addrs = |names: Vec<String>| names.iter().map(|r| self.meta.addr(r)).collect();
        let round = ElectionRound::new(shard, term, addrs(voters), addrs(learners));
        for (to, request) in round.queries() {
            self.call(world, &to.name, request, Call::Vote { shard, term, node: to.name.clone() });
        }
        let deadline = world.now + self.timing.call_timeout;
        self.elections.insert(shard, Election { round, deadline, follow: None, lead: None });
    }

    /// Decides an election on the votes in hand.
    fn decide(&mut self, world: &mut World, shard: ShardId) {
        let Some(e) = self.elections.get_mut(&shard) else { return };
        match e.round.outcome(self.timing.lease_ms) {
            Outcome::NewerTerm(current) => {
                let s = self.meta.shards.get_mut(&shard).expect("known");
                s.term = s.term.max(current);
                self.elections.remove(&shard);
                self.backoff.insert(shard, world.now);
            }
            Outcome::NoQuorum { .. } => {
                self.elections.remove(&shard);
                self.backoff.insert(shard, world.now);
            }
            Outcome::Lead { primary, lead, follow } => {
                e.follow = Some(follow);
                e.lead = Some((primary, lead));
                // No two primaries hold a lease at once: wait out every lease granted before.
                let clear =
                    self.leases.clear_at(shard).map_or(0, |at| at.duration_since(self.origin).as_nanos() as Nanos);
                e.deadline = world.now.max(clear) + self.timing.call_timeout;
                if clear > world.now {
                    world.after(clear - world.now, Event::Lead(shard));
                } else {
                    self.lead(world, shard);
                }
            }
        }
    }

    /// Tells an election's winner to lead (its predecessor's leases have ended).
    pub fn lead(&mut self, world: &mut World, shard: ShardId) {
        let Some(e) = self.elections.get_mut(&shard) else { return };
        let Some((primary, lead)) = e.lead.take() else { return };
        let term = e.round.term();
        self.leases.elected(shard, self.instant(world.now));
        self.call(world, &primary.name, lead, Call::Lead { shard, term, node: primary.name.clone() });
    }

    /// An answer from a node.
    pub fn on_answer(&mut self, world: &mut World, id: u64, response: ControlResponse) {
        let Some(call) = self.calls.remove(&id) else { return };
        let now = world.now;
        match call {
            Call::Heartbeat { node, asked, seq } => {
                if let ControlResponse::Status(status) = response {
                    if let Some(beat) = self.beats.get_mut(&node) {
                        beat.1 = Some((seq, now));
                    }
                    self.detector.heard(&node, self.instant(now));
                    self.status.insert(node.clone(), status);
                    self.asked.insert(node, asked);
                }
            }
            Call::Vote { shard, term, node } => {
                let Some(e) = self.elections.get_mut(&shard) else { return };
                if e.round.term() != term || e.follow.is_some() {
                    return;
                }
                let response = match response {
                    // Before scenario 2's fix: a replica that lost entries still counted.
                    ControlResponse::Vote(mut v) if self.broken == Some(Broken::DamagedVotes) => {
                        v.whole = true;
                        ControlResponse::Vote(v)
                    }
                    other => other,
                };
                e.round.on_answer(&node, Some(response));
                if e.round.complete() {
                    self.decide(world, shard);
                }
            }
            Call::Lead { shard, term, node } => {
                let Some(e) = self.elections.remove(&shard) else { return };
                if !matches!(response, ControlResponse::Ok) {
                    self.backoff.insert(shard, now);
                    return;
                }
                let s = self.meta.shards.get_mut(&shard).expect("known");
                if s.term != term {
                    return;
                }
                s.primary = Some(node.clone());
                s.catch_up.remove(&node);
                s.unsettled = true;
                let won_with = e.round.votes().iter().find(|(n, _)| *n == node).map_or(0, |(_, v)| v.last.index);
                for target in s.catch_up.values_mut().filter(|t| **t == u64::MAX) {
                    *target = won_with;
                }
                let (voters, learners) = e.round.members();
                self.told.insert(shard, ReplicaSet { term, primary: Some(node.clone()), voters, learners });
                self.elections_won += 1;
                self.roles.insert((shard, node.clone()), now);
                for (voter, request) in e.follow.unwrap_or_default() {
                    let target = self.meta.shards[&shard].catch_up.get(&voter.name).copied().unwrap_or(0);
                    self.call(world, &voter.name, request, Call::Follow { shard, node: voter.name.clone(), target });
                }
            }
            Call::Follow { shard, node, target } => {
                if matches!(response, ControlResponse::Ok) {
                    self.roles.insert((shard, node.clone()), now);
                    if let Some(s) = self.meta.shards.get_mut(&shard).filter(|s| s.holds(&node)) {
                        s.catch_up.insert(node, target);
                    }
                }
            }
            Call::Drop => {}
            Call::Configure { shard, node } => {
                let s = &self.meta.shards[&shard];
                if !matches!(response, ControlResponse::Ok) || !s.holds(&node) {
                    return;
                }
                if s.primary.is_none() {
                    return;
                }
                self.follow(world, shard, &node);
                self.repoint(world, shard);
            }
            Call::Repoint { shard, node, set } => {
                if matches!(response, ControlResponse::Ok) {
                    self.roles.insert((shard, node), now);
                    self.told.insert(shard, set);
                }
            }
        }
    }

    /// AddServers for one replica: `node` joins `shard` as a learner (configured empty,
    /// then told to follow, then the primary told its new replica set at the same term), as
    /// the coordinator's `add_servers` does; the reconcile rounds promote it once caught up.
    pub fn add_replica(&mut self, world: &mut World, shard: ShardId, node: &str) {
        let Some(s) = self.meta.shards.get_mut(&shard) else { return };
        if s.holds(node) || self.leaving.get(&shard).is_some_and(|q| q.iter().any(|n| n == node)) {
            return;
        }
        if self.broken == Some(Broken::Membership) {
            // Before scenario 1's fix: a new replica votes at once.
            s.replicas.push(node.to_owned());
        } else {
            s.learners.push(node.to_owned());
        }
        s.catch_up.insert(node.to_owned(), u64::MAX);
        let spec = s.spec;
        let schema = self.meta.schema.clone().expect("initialized");
        let request = ControlRequest::ConfigureShard { shard: spec, schema };
        self.call(world, node, request, Call::Configure { shard, node: node.to_owned() });
    }

    /// RemoveServers for one replica: a learner leaves at once; a voter is queued, and
    /// retired (one at a time, once the last change settled) by the reconcile rounds.
    pub fn remove_replica(&mut self, world: &mut World, shard: ShardId, node: &str) {
        let Some(s) = self.meta.shards.get_mut(&shard) else { return };
        if s.learners.iter().any(|l| l == node) {
            s.learners.retain(|l| l != node);
            s.catch_up.remove(node);
            self.repoint(world, shard);
            self.call(world, node, ControlRequest::DropShard { shard }, Call::Drop);
            return;
        }
        if self.broken == Some(Broken::Membership) {
            // Before scenario 1's fix: removed at once, whatever is still settling.
            if s.replicas.len() <= 3 || !s.replicas.iter().any(|r| r == node) || self.elections.contains_key(&shard) {
                return;
            }
            self.leaving.entry(shard).or_default().push(node.to_owned());
            self.meta.shards.get_mut(&shard).expect("known").unsettled = false;
            self.retire_next(world);
            return;
        }
        let queue = self.leaving.entry(shard).or_default();
        // Three voters at least: with fewer, one damaged log can lose data no protocol could keep.
        if s.replicas.len() - queue.len() <= 3
            || !s.replicas.iter().any(|r| r == node)
            || queue.iter().any(|n| n == node)
        {
            return;
        }
        queue.push(node.to_owned());
    }

    /// Tells the primary its replica set at the same term.
    fn repoint(&mut self, world: &mut World, shard: ShardId) {
        let s = &self.meta.shards[&shard];
        let Some(primary) = s.primary.clone() else { return };
        let others = |names: &[String]| names.iter().filter(|r| **r != primary).map(|r| self.meta.addr(r)).collect();
        let (followers, learners) = (others(&s.replicas), others(&s.learners));
        let lease_ms = self.timing.lease_ms;
        let request = ControlRequest::BecomePrimary { shard, term: s.term, followers, learners, lease_ms };
        let set = s.replica_set();
        self.call(world, &primary.clone(), request, Call::Repoint { shard, node: primary, set });
    }

    /// The shard's primary, as the topology names it.
    pub fn primary_of(&self, shard: ShardId) -> Option<&str> {
        self.meta.shards.get(&shard).and_then(|s| s.primary.as_deref())
    }
}
