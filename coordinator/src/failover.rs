//! Running an election for one shard: persist the new term, then drive an
//! [`ElectionRound`] (fence the replicas with the term, pick the most up-to-date, tell
//! everyone their role) over real connections.

use std::time::Instant;

use futures::future::join_all;
use shardline_protocol::{ControlResponse, ErrorCode, ShardId};
use tracing::{info, warn};

use std::collections::HashSet;
use std::sync::Mutex;

use crate::cluster::Coordinator;
use crate::meta::ReplicaSet;
use crate::round::{ElectionRound, Outcome};

/// One election per shard at a time: the reconcile loop and an admin operation may both
/// want one. Dropping it ends the claim.
pub(crate) struct Electing<'a> {
    set: &'a Mutex<HashSet<ShardId>>,
    shard: ShardId,
}

impl<'a> Electing<'a> {
    /// Claims `shard`, unless an election of it is already under way.
    pub(crate) fn start(set: &'a Mutex<HashSet<ShardId>>, shard: ShardId) -> Option<Electing<'a>> {
        let claimed = set.lock().expect("electing lock").insert(shard);
        claimed.then(|| Electing { set, shard })
    }
}

impl Drop for Electing<'_> {
    fn drop(&mut self) {
        self.set.lock().expect("electing lock").remove(&self.shard);
    }
}

/// The majority of `n` replicas.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

impl Coordinator {
    /// Elects a primary for `shard` at a new term, on a majority of its voting replicas
    /// (one election per shard at a time). Returns the new primary.
    pub(crate) async fn elect(&self, shard: ShardId) -> Result<String, ErrorCode> {
        let Some(_electing) = Electing::start(&self.electing, shard) else {
            return Err(ErrorCode::Unavailable { shard, reason: "an election is already under way".into() });
        };
        let started = Instant::now();
        // The term is persisted before any replica hears of it: never handed out twice.
        let (term, voters, learners) = self
            .update(|meta| {
                let s = meta.shards.get_mut(&shard)?;
                s.term += 1;
                s.primary = None;
                // Until the winner shows its set settled, the set may not change.
                s.unsettled = true;
                Some((s.term, s.replicas.clone(), s.learners.clone()))
            })?
            .ok_or(ErrorCode::UnknownShard { shard })?;
        self.publish();
        let (voters, learners): (Vec<_>, Vec<_>) = {
            let meta = self.meta();
            (voters.iter().map(|r| meta.addr(r)).collect(), learners.iter().map(|r| meta.addr(r)).collect())
        };
        let mut round = ElectionRound::new(shard, term, voters, learners);
        let queries = round.queries();
        let answers = join_all(queries.iter().map(|(a, q)| self.control(&a.addr, q))).await;
        for ((addr, _), answer) in queries.iter().zip(answers) {
            round.on_answer(&addr.name, answer.ok());
        }
        let lease_ms = self.cfg.lease.as_millis() as u64;
        let (leader, lead, follow) = match round.outcome(lease_ms) {
            Outcome::NewerTerm(current) => {
                // A replica knows a newer term than ours (metadata restored from an old copy?):
                // move past it and let the next round elect.
                self.update(|meta| {
                    if let Some(s) = meta.shards.get_mut(&shard) {
                        s.term = s.term.max(current);
                    }
                })?;
                return Err(ErrorCode::StaleTerm { current, got: term });
            }
            Outcome::NoQuorum { votes, needed } => {
                self.counters.lock().expect("counters lock").failed_elections += 1;
                warn!(%shard, term, votes, needed, "no quorum: the shard stays without a primary");
                return Err(ErrorCode::NoQuorum { shard, acked: votes as u32, needed: needed as u32 });
            }
            Outcome::Lead { primary, lead, follow } => {
                info!(%shard, term, primary = %primary.name, votes = round.votes().len(), "elected");
                (primary, lead, follow)
            }
        };
        let primary = leader.name.clone();
        // No two primaries hold a lease at once: wait out every lease granted before.
        let clear_at = self.leases.lock().expect("leases lock").clear_at(shard);
        if let Some(at) = clear_at.filter(|at| *at > Instant::now()) {
            info!(%shard, wait_ms = at.duration_since(Instant::now()).as_millis() as u64, "waiting out the old lease");
            tokio::time::sleep_until(at.into()).await;
        }
        self.leases.lock().expect("leases lock").elected(shard, Instant::now());
        match self.control(&leader.addr, &lead).await? {
            ControlResponse::Ok => self.role_changed(shard, &primary),
            ControlResponse::Error(e) => return Err(e),
            other => return Err(ErrorCode::Internal(format!("unexpected answer {other:?}"))),
        }
        let (voters, learners) = round.members();
        let won_with = round.votes().iter().find(|(n, _)| *n == primary).map_or(0, |(_, v)| v.last.index);
        let set = ReplicaSet { term, primary: Some(primary.clone()), voters, learners };
        let recorded = self.update(|meta| {
            let Some(s) = meta.shards.get_mut(&shard) else { return false };
            // The round's voters must still be the shard's: a set changed meanwhile (a
            // removal) must not get a primary chosen by, or from, the old one.
            if s.term != term || s.replicas != set.voters {
                return false;
            }
            s.primary = Some(primary.clone());
            s.catch_up.remove(&primary);
            // Learners not yet given a target catch up to the log the winner won with.
            for target in s.catch_up.values_mut().filter(|t| **t == u64::MAX) {
                *target = won_with;
            }
            // What earlier primaries committed must reach a majority of this set before the
            // set may change again.
            s.unsettled = true;
            true
        })?;
        if !recorded {
            return Err(ErrorCode::Unavailable {
                shard,
                reason: format!("the replica set changed during the election at term {term}; electing again"),
            });
        }
        self.told(shard, set);
        let told = follow.iter().map(|(f, request)| async move {
            if let Ok(ControlResponse::Ok) = self.control(&f.addr, request).await {
                self.role_changed(shard, &f.name);
            }
        });
        join_all(told).await;
        let elapsed = started.elapsed().as_millis() as u64;
        {
            let mut c = self.counters.lock().expect("counters lock");
            c.elections += 1;
            c.last_election_ms = elapsed;
        }
        self.publish();
        Ok(primary)
    }
}
