//! Running an election for one shard: persist the new term, then drive an
//! [`ElectionRound`] (fence the replicas with the term, pick the most up-to-date, tell
//! everyone their role) over real connections.

use std::time::Instant;

use futures::future::join_all;
use shardline_protocol::{ControlResponse, ErrorCode, ShardId};
use tracing::{info, warn};

use crate::cluster::Coordinator;
use crate::round::{ElectionRound, Outcome};

/// The majority of `n` replicas.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

impl Coordinator {
    /// Elects a primary for `shard` at a new term; `needed` overrides the votes required
    /// (RemoveServers passes what the old replica set needs). Returns the new primary.
    pub(crate) async fn elect(&self, shard: ShardId, needed: Option<usize>) -> Result<String, ErrorCode> {
        let started = Instant::now();
        // The term is persisted before any replica hears of it: never handed out twice.
        let (term, replicas) = self
            .update(|meta| {
                let s = meta.shards.get_mut(&shard)?;
                s.term += 1;
                s.primary = None;
                Some((s.term, s.replicas.clone()))
            })?
            .ok_or(ErrorCode::UnknownShard { shard })?;
        self.publish();
        let addrs: Vec<_> = {
            let meta = self.meta();
            replicas.iter().map(|r| meta.addr(r)).collect()
        };
        let needed = needed.unwrap_or_else(|| majority(replicas.len()));
        let mut round = ElectionRound::new(shard, term, addrs, needed);
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
        self.update(|meta| {
            if let Some(s) = meta.shards.get_mut(&shard) {
                if s.term == term {
                    s.primary = Some(primary.clone());
                    s.catch_up.remove(&primary);
                }
            }
        })?;
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
