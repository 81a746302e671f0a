//! Running an election for one shard: persist the new term, fence the replicas with it,
//! pick the most up-to-date, tell everyone their role.

use std::time::Instant;

use futures::future::join_all;
use shardline_protocol::{ControlRequest, ControlResponse, ErrorCode, ShardId, Vote};
use tracing::{info, warn};

use crate::cluster::Coordinator;
use crate::election::{decide, Decision};

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
        let query = ControlRequest::ElectionQuery { shard, term };
        let answers = join_all(addrs.iter().map(|a| self.control(&a.addr, &query))).await;
        let mut votes: Vec<(String, Vote)> = Vec::new();
        let mut newer = None;
        for (addr, answer) in addrs.iter().zip(answers) {
            match answer {
                Ok(ControlResponse::Vote(v)) => votes.push((addr.name.clone(), v)),
                Ok(ControlResponse::Error(ErrorCode::StaleTerm { current, .. })) => {
                    newer = newer.max(Some(current));
                }
                _ => {}
            }
        }
        if let Some(current) = newer {
            // A replica knows a newer term than ours (metadata restored from an old copy?):
            // move past it and let the next round elect.
            self.update(|meta| {
                if let Some(s) = meta.shards.get_mut(&shard) {
                    s.term = s.term.max(current);
                }
            })?;
            return Err(ErrorCode::StaleTerm { current, got: term });
        }
        let needed = needed.unwrap_or_else(|| majority(replicas.len()));
        let primary = match decide(&votes, needed) {
            Decision::Elect { primary, last } => {
                info!(%shard, term, %primary, last_index = last.index, last_term = last.term, votes = votes.len(), "elected");
                primary
            }
            Decision::NoQuorum { votes, needed } => {
                self.counters.lock().expect("counters lock").failed_elections += 1;
                warn!(%shard, term, votes, needed, "no quorum: the shard stays without a primary");
                return Err(ErrorCode::NoQuorum { shard, acked: votes as u32, needed: needed as u32 });
            }
        };
        let followers: Vec<_> = addrs.iter().filter(|a| a.name != primary).cloned().collect();
        let leader = addrs.iter().find(|a| a.name == primary).expect("the winner is a replica").clone();
        let lease_ms = self.cfg.lease.as_millis() as u64;
        let lead = ControlRequest::BecomePrimary { shard, term, followers: followers.clone(), lease_ms };
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
        let follow = ControlRequest::BecomeFollower { shard, term, primary: leader };
        let voted: Vec<&String> = votes.iter().map(|(n, _)| n).collect();
        let told = followers.iter().filter(|f| voted.contains(&&f.name)).map(|f| async {
            if let Ok(ControlResponse::Ok) = self.control(&f.addr, &follow).await {
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
