//! The simulated coordinator: the real coordinator's [`Core`] (failure detection, leases,
//! reconcile, elections, replica set changes), driven by simulated time and messages.
//!
//! This module only carries the core's effects: a call becomes a control message to a
//! node, its answer goes back to [`Core::on_answer`], a wake-up becomes an event. A call
//! whose message or answer is lost times out inside the core, as a real one would.

use std::time::{Duration, Instant};

use shardline_coordinator::config::CoordinatorConfig;
use shardline_coordinator::driver::{self, Core, CoreConfig, Effect, NoSink};
use shardline_coordinator::meta::ClusterMeta;
use shardline_protocol::{ControlResponse, ShardId};

use crate::run::Broken;
use crate::world::{Addr, Event, Msg, Nanos, World};

/// The simulated coordinator.
#[derive(Debug)]
pub struct SimCoordinator {
    core: Core,
    origin: Instant,
    heartbeat: Nanos,
}

fn node_of(name: &str) -> Addr {
    Addr::Node(name.strip_prefix('N').and_then(|n| n.parse().ok()).unwrap_or(usize::MAX))
}

impl SimCoordinator {
    /// A coordinator for `meta` with the coordinator's default timings, starting now;
    /// `broken` puts one of its rules back as it was before its fix.
    pub fn new(meta: ClusterMeta, broken: Option<Broken>) -> SimCoordinator {
        let cfg = CoordinatorConfig::new("127.0.0.1:0".parse().expect("an address"), "/nonexistent");
        // The fault schedule restarts what it crashed: the core never asks to.
        let core_cfg = CoreConfig::new(&cfg, false);
        let origin = Instant::now();
        let mut core = Core::new(core_cfg, meta, Box::new(NoSink), origin);
        core.broken = match broken {
            Some(Broken::Membership) => Some(driver::Broken::Membership),
            Some(Broken::DamagedVotes) => Some(driver::Broken::DamagedVotes),
            Some(Broken::WipedVoter) => Some(driver::Broken::WipedVoter),
            Some(Broken::AdminBlocksFailover) => Some(driver::Broken::AdminBlocksFailover),
            Some(Broken::SwitchoverIgnoresLogs) => Some(driver::Broken::SwitchoverIgnoresLogs),
            Some(Broken::StaleRetire) => Some(driver::Broken::StaleRetire),
            _ => None,
        };
        SimCoordinator { core, origin, heartbeat: cfg.heartbeat_interval.as_nanos() as Nanos }
    }

    /// The cluster's configuration (terms, primaries, replicas).
    pub fn meta(&self) -> &ClusterMeta {
        self.core.meta()
    }

    fn instant(&self, now: Nanos) -> Instant {
        self.origin + Duration::from_nanos(now)
    }

    /// Carries out what the core asked for.
    fn carry_out(&mut self, world: &mut World, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Call(call) => {
                    let msg = Msg::Control { id: call.id, request: call.request };
                    world.send(Addr::Coord, node_of(&call.to.name), msg);
                }
                Effect::WakeAt(at) => {
                    let at = at.duration_since(self.origin).as_nanos() as Nanos;
                    world.after(at.saturating_sub(world.now), Event::Wake);
                }
                Effect::Respawn(_) => {}
            }
        }
    }

    /// A heartbeat round: every server is asked for its status and its leases renewed.
    pub fn heartbeat(&mut self, world: &mut World) {
        let effects = self.core.heartbeat(self.instant(world.now));
        self.carry_out(world, effects);
        world.after(self.heartbeat, Event::Heartbeat);
    }

    /// A reconcile round. While voters wait to be retired, a RemoveServers holds the
    /// coordinator's admin lock: the round then only elects and retires, as the real one.
    pub fn reconcile(&mut self, world: &mut World) {
        let held = self.core.retiring();
        let effects = self.core.reconcile(self.instant(world.now), held);
        self.carry_out(world, effects);
        world.after(self.heartbeat / 2, Event::Reconcile);
    }

    /// The time the core asked to be woken at.
    pub fn wake(&mut self, world: &mut World) {
        let effects = self.core.tick(self.instant(world.now));
        self.carry_out(world, effects);
    }

    /// An answer from a node.
    pub fn on_answer(&mut self, world: &mut World, id: u64, response: ControlResponse) {
        let effects = self.core.on_answer(id, Some(response), self.instant(world.now));
        self.carry_out(world, effects);
    }

    /// AddServers for one replica: `node` joins `shard` as a learner.
    pub fn add_replica(&mut self, world: &mut World, shard: ShardId, node: &str) {
        let effects = self.core.add_replica(shard, node, self.instant(world.now));
        self.carry_out(world, effects);
    }

    /// RemoveServers for one replica, unless it would leave fewer than three voters: with
    /// fewer, one damaged log can lose data no protocol could keep.
    pub fn remove_replica(&mut self, world: &mut World, shard: ShardId, node: &str) {
        let Some(s) = self.core.meta().shards.get(&shard) else { return };
        // With the membership rule broken a voter goes at once, so nothing waits in line.
        let waiting =
            if self.core.broken == Some(driver::Broken::Membership) { 0 } else { self.core.leaving(shard).len() };
        if s.replicas.iter().any(|r| r == node) && s.replicas.len() - waiting <= 3 {
            return;
        }
        let effects = self.core.remove_replica(shard, node, self.instant(world.now));
        self.carry_out(world, effects);
    }

    /// A planned switchover of `shard` to `to` (or the most caught-up follower); one the
    /// core refuses (no primary, one under way) is dropped, as the admin would be told.
    pub fn switchover(&mut self, world: &mut World, shard: ShardId, to: Option<String>) {
        let now = self.instant(world.now);
        if let Ok(effects) = self.core.switchover(shard, to.as_deref(), now) {
            self.carry_out(world, effects);
        }
    }

    /// The shard's primary, as the topology names it.
    pub fn primary_of(&self, shard: ShardId) -> Option<&str> {
        self.core.meta().shards.get(&shard).and_then(|s| s.primary.as_deref())
    }
}
