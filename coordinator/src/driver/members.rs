//! Roles and replica sets, one voter at a time: the core's side.
//!
//! The rules (see [`ShardMeta`](crate::meta::ShardMeta)): a new replica joins as a
//! learner and is promoted once caught up; a voter leaves by being retired; each change
//! waits until the previous one has settled, that is until the shard's primary shows a
//! majority of the current set durably holding everything it had when it took the set.
//! Then every majority of the new set meets every majority that may have committed an
//! entry, which a change of two voters at once (or one made before the last settled)
//! would not guarantee.

use std::time::Instant;

use shardline_protocol::{ControlRequest, ShardId};
use tracing::{info, warn};

use super::answers::Purpose;
use super::{Broken, Core, Effect};
use crate::reconcile::can_retire;

impl Core {
    /// Tells `server` to follow the shard's primary; once it does, it serves reads after
    /// reaching the primary's commit index of now.
    pub(super) fn follow(&mut self, shard: ShardId, server: &str, now: Instant) -> Option<Effect> {
        let s = self.meta.shards.get(&shard)?;
        let primary = s.primary.clone()?;
        let target = self.status.get(&primary).and_then(|st| st.shard(shard)).map_or(0, |st| st.commit_index);
        let request = ControlRequest::BecomeFollower { shard, term: s.term, primary: self.meta.addr(&primary) };
        let purpose = Purpose::Follow { shard, node: server.to_owned(), target: Some(target) };
        Some(self.call(server, request, purpose, now))
    }

    /// Creates the shard's replica on a node alive without it (a replacement, or an
    /// AddServers whose configure was lost); it then follows. A voter that lost its replica
    /// rejoins as a learner (see [`ShardMeta::demote`](crate::meta::ShardMeta::demote)).
    pub(super) fn configure(&mut self, shard: ShardId, server: &str, now: Instant) -> Option<Effect> {
        let voter = self.meta.shards.get(&shard)?.replicas.iter().any(|r| r == server);
        // Before either fix, a voter was configured as a voter.
        if voter && !matches!(self.broken, Some(Broken::WipedVoter | Broken::Membership)) {
            // Settling: it stays without a replica, voting in nothing, for now.
            self.save("lost replica", |m| m.shards.get_mut(&shard).is_some_and(|s| s.demote(server))).filter(|d| *d)?;
            warn!(%shard, node = server, "a voter came back without its replica: it rejoins as a learner");
        }
        let spec = self.meta.shards[&shard].spec;
        let schema = self.meta.schema.clone()?;
        let request = ControlRequest::ConfigureShard { shard: spec, schema };
        Some(self.call(server, request, Purpose::Configure { shard, node: server.to_owned() }, now))
    }

    /// A replica was created (`ok`): it follows, and the primary is told its set if it
    /// has not acknowledged this one.
    pub(super) fn on_configured(&mut self, shard: ShardId, node: &str, ok: bool, now: Instant) -> Vec<Effect> {
        let Some(s) = self.meta.shards.get(&shard) else { return Vec::new() };
        if !ok || !s.holds(node) || s.primary.is_none() {
            return Vec::new();
        }
        info!(%shard, node, "replica created");
        let told = self.told.get(&shard) == Some(&s.replica_set());
        // A newcomer (no catch-up target yet) is told to follow by the repoint itself.
        let newcomer = s.catch_up.get(node) == Some(&u64::MAX);
        let mut out = Vec::new();
        if told || !newcomer {
            out.extend(self.follow(shard, node, now));
        }
        if !told {
            out.extend(self.repoint(shard, now));
        }
        out
    }

    /// Tells `shard`'s primary its current replica set at the same term, and learners not
    /// yet following to follow it (their catch-up target: the primary's log now).
    pub fn repoint(&mut self, shard: ShardId, now: Instant) -> Vec<Effect> {
        let Some(s) = self.meta.shards.get(&shard) else { return Vec::new() };
        let Some(primary) = s.primary.clone() else { return Vec::new() };
        let others = |names: &[String]| names.iter().filter(|r| **r != primary).map(|r| self.meta.addr(r)).collect();
        let (followers, learners) = (others(&s.replicas), others(&s.learners));
        let fresh: Vec<String> = s
            .catch_up
            .iter()
            .filter(|(n, t)| **t == u64::MAX && **n != primary && s.holds(n))
            .map(|(n, _)| n.clone())
            .collect();
        let set = s.replica_set();
        let target = self.status.get(&primary).and_then(|st| st.shard(shard)).map_or(0, |st| st.last.index);
        let follow = ControlRequest::BecomeFollower { shard, term: set.term, primary: self.meta.addr(&primary) };
        let lease_ms = self.cfg.lease.as_millis() as u64;
        let lead = ControlRequest::BecomePrimary { shard, term: set.term, followers, learners, lease_ms };
        let mut out = Vec::new();
        for name in &fresh {
            let purpose = Purpose::Follow { shard, node: name.clone(), target: Some(target) };
            out.push(self.call(name, follow.clone(), purpose, now));
        }
        out.push(self.call(&primary.clone(), lead, Purpose::Repoint { shard, node: primary, set }, now));
        out
    }

    /// Records that the primary at `term` showed the shard's last change settled.
    pub(super) fn settled(&mut self, shard: ShardId, term: u64) {
        let _ = self.save("settled", |m| {
            if let Some(s) = m.shards.get_mut(&shard).filter(|s| s.term == term && s.primary.is_some()) {
                s.unsettled = false;
            }
        });
    }

    /// Makes learner `server` a voter (it has caught up and the set is settled).
    pub(super) fn promote(&mut self, shard: ShardId, server: &str, now: Instant) -> Vec<Effect> {
        let promoted = self.save("promotion", |m| m.shards.get_mut(&shard).is_some_and(|s| s.promote(server)));
        if promoted != Some(true) {
            return Vec::new();
        }
        info!(%shard, node = server, "caught up: now a voter");
        self.repoint(shard, now)
    }

    /// AddServers for one replica of an existing shard: `node` joins as a learner
    /// (configured empty, then told to follow, the primary told its new set); the
    /// reconcile rounds promote it once it has caught up.
    pub fn add_replica(&mut self, shard: ShardId, node: &str, now: Instant) -> Vec<Effect> {
        let Some(s) = self.meta.shards.get(&shard) else { return Vec::new() };
        if s.holds(node) || self.leaving(shard).iter().any(|n| n == node) {
            return Vec::new();
        }
        // Before scenario 1's fix: a new replica voted at once.
        let voter = self.broken == Some(Broken::Membership);
        let added = self.save("new replica", |m| {
            let s = m.shards.get_mut(&shard).expect("checked above");
            if voter {
                s.replicas.push(node.to_owned());
            } else {
                s.learners.push(node.to_owned());
            }
            s.catch_up.insert(node.to_owned(), u64::MAX);
            s.spec
        });
        let (Some(spec), Some(schema)) = (added, self.meta.schema.clone()) else { return Vec::new() };
        let request = ControlRequest::ConfigureShard { shard: spec, schema };
        vec![self.call(node, request, Purpose::Configure { shard, node: node.to_owned() }, now)]
    }

    /// RemoveServers for one replica: a learner leaves at once; a voter is queued, and
    /// retired (one at a time, once the last change settled) by the reconcile rounds.
    pub fn remove_replica(&mut self, shard: ShardId, node: &str, now: Instant) -> Vec<Effect> {
        let Some(s) = self.meta.shards.get(&shard) else { return Vec::new() };
        if s.learners.iter().any(|l| l == node) {
            let dropped = self.save("learner removed", |m| {
                let s = m.shards.get_mut(&shard).expect("checked above");
                s.learners.retain(|l| l != node);
                s.catch_up.remove(node);
            });
            if dropped.is_none() {
                return Vec::new();
            }
            let mut out = self.repoint(shard, now);
            out.push(self.call(node, ControlRequest::DropShard { shard }, Purpose::Drop, now));
            return out;
        }
        if !s.replicas.iter().any(|r| r == node) || self.leaving(shard).iter().any(|n| n == node) {
            return Vec::new();
        }
        if self.broken == Some(Broken::Membership) {
            // Before scenario 1's fix: removed at once, whatever is still settling.
            if self.electing(shard) {
                return Vec::new();
            }
            self.meta.shards.get_mut(&shard).expect("known").unsettled = false;
        }
        self.leaving.entry(shard).or_default().push(node.to_owned());
        let mut out = Vec::new();
        if self.broken == Some(Broken::Membership) {
            self.retire_next(now, &mut out);
        }
        out
    }

    /// Gives up retiring what is still queued for `shard` (the admin operation's deadline
    /// passed); returns the voters left.
    pub fn cancel_retire(&mut self, shard: ShardId) -> Vec<String> {
        self.leaving.remove(&shard).unwrap_or_default()
    }

    /// Retires the next queued voter of each shard whose last change has settled and
    /// whose other voters can carry it; a retired primary is replaced by an election.
    pub(super) fn retire_next(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let ready: Vec<(ShardId, String)> = self
            .leaving
            .iter()
            .filter_map(|(id, queue)| {
                let s = self.meta.shards.get(id)?;
                let settled = !s.unsettled && s.primary.is_some() && !self.electing(*id);
                let next = queue.first().filter(|_| settled)?;
                let healthy =
                    self.broken == Some(Broken::Membership) || can_retire(s, next, |n| self.observe_lately(n, now));
                healthy.then(|| (*id, next.clone()))
            })
            .collect();
        for (shard, node) in ready {
            let queue = self.leaving.get_mut(&shard).expect("queued");
            queue.remove(0);
            if queue.is_empty() {
                self.leaving.remove(&shard);
            }
            let Some(Some(was_primary)) = self.save("retirement", |m| m.shards.get_mut(&shard)?.retire(&node)) else {
                continue;
            };
            info!(%shard, node, was_primary, "replica retired");
            if was_primary {
                out.extend(self.elect(shard, now));
            } else {
                out.extend(self.repoint(shard, now));
            }
            // Stop the retired replica serving at once (best effort: it may be down).
            out.push(self.call(&node, ControlRequest::DropShard { shard }, Purpose::Drop, now));
        }
    }
}
