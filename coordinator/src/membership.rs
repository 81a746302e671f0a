//! Changing a shard's replica set one voter at a time: the driver's side.
//!
//! The rules (see [`ShardMeta`](crate::meta::ShardMeta)): a new replica joins as a
//! learner and is promoted once caught up; a voter leaves by being retired; each change
//! waits until the previous one has settled, that is until the shard's primary shows a
//! majority of the current set durably holding everything it had when it took the set.
//! Then every majority of the new set meets every majority that may have committed an
//! entry, which a change of two voters at once (or one made before the last settled)
//! would not guarantee.

use std::time::{Duration, Instant};

use shardline_protocol::{ControlRequest, ControlResponse, ErrorCode, ReplicaRole, ServerAddr, ShardId};
use tracing::{info, warn};

use crate::cluster::Coordinator;
use crate::failover::Electing;
use crate::reconcile::{can_retire, Observed};

/// How often a retirement checks whether the shard has settled.
const POLL: Duration = Duration::from_millis(20);

impl Coordinator {
    /// Tells `shard`'s primary its current replica set at the same term, and learners not
    /// yet following to follow it; learners get their catch-up target.
    pub(crate) async fn repoint(&self, shard: ShardId) -> Result<(), ErrorCode> {
        let (set, primary, followers, learners, fresh) = {
            let meta = self.meta();
            let s = &meta.shards[&shard];
            let Some(p) = &s.primary else { return Ok(()) };
            let addrs = |names: &mut dyn Iterator<Item = &String>| -> Vec<ServerAddr> {
                names.filter(|r| *r != p).map(|r| meta.addr(r)).collect()
            };
            let followers = addrs(&mut s.replicas.iter());
            let learners = addrs(&mut s.learners.iter());
            let fresh: Vec<String> =
                s.catch_up.iter().filter(|(_, t)| **t == u64::MAX).map(|(n, _)| n.clone()).collect();
            (s.replica_set(), meta.addr(p), followers, learners, fresh)
        };
        let target = {
            let health = self.health.lock().expect("health lock");
            health.status.get(&primary.name).and_then(|st| st.shard(shard)).map_or(0, |st| st.last.index)
        };
        let follow = ControlRequest::BecomeFollower { shard, term: set.term, primary: primary.clone() };
        for f in followers.iter().chain(&learners).filter(|f| fresh.contains(&f.name)) {
            if let Ok(ControlResponse::Ok) = self.control(&f.addr, &follow).await {
                self.role_changed(shard, &f.name);
                self.update(|m| {
                    if let Some(s) = m.shards.get_mut(&shard) {
                        s.catch_up.insert(f.name.clone(), target);
                    }
                })?;
            }
        }
        let lease_ms = self.cfg.lease.as_millis() as u64;
        let lead = ControlRequest::BecomePrimary { shard, term: set.term, followers, learners, lease_ms };
        match self.control(&primary.addr, &lead).await? {
            ControlResponse::Ok => {
                self.role_changed(shard, &primary.name);
                info!(%shard, term = set.term, primary = %primary.name, voters = ?set.voters, learners = ?set.learners, "primary told its replica set");
                self.told(shard, set);
                Ok(())
            }
            ControlResponse::Error(e) => Err(e),
            other => Err(ErrorCode::Internal(format!("unexpected answer {other:?}"))),
        }
    }

    /// Records that the primary at `term` showed the shard's last change settled.
    pub(crate) fn settled(&self, shard: ShardId, term: u64) {
        let result = self.update(|m| {
            if let Some(s) = m.shards.get_mut(&shard).filter(|s| s.term == term && s.primary.is_some()) {
                s.unsettled = false;
            }
        });
        if let Err(e) = result {
            warn!(%shard, %e, "could not record the replica set settled");
        }
    }

    /// Makes learner `server` a voter (it has caught up and the set is settled).
    pub(crate) async fn promote(&self, shard: ShardId, server: &str) {
        let promoted = self.update(|m| m.shards.get_mut(&shard).is_some_and(|s| s.promote(server)));
        if let Ok(true) = promoted {
            info!(%shard, node = server, "caught up: now a voter");
            if let Err(e) = self.repoint(shard).await {
                warn!(%shard, %e, "could not tell the primary its new voter; the reconcile loop will retry");
            }
            self.publish();
        }
    }

    /// Waits until `shard`'s last change has settled, telling its primary the set (and
    /// recording the settlement) as the reconcile loop would; errs at `deadline`.
    async fn wait_settled(&self, shard: ShardId, deadline: Instant) -> Result<(), ErrorCode> {
        loop {
            let (unsettled, set, primary) = {
                let meta = self.meta();
                let Some(s) = meta.shards.get(&shard) else { return Ok(()) };
                (s.unsettled, s.replica_set(), s.primary.clone())
            };
            if !unsettled {
                return Ok(());
            }
            if let Some(p) = &primary {
                let (told, shows) = {
                    let health = self.health.lock().expect("health lock");
                    let state = health.status.get(p).and_then(|st| st.shard(shard));
                    let shows = health.fresh(shard, p)
                        && state.is_some_and(|st| st.role == ReplicaRole::Primary && st.term == set.term && st.settled);
                    (health.told.get(&shard) == Some(&set), shows)
                };
                if !told {
                    let _ = self.repoint(shard).await;
                } else if shows {
                    self.settled(shard, set.term);
                    continue;
                }
            }
            if Instant::now() >= deadline {
                return Err(ErrorCode::Timeout(format!(
                    "shard {shard}'s replica set did not settle in time (its primary must show a majority \
                     of the set holding its log); run the removal again to go on"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Retires voter `server` from `shard` once the set has settled: one voter at a time.
    /// A retired primary is replaced by an election among the voters left.
    pub(crate) async fn retire(&self, shard: ShardId, server: &str, deadline: Instant) -> Result<(), ErrorCode> {
        let was_primary = loop {
            self.wait_settled(shard, deadline).await?;
            let healthy = {
                let now = Instant::now();
                let meta = self.meta();
                let health = self.health.lock().expect("health lock");
                let observe = |n: &str| Observed { alive: health.detector.alive(n, now), status: health.status.get(n) };
                meta.shards.get(&shard).is_none_or(|s| can_retire(s, server, observe))
            };
            // No election may run while the set changes (it would choose among, and from,
            // the old set): claim the shard as an election does.
            let claim = if healthy { Electing::start(&self.electing, shard) } else { None };
            let retired = match claim {
                None => None,
                Some(_) => self.update(|m| {
                    let s = m.shards.get_mut(&shard)?;
                    if !s.replicas.iter().any(|r| r == server) {
                        return Some(None);
                    }
                    s.retire(server).map(Some)
                })?,
            };
            drop(claim);
            match retired {
                Some(done) => break done,
                None if Instant::now() >= deadline => {
                    return Err(ErrorCode::Timeout(format!(
                        "could not retire {server} from shard {shard} in time: that needs a primary whose \
                         replica set has settled, and a majority of healthy voters left without it"
                    )))
                }
                None => tokio::time::sleep(POLL).await,
            }
        };
        let Some(was_primary) = was_primary else { return Ok(()) };
        info!(%shard, node = server, was_primary, "replica retired");
        self.publish();
        let addr = self.meta().addr(server).addr;
        // Stop the retired replica serving at once (best effort: it may be down).
        let _ = self.control(&addr, &ControlRequest::DropShard { shard }).await;
        if !was_primary {
            if let Err(e) = self.repoint(shard).await {
                // The reconcile loop tells it again (the set it acknowledged is not this one).
                warn!(%shard, %e, "could not tell the primary its smaller replica set");
            }
            return Ok(());
        }
        loop {
            match self.elect(shard).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) if self.meta().shards.get(&shard).is_some_and(|s| s.primary.is_some()) => return Ok(()),
                Err(_) => tokio::time::sleep(self.cfg.heartbeat_interval).await,
            }
        }
    }
}
