//! The consistent-hash ring that picks which replica of a shard serves a read.
//!
//! The seed's ring, with a real hash function: 512 slots, 9 virtual nodes a server, each
//! placed at `SipHash(name, j) mod 512` (std's `DefaultHasher::new()`, whose keys are fixed,
//! so every balancer builds the same ring). A slot may hold several virtual nodes; the one
//! with the smallest full hash owns it, so placement never depends on insertion order.
//!
//! Lookup is multi-probe (Appleton and O'Reilly, "Multi-probe consistent hashing", 2015):
//! the request's hash gives [`PROBES`] slots, and the request goes to the owner of the
//! occupied slot nearest clockwise to any probe (ties: the earlier probe). With one probe,
//! nine virtual nodes leave a server's share about ±30% off even; with 21 probes it is
//! within a few percent (see the tests), and the ring stays consistent: removing a server
//! moves only the requests it served, because every other probe distance is unchanged.
//!
//! ```
//! use shardline_balancer::ring::Ring;
//! let ring = Ring::new(["Server0", "Server1", "Server2"]);
//! let server = ring.pick(0xfeed).unwrap();
//! assert!(server.starts_with("Server"));
//! ```

use std::hash::{DefaultHasher, Hash, Hasher};

/// Slots on the ring.
pub const SLOTS: usize = 512;
/// Virtual nodes per server.
pub const VIRTUAL_NODES: u32 = 9;
/// Probes per lookup.
pub const PROBES: u64 = 21;

/// A ring over a set of servers; cheap to query, rebuilt when the set changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    /// The servers, sorted by name.
    members: Vec<String>,
    /// Per slot: the clockwise distance to the nearest owned slot and that slot's owner
    /// (an index into `members`). Empty when there are no members.
    next: Vec<(u16, u16)>,
}

/// SipHash-1-3 with fixed keys: the same on every balancer, every run.
pub fn hash_of(value: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// The `i`-th probe position of a request hash (splitmix64's finalizer over a Weyl step).
fn probe(hash: u64, i: u64) -> usize {
    let mut z = hash.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % SLOTS as u64) as usize
}

impl Ring {
    /// Builds the ring over `members` (duplicates are ignored).
    pub fn new<S: AsRef<str>>(members: impl IntoIterator<Item = S>) -> Ring {
        let mut members: Vec<String> = members.into_iter().map(|m| m.as_ref().to_owned()).collect();
        members.sort();
        members.dedup();
        members.truncate(u16::MAX as usize);
        // Per slot, the owning virtual node's (hash, member).
        let mut owner: Vec<Option<(u64, u16)>> = vec![None; SLOTS];
        for (m, name) in members.iter().enumerate() {
            for j in 0..VIRTUAL_NODES {
                let h = hash_of((name.as_str(), j));
                let slot = &mut owner[(h % SLOTS as u64) as usize];
                if slot.is_none_or(|(best, _)| h < best) {
                    *slot = Some((h, m as u16));
                }
            }
        }
        let mut next = Vec::new();
        if !members.is_empty() {
            next = vec![(0u16, 0u16); SLOTS];
            // Walk twice around, backwards, carrying the nearest owned slot seen so far.
            let mut carry: Option<(usize, u16)> = None;
            for step in (0..2 * SLOTS).rev() {
                let s = step % SLOTS;
                if let Some((_, m)) = owner[s] {
                    carry = Some((step, m));
                }
                if let Some((at, m)) = carry {
                    next[s] = ((at - step) as u16, m);
                }
            }
        }
        Ring { members, next }
    }

    /// The servers on the ring, sorted by name.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// Whether the ring has no servers.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The server for a request with hash `hash`; `None` on an empty ring.
    pub fn pick(&self, hash: u64) -> Option<&str> {
        if self.next.is_empty() {
            return None;
        }
        let mut best = (u16::MAX, u64::MAX, 0u16);
        for i in 0..PROBES {
            let (dist, m) = self.next[probe(hash, i)];
            if (dist, i) < (best.0, best.1) {
                best = (dist, i, m);
            }
        }
        Some(&self.members[best.2 as usize])
    }

    /// Like [`Ring::pick`], on the ring without the servers in `exclude` (used when a
    /// replica just failed a request): the answer is what that smaller ring would give.
    pub fn pick_excluding(&self, hash: u64, exclude: &[String]) -> Option<String> {
        if exclude.is_empty() {
            return self.pick(hash).map(str::to_owned);
        }
        let rest = self.members.iter().filter(|m| !exclude.contains(m));
        Ring::new(rest).pick(hash).map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn spread(ring: &Ring, reads: u64) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for r in 0..reads {
            *counts.entry(ring.pick(hash_of(r)).unwrap().to_owned()).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn three_replicas_share_reads_within_15_percent() {
        for names in
            [["Server0", "Server1", "Server2"], ["Server3", "Server4", "Server5"], ["node-a", "node-b", "node-c"]]
        {
            let ring = Ring::new(names);
            let counts = spread(&ring, 10_000);
            eprintln!("{names:?}: {counts:?}");
            assert_eq!(counts.len(), 3, "{names:?}: {counts:?}");
            let even = 10_000.0 / 3.0;
            for (name, n) in &counts {
                let off = (*n as f64 - even).abs() / even;
                assert!(off < 0.15, "{name} got {n} of 10000 ({off:.3} off even)");
            }
        }
    }

    #[test]
    fn removing_a_replica_moves_only_its_share() {
        let full = Ring::new(["Server0", "Server1", "Server2"]);
        let less = Ring::new(["Server0", "Server2"]);
        let mut moved = 0;
        for r in 0..10_000u64 {
            let h = hash_of(r);
            let before = full.pick(h).unwrap();
            let after = less.pick(h).unwrap();
            if before == "Server1" {
                moved += 1;
                assert_ne!(after, "Server1");
            } else {
                assert_eq!(before, after, "request {r} moved off a server that stayed");
            }
            assert_eq!(full.pick_excluding(h, &["Server1".to_owned()]).as_deref(), Some(after));
        }
        assert!(moved > 2_000 && moved < 4_700, "Server1 had {moved}");
    }

    #[test]
    fn adding_a_replica_takes_keys_only_for_itself() {
        let small = Ring::new(["a", "b", "c"]);
        let big = Ring::new(["a", "b", "c", "d"]);
        for r in 0..5_000u64 {
            let (before, after) = (small.pick(r).unwrap(), big.pick(r).unwrap());
            assert!(after == before || after == "d", "request {r}: {before} → {after}");
        }
    }

    proptest::proptest! {
        /// For any set of servers and any one of them removed, every request that was not
        /// on the removed server stays where it was, and the removed one's go elsewhere.
        #[test]
        fn removal_is_consistent_for_any_membership(
            names in proptest::collection::btree_set("[a-z]{1,8}", 2..9),
            gone in 0usize..8,
            seed in proptest::prelude::any::<u64>(),
        ) {
            let names: Vec<String> = names.into_iter().collect();
            let gone = names[gone % names.len()].clone();
            let full = Ring::new(&names);
            let less = Ring::new(names.iter().filter(|n| **n != gone));
            for r in 0..500u64 {
                let h = hash_of((seed, r));
                let (before, after) = (full.pick(h).unwrap(), less.pick(h).unwrap());
                proptest::prop_assert_ne!(after, gone.as_str());
                if before != gone {
                    proptest::prop_assert_eq!(before, after);
                }
            }
        }
    }

    #[test]
    fn edge_cases() {
        assert_eq!(Ring::new(Vec::<String>::new()).pick(1), None);
        let one = Ring::new(["only"]);
        assert!((0..100).all(|r| one.pick(r) == Some("only")));
        assert_eq!(one.pick_excluding(1, &["only".to_owned()]), None);
        assert_eq!(Ring::new(["b", "a", "b"]).members(), ["a", "b"]);
    }
}
