//! Routing decisions, with no I/O: which shard owns a key, how a write batch splits, which
//! replica serves a read, and which errors are worth a retry.
//!
//! A [`Routing`] is built once per topology version (shards sorted by key, one [`Ring`] per
//! shard, server addresses resolved) and shared behind an `Arc`, so a request's routing
//! is a binary search and a ring lookup, with no allocation beyond reference counts.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use shardline_protocol::{Consistency, ErrorCode, ShardId, ShardSpec, Topology, WriteBatch};

use crate::ring::Ring;

/// A server a request can be sent to: its name and address, cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The server's name, e.g. `Server0`.
    pub name: Arc<str>,
    /// Its `host:port`.
    pub addr: Arc<str>,
}

/// One shard as the router sees it.
#[derive(Debug, Clone)]
pub struct ShardRoute {
    /// Identity and key range.
    pub spec: ShardSpec,
    /// The primary's name, if one is elected.
    pub primary: Option<Arc<str>>,
    /// The ring over the replicas that serve ordinary reads.
    pub ring: Ring,
}

/// A topology prepared for routing.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    topology: Topology,
    /// Shards sorted by their lowest key.
    shards: Vec<ShardRoute>,
    /// Server name → target.
    servers: HashMap<String, Target>,
}

impl Routing {
    /// Prepares `topology` for routing: sorts shards, builds each shard's read ring over
    /// its readable, healthy replicas with a known address (all readable ones with an
    /// address if none is healthy; the primary if none is readable).
    pub fn new(topology: Topology) -> Routing {
        let servers: HashMap<String, Target> = topology
            .servers
            .iter()
            .map(|s| {
                let target = Target { name: Arc::from(s.name.as_str()), addr: Arc::from(s.addr.as_str()) };
                (s.name.clone(), target)
            })
            .collect();
        let healthy = |name: &String| topology.server(name).is_some_and(|s| s.healthy);
        let mut shards: Vec<ShardRoute> = topology
            .shards
            .iter()
            .map(|s| {
                // Only servers with an address can be sent anything.
                let known: Vec<&String> = s.readable.iter().filter(|n| servers.contains_key(n.as_str())).collect();
                let mut readers: Vec<&String> = known.iter().copied().filter(|n| healthy(n)).collect();
                if readers.is_empty() {
                    readers = known;
                }
                if readers.is_empty() {
                    readers = s.primary.iter().collect();
                }
                ShardRoute { spec: s.spec, primary: s.primary.as_deref().map(Arc::from), ring: Ring::new(readers) }
            })
            .collect();
        shards.sort_by_key(|s| s.spec.low);
        Routing { topology, shards, servers }
    }

    /// The topology's version (0: none yet).
    pub fn version(&self) -> u64 {
        self.topology.version
    }

    /// The topology this was built from.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Whether there is anything to route to.
    pub fn has_shards(&self) -> bool {
        !self.shards.is_empty()
    }

    /// The shard that owns `key`.
    pub fn shard_of(&self, key: i64) -> Option<ShardId> {
        let after = self.shards.partition_point(|s| s.spec.low <= key);
        let s = self.shards[..after].last()?;
        s.spec.contains(key).then_some(s.spec.id)
    }

    /// A shard's route.
    pub fn shard(&self, id: ShardId) -> Option<&ShardRoute> {
        self.shards.iter().find(|s| s.spec.id == id)
    }

    /// A server's target by name.
    pub fn server(&self, name: &str) -> Result<Target, ErrorCode> {
        self.servers.get(name).cloned().ok_or_else(|| ErrorCode::UnknownServer { name: name.into() })
    }

    /// Where a write to `shard` goes: its primary.
    pub fn primary(&self, shard: ShardId) -> Result<Target, ErrorCode> {
        let route = self.shard_route(shard)?;
        let name = route
            .primary
            .as_ref()
            .ok_or_else(|| ErrorCode::Unavailable { shard, reason: "no primary elected".into() })?;
        self.server(name).map_err(|_| unavailable(shard, name))
    }

    /// Where a read of `shard` goes: the primary if `primary`, otherwise the replica the
    /// ring gives for `hash`, skipping `exclude` (replicas that just failed) unless that
    /// leaves none.
    pub fn reader(&self, shard: ShardId, hash: u64, primary: bool, exclude: &[String]) -> Result<Target, ErrorCode> {
        if primary {
            return self.primary(shard);
        }
        let route = self.shard_route(shard)?;
        let picked = match exclude {
            // The common case: nothing failed yet, no ring to rebuild and no name to copy.
            [] => route.ring.pick(hash).map(std::borrow::Cow::Borrowed),
            _ => route.ring.pick_excluding(hash, exclude).map(std::borrow::Cow::Owned),
        };
        let name = match picked {
            Some(name) => name,
            None => route
                .ring
                .pick(hash)
                .map(std::borrow::Cow::Borrowed)
                .ok_or_else(|| unavailable(shard, "any replica"))?,
        };
        self.server(&name).map_err(|_| unavailable(shard, &name))
    }

    /// Where a read of `shard` at `level` goes: the primary for `primary`; for `bounded`
    /// and `session`, the ring's replica first and the primary once any replica failed
    /// (answered `Behind`, or could not be reached), since the primary can always serve
    /// them; for `any`, the ring's replicas as [`Routing::reader`] picks them.
    pub fn reader_at(
        &self,
        shard: ShardId,
        hash: u64,
        level: &Consistency,
        exclude: &[String],
    ) -> Result<Target, ErrorCode> {
        match level {
            Consistency::Primary => self.primary(shard),
            Consistency::Bounded { .. } | Consistency::Session { .. } if !exclude.is_empty() => self.primary(shard),
            _ => self.reader(shard, hash, false, exclude),
        }
    }

    /// The shards a read of `[low, high]` touches, in key order, each with the part of the
    /// range it owns.
    pub fn overlapping(&self, low: i64, high: i64) -> Vec<(ShardId, i64, i64)> {
        self.shards
            .iter()
            .filter(|s| s.spec.overlaps(low, high))
            .filter_map(|s| {
                let top = s.spec.high()?;
                Some((s.spec.id, low.max(s.spec.low), high.min(top)))
            })
            .collect()
    }

    fn shard_route(&self, shard: ShardId) -> Result<&ShardRoute, ErrorCode> {
        self.shard(shard).ok_or(ErrorCode::UnknownShard { shard })
    }
}

fn unavailable(shard: ShardId, who: &str) -> ErrorCode {
    ErrorCode::Unavailable { shard, reason: format!("no address known for {who}") }
}

/// Splits a batch into one batch per shard, in shard-id order, by the index only (no row is
/// decoded). A key outside every shard is `KeyOutOfRange`, found before anything is sent.
/// A batch that lies in one shard is returned as it is, sharing its bytes.
pub fn split_batch(batch: &WriteBatch, routing: &Routing) -> Result<Vec<(ShardId, WriteBatch)>, ErrorCode> {
    let runs = batch.runs(|key| routing.shard_of(key)).map_err(|key| ErrorCode::KeyOutOfRange { key })?;
    if let [(shard, _)] = runs.as_slice() {
        return Ok(vec![(*shard, batch.clone())]);
    }
    let mut groups: BTreeMap<ShardId, Vec<Range<usize>>> = BTreeMap::new();
    for (shard, rows) in runs {
        groups.entry(shard).or_default().push(rows);
    }
    Ok(groups.into_iter().map(|(shard, ranges)| (shard, batch.select(&ranges))).collect())
}

/// Whether an error means "the topology moved or a replica is briefly unable": refresh and
/// try again. Client mistakes (duplicate key, bad row, unknown key) are final.
pub fn is_retryable(e: &ErrorCode) -> bool {
    matches!(
        e,
        ErrorCode::NotPrimary { .. }
            | ErrorCode::LeaseExpired { .. }
            | ErrorCode::Unavailable { .. }
            | ErrorCode::NoQuorum { .. }
            | ErrorCode::Timeout(_)
            | ErrorCode::StaleTopology { .. }
            | ErrorCode::StaleTerm { .. }
            | ErrorCode::UnknownShard { .. }
            | ErrorCode::Behind { .. }
            | ErrorCode::ShuttingDown(_)
    )
}

/// The answer to give once retries stop at `last`: a definite refusal (`NotPrimary`,
/// `LeaseExpired`, `NoQuorum`, `TooLarge`, `ShuttingDown` (the node stopped before reading
/// the request), and a `DuplicateKey`/`NotFound` seen by a retry) says the
/// write never happened, which is true only if no earlier attempt may have been logged.
/// After an attempt that timed out, lost its connection or was answered
/// `Timeout`/`Unavailable`, the write's fate is unknown, and so is the answer: `Timeout`.
/// (A retry's `NotFound` can come from a new primary that never saw the first attempt of
/// a delete, which may still commit under a later one.)
pub fn final_error(last: ErrorCode, maybe_logged: bool) -> ErrorCode {
    let definite = matches!(
        last,
        ErrorCode::NotPrimary { .. }
            | ErrorCode::LeaseExpired { .. }
            | ErrorCode::NoQuorum { .. }
            | ErrorCode::DuplicateKey { .. }
            | ErrorCode::NotFound { .. }
            | ErrorCode::TooLarge { .. }
            | ErrorCode::ShuttingDown(_)
    );
    if definite && maybe_logged {
        ErrorCode::Timeout(format!(
            "{last} on the last attempt, but an earlier attempt may have been logged: the write may or may not be applied"
        ))
    } else {
        last
    }
}

/// Whether an attempt that failed with `e` may have been logged by a node.
pub fn may_have_logged(e: &ErrorCode) -> bool {
    matches!(e, ErrorCode::Timeout(_) | ErrorCode::Unavailable { .. } | ErrorCode::Internal(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline_protocol::{Row, ServerInfo, ShardTopology, Value};

    fn topology() -> Topology {
        let shard = |id: u32, low: i64, replicas: &[&str]| ShardTopology {
            spec: ShardSpec { id: ShardId(id), low, size: 100 },
            term: 1,
            primary: Some(replicas[0].to_owned()),
            replicas: replicas.iter().map(|r| r.to_string()).collect(),
            readable: replicas.iter().map(|r| r.to_string()).collect(),
        };
        Topology {
            version: 3,
            schema: None,
            // Out of order on purpose, with a gap at [200, 300).
            shards: vec![shard(3, 300, &["C", "A"]), shard(1, 0, &["A", "B", "C"]), shard(2, 100, &["B", "C"])],
            servers: ["A", "B", "C"]
                .iter()
                .map(|n| ServerInfo {
                    name: n.to_string(),
                    addr: format!("{n}:1"),
                    healthy: *n != "C",
                    last_heartbeat_ms: None,
                })
                .collect(),
            copies: Vec::new(),
        }
    }

    fn rows(keys: &[i64]) -> Vec<Row> {
        keys.iter().map(|&k| Row::new(k, vec![Value::Int(k)])).collect()
    }

    #[test]
    fn keys_route_to_their_shard() {
        let r = Routing::new(topology());
        assert_eq!(r.shard_of(0), Some(ShardId(1)));
        assert_eq!(r.shard_of(99), Some(ShardId(1)));
        assert_eq!(r.shard_of(100), Some(ShardId(2)));
        assert_eq!(r.shard_of(250), None);
        assert_eq!(r.shard_of(399), Some(ShardId(3)));
        assert_eq!(r.shard_of(400), None);
        assert_eq!(r.shard_of(-1), None);
        assert_eq!(r.shard_of(i64::MIN), None);
        assert_eq!(Routing::default().shard_of(5), None);
        assert_eq!(r.primary(ShardId(2)).unwrap().addr.as_ref(), "B:1");
    }

    #[test]
    fn batches_split_by_shard_without_decoding() {
        let r = Routing::new(topology());
        let batch = WriteBatch::encode(9, 4, &rows(&[310, 5, 150, 6, 120])).unwrap();
        let parts = split_batch(&batch, &r).unwrap();
        let ids: Vec<ShardId> = parts.iter().map(|(s, _)| *s).collect();
        assert_eq!(ids, vec![ShardId(1), ShardId(2), ShardId(3)]);
        assert_eq!(parts[0].1.rows().unwrap(), rows(&[5, 6]));
        assert_eq!(parts[1].1.rows().unwrap(), rows(&[120, 150]));
        assert_eq!(parts[2].1.rows().unwrap(), rows(&[310]));
        assert!(parts.iter().all(|(_, b)| (b.client_id(), b.seq()) == (9, 4)));

        let one = WriteBatch::encode(1, 1, &rows(&[1, 2])).unwrap();
        assert_eq!(split_batch(&one, &r).unwrap(), vec![(ShardId(1), one)]);

        let outside = WriteBatch::encode(1, 1, &rows(&[1, 250])).unwrap();
        assert_eq!(split_batch(&outside, &r), Err(ErrorCode::KeyOutOfRange { key: 250 }));
    }

    #[test]
    fn reads_split_in_key_order_and_clamp() {
        let r = Routing::new(topology());
        assert_eq!(r.overlapping(50, 350), vec![(ShardId(1), 50, 99), (ShardId(2), 100, 199), (ShardId(3), 300, 350)]);
        assert_eq!(r.overlapping(200, 299), vec![]);
    }

    #[test]
    fn readers_skip_unhealthy_and_failed_replicas() {
        let r = Routing::new(topology());
        for h in 0..200 {
            // C is unhealthy: shard 1 reads go to A or B only.
            let t = r.reader(ShardId(1), h, false, &[]).unwrap();
            assert_ne!(t.name.as_ref(), "C");
            let t = r.reader(ShardId(1), h, false, &["A".into()]).unwrap();
            assert_eq!(t.name.as_ref(), "B");
            // Everyone excluded: fall back to the whole ring rather than fail.
            assert!(r.reader(ShardId(1), h, false, &["A".into(), "B".into()]).is_ok());
        }
        assert_eq!(r.reader(ShardId(2), 7, true, &[]).unwrap().name.as_ref(), "B");
        assert!(matches!(r.reader(ShardId(9), 7, false, &[]), Err(ErrorCode::UnknownShard { .. })));
    }

    #[test]
    fn bounded_and_session_reads_fall_back_to_the_primary() {
        let r = Routing::new(topology());
        let session = Consistency::Session { positions: Vec::new() };
        let failed = ["B".to_string()];
        for h in 0..50 {
            for level in [Consistency::bounded_ms(100), session.clone()] {
                assert_ne!(r.reader_at(ShardId(1), h, &level, &[]).unwrap().name.as_ref(), "C", "a healthy replica");
                assert_eq!(r.reader_at(ShardId(1), h, &level, &failed).unwrap().name.as_ref(), "A", "the primary");
            }
            assert_eq!(r.reader_at(ShardId(2), h, &Consistency::Primary, &[]).unwrap().name.as_ref(), "B");
            assert_eq!(r.reader_at(ShardId(1), h, &Consistency::Any, &failed).unwrap().name.as_ref(), "A");
        }
        assert!(is_retryable(&ErrorCode::Behind { shard: ShardId(1), reason: String::new() }));
    }

    #[test]
    fn missing_primary_is_retryable() {
        let mut t = topology();
        t.shards[1].primary = None;
        let e = Routing::new(t).primary(ShardId(1)).unwrap_err();
        assert!(is_retryable(&e), "{e:?}");
        assert!(!is_retryable(&ErrorCode::DuplicateKey { key: 1 }));
        assert!(!is_retryable(&ErrorCode::KeyOutOfRange { key: 1 }));
    }

    #[test]
    fn a_refusal_after_an_attempt_that_may_have_been_logged_is_not_definite() {
        let shard = ShardId(1);
        let refusals = [
            ErrorCode::NotPrimary { shard, term: 2, primary: None },
            ErrorCode::NoQuorum { shard, acked: 1, needed: 2 },
            ErrorCode::NotFound { key: 4 },
            ErrorCode::ShuttingDown("not read".into()),
        ];
        for e in refusals {
            assert_eq!(final_error(e.clone(), false), e, "nothing logged: the refusal stands");
            assert!(matches!(final_error(e, true), ErrorCode::Timeout(_)), "maybe logged: unknown");
        }
        assert_eq!(final_error(ErrorCode::KeyOutOfRange { key: 9 }, true), ErrorCode::KeyOutOfRange { key: 9 });
        assert!(may_have_logged(&ErrorCode::Timeout("t".into())));
        assert!(!may_have_logged(&ErrorCode::NotPrimary { shard, term: 1, primary: None }));
        assert!(!may_have_logged(&ErrorCode::ShuttingDown("not read".into())));
        assert!(is_retryable(&ErrorCode::ShuttingDown("not read".into())), "another replica, or the next primary");
    }
}
