//! One election as the core drives it: persist a new term, query every voter with it,
//! decide on the first majority's answers that elect someone (or all of them, or what
//! arrived before the calls timed out), wait out every lease granted before (unless the
//! old primary voted, which ended its lease), tell the winner to lead, then the others to
//! follow. A planned switchover is an election that prefers its target among the longest
//! logs.

use std::time::Instant;

use shardline_protocol::{ControlRequest, ControlResponse, ServerAddr, ShardId};
use tracing::{debug, info, warn};

use super::answers::Purpose;
use super::{Core, Effect};
use crate::meta::ReplicaSet;
use crate::round::{ElectionRound, Outcome};

/// An election under way.
#[derive(Debug)]
pub(super) struct Election {
    round: ElectionRound,
    started: Instant,
    /// The primary before this election, if the shard had one: once it votes at the new
    /// term it has stepped down, and its lease can serve nothing more.
    deposed: Option<String>,
    /// Whether `deposed` has voted in this round.
    deposed_voted: bool,
    /// Once decided: the follow request for voters that answer after the decision.
    late_follow: Option<ControlRequest>,
    /// Once decided: the winner and its lead request, until sent, and when it may be.
    lead: Option<(ServerAddr, ControlRequest, Instant)>,
    /// Once decided: the follow requests to send once the winner accepts.
    follow: Option<Vec<(ServerAddr, ControlRequest)>>,
}

impl Election {
    /// Whether the winner's wait is over and it has not been told to lead yet.
    pub(super) fn lead_due(&self, now: Instant) -> bool {
        self.lead.as_ref().is_some_and(|(_, _, at)| *at <= now)
    }
}

impl Core {
    /// Starts an election of `shard` at a new term, persisted before any replica hears of
    /// it (one election per shard at a time).
    pub fn elect(&mut self, shard: ShardId, now: Instant) -> Vec<Effect> {
        self.elect_preferring(shard, None, now)
    }

    /// Starts an election of `shard` in which `prefer` wins among the replicas with the
    /// longest log (a planned switchover; `None`: an ordinary election).
    pub fn elect_preferring(&mut self, shard: ShardId, prefer: Option<String>, now: Instant) -> Vec<Effect> {
        if self.electing(shard) {
            return Vec::new();
        }
        let started = self.save("election term", |m| {
            let s = m.shards.get_mut(&shard)?;
            s.term += 1;
            let deposed = s.primary.take();
            // Until the winner shows its set settled, the set may not change.
            s.unsettled = true;
            Some((s.term, s.replicas.clone(), s.learners.clone(), deposed))
        });
        let Some(Some((term, voters, learners, deposed))) = started else { return Vec::new() };
        let addrs = |names: Vec<String>| names.iter().map(|r| self.meta.addr(r)).collect();
        let insist = self.broken == Some(super::Broken::SwitchoverIgnoresLogs);
        let round =
            ElectionRound::new(shard, term, addrs(voters), addrs(learners)).preferring(prefer).insisting(insist);
        let queries = round.queries();
        let election = Election {
            round,
            started: now,
            deposed,
            deposed_voted: false,
            late_follow: None,
            lead: None,
            follow: None,
        };
        self.elections.insert(shard, election);
        let mut out = Vec::new();
        for (to, request) in queries {
            out.push(self.call(&to.name, request, Purpose::Vote { shard, term, node: to.name.clone() }, now));
        }
        out
    }

    pub(super) fn on_vote(
        &mut self,
        shard: ShardId,
        term: u64,
        node: &str,
        answer: Option<ControlResponse>,
        now: Instant,
    ) -> Vec<Effect> {
        let Some(e) = self.elections.get_mut(&shard) else { return Vec::new() };
        if e.round.term() != term {
            return Vec::new();
        }
        let voted = matches!(&answer, Some(ControlResponse::Vote(v)) if v.term == term);
        if !voted {
            debug!(%shard, term, node, ?answer, "a voter answered without a vote");
        }
        if voted && e.deposed.as_deref() == Some(node) {
            e.deposed_voted = true;
        }
        if let (Some(follow), Some(request)) = (e.follow.as_mut(), e.late_follow.as_ref()) {
            // Decided already: a voter that answers now follows the winner with the rest.
            if voted && e.round.is_voter(node) && !follow.iter().any(|(f, _)| f.name == node) {
                follow.push((self.meta.addr(node), request.clone()));
            }
            return Vec::new();
        }
        e.round.on_answer(node, answer);
        if e.round.decidable() {
            self.decide(shard, now)
        } else {
            Vec::new()
        }
    }

    /// Decides an election on the votes in hand.
    fn decide(&mut self, shard: ShardId, now: Instant) -> Vec<Effect> {
        let Some(e) = self.elections.get_mut(&shard) else { return Vec::new() };
        let term = e.round.term();
        match e.round.outcome(self.cfg.lease.as_millis() as u64) {
            Outcome::NewerTerm(current) => {
                // A replica knows a newer term than ours (metadata restored from an old
                // copy?): move past it and let the next round elect.
                warn!(%shard, term, current, "a replica knows a newer term");
                let _ = self.save("newer term", |m| {
                    if let Some(s) = m.shards.get_mut(&shard) {
                        s.term = s.term.max(current);
                    }
                });
                self.failed(shard, now);
                Vec::new()
            }
            Outcome::NoQuorum { votes, needed } => {
                warn!(%shard, term, votes, needed, "no quorum: the shard stays without a primary");
                self.counters.failed_elections += 1;
                self.failed(shard, now);
                Vec::new()
            }
            Outcome::Lead { primary, lead, follow } => {
                info!(%shard, term, primary = %primary.name, votes = e.round.votes().len(), "elected");
                // No two primaries hold a lease at once: wait out every lease granted before,
                // unless its holder voted at this term (it stepped down before answering).
                let at = match e.deposed_voted {
                    true => now,
                    false => self.leases.clear_at(shard).map_or(now, |at| at.max(now)),
                };
                e.late_follow = follow
                    .first()
                    .map(|(_, request)| request.clone())
                    .or_else(|| Some(ControlRequest::BecomeFollower { shard, term, primary: primary.clone() }));
                e.follow = Some(follow);
                e.lead = Some((primary, lead, at));
                if at > now {
                    info!(%shard, wait_ms = (at - now).as_millis() as u64, "waiting out the old lease");
                    return vec![Effect::WakeAt(at)];
                }
                self.lead(shard, now)
            }
        }
    }

    /// Tells an election's winner to lead (its predecessor's leases have ended).
    pub(super) fn lead(&mut self, shard: ShardId, now: Instant) -> Vec<Effect> {
        let Some(e) = self.elections.get_mut(&shard) else { return Vec::new() };
        let Some((primary, lead, _)) = e.lead.take() else { return Vec::new() };
        let term = e.round.term();
        self.leases.elected(shard, now);
        vec![self.call(&primary.name, lead, Purpose::Lead { shard, term, node: primary.name.clone() }, now)]
    }

    /// The winner answered (`ok`: it leads): record it and tell the others to follow.
    pub(super) fn on_lead(&mut self, shard: ShardId, term: u64, node: &str, ok: bool, now: Instant) -> Vec<Effect> {
        let Some(e) = self.elections.remove(&shard) else { return Vec::new() };
        if !ok {
            warn!(%shard, term, node, "the winner did not take the lead; will retry");
            self.failed(shard, now);
            return Vec::new();
        }
        self.roles.insert((shard, node.to_owned()), now);
        let (voters, learners) = e.round.members();
        let won_with = e.round.votes().iter().find(|(n, _)| *n == node).map_or(0, |(_, v)| v.last.index);
        let set = ReplicaSet { term, primary: Some(node.to_owned()), voters, learners };
        let recorded = self.save("new primary", |m| {
            let Some(s) = m.shards.get_mut(&shard) else { return false };
            // The round's voters must still be the shard's: a set changed meanwhile (a
            // removal) must not get a primary chosen by, or from, the old one.
            if s.term != term || s.replicas != set.voters {
                return false;
            }
            s.primary = Some(node.to_owned());
            s.catch_up.remove(node);
            // Learners not yet given a target catch up to the log the winner won with.
            for target in s.catch_up.values_mut().filter(|t| **t == u64::MAX) {
                *target = won_with;
            }
            // What earlier primaries committed must reach a majority of this set before
            // the set may change again.
            s.unsettled = true;
            true
        });
        if recorded != Some(true) {
            warn!(%shard, term, "the replica set changed during the election; electing again");
            self.failed(shard, now);
            return Vec::new();
        }
        // A failover: the shard had another primary before this election (as far as this
        // coordinator run has seen; the first election after a restart is not counted).
        if self.told.get(&shard).and_then(|t| t.primary.as_deref()).is_some_and(|p| p != node) {
            self.counters.failovers += 1;
        }
        self.told.insert(shard, set);
        self.counters.elections += 1;
        self.counters.last_election_ms = now.saturating_duration_since(e.started).as_millis() as u64;
        let mut out = Vec::new();
        for (to, request) in e.follow.unwrap_or_default() {
            let purpose = Purpose::Follow { shard, node: to.name.clone(), target: None };
            out.push(self.call(&to.name, request, purpose, now));
        }
        out
    }

    /// An election that chose no primary: the shard waits a little before the next.
    fn failed(&mut self, shard: ShardId, now: Instant) {
        self.elections.remove(&shard);
        self.backoff.insert(shard, now);
    }
}
