//! A planned switchover as the core drives it (`FAILOVER <shard> [server]`): move a
//! shard's primary on purpose, with no client error and no write lost or doubled.
//!
//! Raft's leadership transfer, with the coordinator as the one who runs elections:
//! 1. The primary is told to hand off ([`ControlRequest::Handoff`]): it refuses new writes
//!    (definitely, nothing logged: the balancer retries them where the topology points
//!    next) and goes on replicating what it has logged.
//! 2. Heartbeats sent after it answered show when the target holds the primary's whole
//!    log and the primary has committed all of it ([`caught_up`]).
//! 3. An election at a new term that prefers the target among the longest logs: the old
//!    primary votes (so no lease wait), the target wins, the rest follow.
//!
//! The handoff ends by itself after [`HANDOFF`], so a switchover abandoned half-way (the
//! target died, the coordinator was killed) costs at most that much of refused writes.

use std::time::{Duration, Instant};

use shardline_protocol::{ControlRequest, ControlResponse, ErrorCode, ReplicaRole, ShardId, ShardState};
use tracing::{info, warn};

use super::answers::Purpose;
use super::{Broken, Core, Effect};

/// How long the old primary refuses writes while its target catches up; well within the
/// balancer's retry deadline, so the writes refused meanwhile are retried, not failed.
pub const HANDOFF: Duration = Duration::from_millis(2000);

/// A switchover's plan: who leads now, at which term, and who will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switchover {
    /// The shard.
    pub shard: ShardId,
    /// Its primary now.
    pub from: String,
    /// The primary's term.
    pub term: u64,
    /// The replica that is to lead.
    pub to: String,
}

/// Where a switchover stands.
#[derive(Debug)]
pub(super) enum Switch {
    /// The handoff call is under way.
    HandingOff(Switchover),
    /// The primary refuses writes since `since`; the target catches up until `until`.
    CatchingUp { plan: Switchover, since: Instant, until: Instant },
    /// The election that prefers the target is under way; until `until`, the reconcile
    /// loop's elections of the shard (after one that chose nobody) prefer it too.
    Electing { plan: Switchover, until: Instant },
    /// Over: the new primary, or why not.
    Done(Result<String, ErrorCode>),
}

/// Checks a switchover request against the configuration and the heartbeats: the shard has
/// a primary, and the target (or, without one, the most caught-up other voter) is a voter
/// that answers heartbeats and serves. `Ok(None)`: the target leads already.
pub fn plan(core: &Core, shard: ShardId, to: Option<&str>, now: Instant) -> Result<Option<Switchover>, ErrorCode> {
    let s = core.meta().shards.get(&shard).ok_or(ErrorCode::UnknownShard { shard })?;
    let unavailable = |reason: String| ErrorCode::Unavailable { shard, reason };
    let from =
        s.primary.clone().ok_or_else(|| unavailable("it has no primary now (an election is under way)".into()))?;
    if to == Some(from.as_str()) {
        return Ok(None);
    }
    let usable = |name: &str| -> Result<&ShardState, ErrorCode> {
        let seen = core.observe(name, now);
        let state = seen.status.and_then(|st| st.shard(shard)).filter(|_| seen.alive);
        let state = state.ok_or_else(|| unavailable(format!("{name} does not answer heartbeats")))?;
        match &state.fault {
            Some(why) => Err(unavailable(format!("{name} is repairing its replica: {why}"))),
            None if !state.serving => Err(unavailable(format!("{name} has not caught up yet"))),
            None => Ok(state),
        }
    };
    let to = match to {
        Some(name) if s.learners.iter().any(|l| l == name) => {
            return Err(unavailable(format!("{name} is still catching up as a learner; it cannot lead yet")))
        }
        Some(name) if !s.replicas.iter().any(|r| r == name) => {
            return Err(ErrorCode::BadRequest(format!("{name} holds no replica of {shard}")))
        }
        Some(name) => usable(name).map(|_| name.to_owned())?,
        None => {
            let others = s.replicas.iter().filter(|r| **r != from);
            let candidates = others.filter_map(|r| usable(r).ok().map(|st| (st.last, r)));
            let best = candidates.max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)));
            best.map(|(_, r)| r.clone()).ok_or_else(|| unavailable("no other voter can lead now".into()))?
        }
    };
    Ok(Some(Switchover { shard, from, term: s.term, to }))
}

/// Whether the target holds everything the handing-off primary logged, and the primary has
/// committed all of it: nothing is left in flight that the election could leave behind.
pub fn caught_up(primary: &ShardState, target: &ShardState, term: u64) -> bool {
    primary.role == ReplicaRole::Primary
        && primary.term == term
        && primary.commit_index >= primary.last.index
        && target.last >= primary.last
}

impl Core {
    /// Starts a switchover of `shard` to `to` (or the most caught-up other voter). Its
    /// outcome comes from [`Core::switch_result`].
    pub fn switchover(&mut self, shard: ShardId, to: Option<&str>, now: Instant) -> Result<Vec<Effect>, ErrorCode> {
        if self.switching(shard) || self.electing(shard) {
            let reason = "a switchover or an election of it is under way".into();
            return Err(ErrorCode::Unavailable { shard, reason });
        }
        let Some(plan) = plan(self, shard, to, now)? else {
            let primary = self.meta.shards[&shard].primary.clone().expect("the plan saw a primary");
            self.switches.insert(shard, Switch::Done(Ok(primary)));
            return Ok(Vec::new());
        };
        info!(%shard, from = %plan.from, to = %plan.to, term = plan.term, "planned switchover");
        let request = ControlRequest::Handoff { shard, term: plan.term, for_ms: HANDOFF.as_millis() as u64 };
        let purpose = Purpose::Handoff { shard, term: plan.term };
        let call = self.call(&plan.from.clone(), request, purpose, now);
        self.switches.insert(shard, Switch::HandingOff(plan));
        Ok(vec![call])
    }

    /// The target of `shard`'s switchover, once it has caught up: elections of the shard
    /// prefer it.
    pub(super) fn switch_target(&self, shard: ShardId) -> Option<String> {
        match self.switches.get(&shard) {
            Some(Switch::Electing { plan, .. }) => Some(plan.to.clone()),
            _ => None,
        }
    }

    /// Whether a switchover of `shard` is under way.
    pub fn switching(&self, shard: ShardId) -> bool {
        self.switches.get(&shard).is_some_and(|s| !matches!(s, Switch::Done(_)))
    }

    /// The outcome of `shard`'s last switchover once it is over (taken: asked once).
    pub fn switch_result(&mut self, shard: ShardId) -> Option<Result<String, ErrorCode>> {
        match self.switches.remove(&shard)? {
            Switch::Done(result) => Some(result),
            running => {
                self.switches.insert(shard, running);
                None
            }
        }
    }

    /// The primary answered the handoff.
    pub(super) fn on_handoff(&mut self, shard: ShardId, term: u64, answer: Option<ControlResponse>, now: Instant) {
        let Some(Switch::HandingOff(plan)) = self.switches.remove(&shard) else { return };
        let next = match answer {
            Some(ControlResponse::Ok) if plan.term == term => {
                // Heartbeats sent from now on show the primary's log as it ends.
                let until = match self.broken == Some(Broken::SwitchoverIgnoresLogs) {
                    true => now,
                    false => now + HANDOFF / 2,
                };
                Switch::CatchingUp { plan, since: now, until }
            }
            Some(ControlResponse::Error(e)) => Switch::Done(Err(e)),
            other => {
                let reason = format!("{} did not take the handoff: {other:?}", plan.from);
                Switch::Done(Err(ErrorCode::Unavailable { shard, reason }))
            }
        };
        self.switches.insert(shard, next);
    }

    /// Moves every switchover on that can: an election once the target has caught up, a
    /// result once the election is over or the target failed to catch up in time.
    pub(super) fn advance_switches(&mut self, now: Instant) -> Vec<Effect> {
        let shards: Vec<ShardId> = self.switches.keys().copied().collect();
        let mut out = Vec::new();
        for shard in shards {
            let next = match self.switches.remove(&shard) {
                Some(Switch::CatchingUp { plan, since, until }) => {
                    let states = self
                        .shard_state_since(&plan.from, shard, since)
                        .zip(self.shard_state_since(&plan.to, shard, since));
                    let reckless = self.broken == Some(Broken::SwitchoverIgnoresLogs);
                    if reckless || states.is_some_and(|(p, t)| caught_up(p, t, plan.term)) {
                        out.extend(self.elect_preferring(shard, Some(plan.to.clone()), now));
                        Switch::Electing { plan, until: now + HANDOFF }
                    } else if now >= until {
                        let reason = format!(
                            "{} did not catch up with {} within {:?}; the primary stays and takes writes again",
                            plan.to,
                            plan.from,
                            HANDOFF / 2
                        );
                        Switch::Done(Err(ErrorCode::Unavailable { shard, reason }))
                    } else {
                        Switch::CatchingUp { plan, since, until }
                    }
                }
                Some(Switch::Electing { plan, until }) if !self.electing(shard) => {
                    Switch::Done(match self.meta.shards.get(&shard).and_then(|s| s.primary.clone()) {
                        // An election that chose nobody (its queries timed out) is held
                        // again by the reconcile loop, for the same target.
                        None if now < until => {
                            self.switches.insert(shard, Switch::Electing { plan, until });
                            continue;
                        }
                        Some(winner) if winner == plan.to => Ok(winner),
                        other => {
                            warn!(%shard, to = %plan.to, ?other, "the switchover's target did not win");
                            let reason = format!("the election chose {other:?}, not {}", plan.to);
                            Err(ErrorCode::Unavailable { shard, reason })
                        }
                    })
                }
                Some(other) => other,
                None => continue,
            };
            self.switches.insert(shard, next);
        }
        out
    }
}
