//! Facts every process must agree on about replicas and clients: the majority a write
//! or an election needs, and how a client's retry identity is chosen.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The majority of `replicas` (a primary counts itself): what a commit and an election need.
pub fn majority(replicas: usize) -> usize {
    replicas / 2 + 1
}

/// A random, non-zero client id, different for every call in every process and start.
///
/// It names a writer's (client id, sequence) retry identity, so two writers must never
/// share one: the hash mixes the OS's random keys, the time, the pid and a counter.
pub fn random_client_id() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majorities() {
        let cases = [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (8, 5)];
        for (n, m) in cases {
            assert_eq!(majority(n), m, "majority of {n}");
        }
    }

    #[test]
    fn client_ids_are_non_zero_and_distinct() {
        let ids: std::collections::HashSet<u64> = (0..1000).map(|_| random_client_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(!ids.contains(&0));
    }
}
