//! Leases as the coordinator grants them, and when each shard's have surely ended.
//!
//! A primary holds a lease for one term. It is granted with a heartbeat, counted from when
//! the node handled an *earlier* heartbeat (see `ControlRequest::Heartbeat`), which happened
//! before that heartbeat's answer reached the coordinator. So a lease granted on an answer
//! that arrived at `a` ends, in real time, before `a + lease` (plus what clock drift can
//! add), however late the node reads the grant. A new primary's first lease counts from
//! its answer to the election query, which also reached the coordinator before it chose.
//! [`LeaseBook`] keeps, per shard, the latest such bound; a successor is told to lead only
//! once it has passed, so no two primaries of a shard ever hold a lease at the same instant.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use shardline_protocol::{LeaseGrant, ShardId};

use crate::meta::ClusterMeta;

/// When each shard's granted leases have ended.
#[derive(Debug, Clone)]
pub struct LeaseBook {
    lease: Duration,
    margin: Duration,
    until: HashMap<ShardId, Instant>,
}

impl LeaseBook {
    /// A book for leases of `lease`; a tenth of it (and 5 ms) covers clock drift.
    pub fn new(lease: Duration) -> LeaseBook {
        LeaseBook { lease, margin: lease / 10 + Duration::from_millis(5), until: HashMap::new() }
    }

    /// The grant to send `server` with its next heartbeat: every shard it leads, at the
    /// term it leads, counted from heartbeat `seq`, whose answer arrived at `answered`.
    pub fn grant(&mut self, meta: &ClusterMeta, server: &str, seq: u64, answered: Instant) -> Option<LeaseGrant> {
        let shards: Vec<(ShardId, u64)> = meta
            .shards
            .values()
            .filter(|s| s.primary.as_deref() == Some(server))
            .map(|s| (s.spec.id, s.term))
            .collect();
        if shards.is_empty() {
            return None;
        }
        for (shard, _) in &shards {
            self.extend(*shard, answered);
        }
        Some(LeaseGrant { seq, shards })
    }

    /// A primary is about to be told to lead; its first lease counts from its vote, which
    /// arrived before `now`.
    pub fn elected(&mut self, shard: ShardId, now: Instant) {
        self.extend(shard, now);
    }

    /// When a new primary may be told to lead: every lease granted for the shard has
    /// ended (`None`: none was ever granted).
    pub fn clear_at(&self, shard: ShardId) -> Option<Instant> {
        self.until.get(&shard).copied()
    }

    fn extend(&mut self, shard: ShardId, from: Instant) {
        let end = from + self.lease + self.margin;
        let until = self.until.entry(shard).or_insert(end);
        *until = (*until).max(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::ShardMeta;
    use shardline_protocol::ShardSpec;

    #[test]
    fn a_successor_waits_for_the_last_grant_to_run_out() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut meta = ClusterMeta::default();
        let spec = ShardSpec { id: ShardId(1), low: 0, size: 10 };
        let replicas = vec!["a".to_owned(), "b".to_owned()];
        meta.shards.insert(
            ShardId(1),
            ShardMeta {
                spec,
                term: 3,
                primary: Some("a".into()),
                replicas,
                catch_up: Default::default(),
                learners: vec![],
                unsettled: false,
            },
        );
        let mut book = LeaseBook::new(ms(300));
        assert_eq!(book.clear_at(ShardId(1)), None);
        let grant = book.grant(&meta, "a", 7, t0).expect("a leads shard 1");
        assert_eq!(grant, LeaseGrant { seq: 7, shards: vec![(ShardId(1), 3)] });
        assert!(book.grant(&meta, "b", 7, t0).is_none(), "b leads nothing");
        assert_eq!(book.clear_at(ShardId(1)), Some(t0 + ms(335)));
        book.elected(ShardId(1), t0 + ms(100));
        assert_eq!(book.clear_at(ShardId(1)), Some(t0 + ms(435)));
        book.elected(ShardId(1), t0);
        assert_eq!(book.clear_at(ShardId(1)), Some(t0 + ms(435)), "bounds never move back");
    }
}
