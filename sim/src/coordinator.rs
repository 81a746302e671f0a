//! The simulated coordinator: the coordinator's own decision functions (failure detection,
//! reconcile, the election decision, majorities) driven by simulated heartbeats and calls.
//!
//! It follows the real driver's steps: heartbeat every node (renewing leases), reconcile
//! after each round, and for an election persist a new term, query every replica with it,
//! decide on the answers (all of them, or whatever arrived when the call timeout ran out),
//! tell the winner to lead and the voters to follow.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use shardline_coordinator::detector::FailureDetector;
use shardline_coordinator::election::{decide, Decision};
use shardline_coordinator::meta::ClusterMeta;
use shardline_coordinator::reconcile::{reconcile, Action, Observed};
use shardline_protocol::{ControlRequest, ControlResponse, ErrorCode, NodeStatus, ShardId, Vote};

use crate::world::{Addr, Event, Msg, Nanos, World, MS};

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
    fn default() -> Self {
        CoordTiming { heartbeat: 100 * MS, dead_after: 400 * MS, lease_ms: 300, call_timeout: 1000 * MS }
    }
}

/// What an outstanding call was for.
#[derive(Debug, Clone)]
enum Call {
    Heartbeat { node: String, asked: Nanos },
    Vote { shard: ShardId, term: u64, node: String },
    Lead { shard: ShardId, term: u64, node: String },
    Follow { shard: ShardId, node: String },
}

/// An election under way.
#[derive(Debug)]
struct Election {
    term: u64,
    replicas: Vec<String>,
    votes: Vec<(String, Vote)>,
    newer: Option<u64>,
    answered: BTreeSet<String>,
    deadline: Nanos,
    leading: bool,
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
    /// Elections that chose a primary.
    pub elections_won: u64,
}

fn node_of(name: &str) -> Addr {
    Addr::Node(name.strip_prefix('N').and_then(|n| n.parse().ok()).unwrap_or(usize::MAX))
}

impl SimCoordinator {
    /// A coordinator for `meta`, starting now.
    pub fn new(meta: ClusterMeta, timing: CoordTiming) -> SimCoordinator {
        let origin = Instant::now();
        let detector = FailureDetector::new(Duration::from_nanos(timing.dead_after), origin);
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
            elections_won: 0,
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
            let request = ControlRequest::Heartbeat { lease_ms: self.timing.lease_ms };
            let asked = world.now;
            self.call(world, &node, request, Call::Heartbeat { node: node.clone(), asked });
        }
        world.after(self.timing.heartbeat, Event::Heartbeat);
    }

    /// A reconcile round: elections, followers told their role, elections that timed out.
    pub fn reconcile(&mut self, world: &mut World) {
        let now = world.now;
        let expired: Vec<(ShardId, bool)> =
            self.elections.iter().filter(|(_, e)| now >= e.deadline).map(|(s, e)| (*s, e.leading)).collect();
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
            reconcile(&self.meta, observe, fresh)
        };
        for action in actions {
            match action {
                Action::Elect(shard) => {
                    let backed_off = self.backoff.get(&shard).is_some_and(|&t| now < t + 2 * self.timing.heartbeat);
                    if !self.elections.contains_key(&shard) && !backed_off {
                        self.start_election(world, shard);
                    }
                }
                Action::Follow { shard, server } => {
                    if self.elections.contains_key(&shard) {
                        continue;
                    }
                    let s = &self.meta.shards[&shard];
                    let Some(primary) = s.primary.clone() else { continue };
                    let request =
                        ControlRequest::BecomeFollower { shard, term: s.term, primary: self.meta.addr(&primary) };
                    self.call(world, &server.clone(), request, Call::Follow { shard, node: server });
                }
                Action::Configure { .. } | Action::Respawn(_) => {}
            }
        }
        world.after(self.timing.heartbeat / 2, Event::Reconcile);
    }

    fn start_election(&mut self, world: &mut World, shard: ShardId) {
        let s = self.meta.shards.get_mut(&shard).expect("a known shard");
        s.term += 1;
        s.primary = None;
        let (term, replicas) = (s.term, s.replicas.clone());
        for node in &replicas {
            let request = ControlRequest::ElectionQuery { shard, term };
            self.call(world, node, request, Call::Vote { shard, term, node: node.clone() });
        }
        let deadline = world.now + self.timing.call_timeout;
        let election = Election {
            term,
            replicas,
            votes: Vec::new(),
            newer: None,
            answered: BTreeSet::new(),
            deadline,
            leading: false,
        };
        self.elections.insert(shard, election);
    }

    /// Decides an election on the votes in hand.
    fn decide(&mut self, world: &mut World, shard: ShardId) {
        let Some(e) = self.elections.get_mut(&shard) else { return };
        if let Some(current) = e.newer {
            let s = self.meta.shards.get_mut(&shard).expect("known");
            s.term = s.term.max(current);
            self.elections.remove(&shard);
            self.backoff.insert(shard, world.now);
            return;
        }
        let needed = shardline_coordinator::majority(e.replicas.len());
        match decide(&e.votes, needed) {
            Decision::Elect { primary, .. } => {
                e.leading = true;
                e.deadline = world.now + self.timing.call_timeout;
                let (term, replicas) = (e.term, e.replicas.clone());
                let followers = replicas.iter().filter(|r| **r != primary).map(|r| self.meta.addr(r)).collect();
                let request = ControlRequest::BecomePrimary { shard, term, followers, lease_ms: self.timing.lease_ms };
                self.call(world, &primary.clone(), request, Call::Lead { shard, term, node: primary });
            }
            Decision::NoQuorum { .. } => {
                self.elections.remove(&shard);
                self.backoff.insert(shard, world.now);
            }
        }
    }

    /// An answer from a node.
    pub fn on_answer(&mut self, world: &mut World, id: u64, response: ControlResponse) {
        let Some(call) = self.calls.remove(&id) else { return };
        let now = world.now;
        match call {
            Call::Heartbeat { node, asked } => {
                if let ControlResponse::Status(status) = response {
                    self.detector.heard(&node, self.instant(now));
                    self.status.insert(node.clone(), status);
                    self.asked.insert(node, asked);
                }
            }
            Call::Vote { shard, term, node } => {
                let Some(e) = self.elections.get_mut(&shard).filter(|e| e.term == term && !e.leading) else { return };
                e.answered.insert(node.clone());
                match response {
                    ControlResponse::Vote(v) => e.votes.push((node, v)),
                    ControlResponse::Error(ErrorCode::StaleTerm { current, .. }) => {
                        e.newer = e.newer.max(Some(current))
                    }
                    _ => {}
                }
                if e.answered.len() == e.replicas.len() {
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
                self.elections_won += 1;
                self.roles.insert((shard, node.clone()), now);
                let primary = self.meta.addr(&node);
                for (voter, _) in e.votes.iter().filter(|(v, _)| *v != node) {
                    let request = ControlRequest::BecomeFollower { shard, term, primary: primary.clone() };
                    self.call(world, voter, request, Call::Follow { shard, node: voter.clone() });
                }
            }
            Call::Follow { shard, node } => {
                if matches!(response, ControlResponse::Ok) {
                    self.roles.insert((shard, node), now);
                }
            }
        }
    }

    /// Calls whose answer never came: elections decide on what they have at their deadline.
    pub fn primary_of(&self, shard: ShardId) -> Option<&str> {
        self.meta.shards.get(&shard).and_then(|s| s.primary.as_deref())
    }
}
