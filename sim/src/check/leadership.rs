//! Leadership is exclusive: one primary per term, and leases of a shard never overlap.

use std::collections::{BTreeMap, HashMap};

use super::{Lease, Violation};
use crate::history::Time;

/// Checks that in each `(shard, term)` at most one replica acknowledged writes; each item
/// of `acks` is `(shard, term, replica)` for one acknowledgement.
pub fn one_primary_per_term(acks: &[(u32, u64, String)]) -> Result<(), Violation> {
    let mut primaries: HashMap<(u32, u64), &str> = HashMap::new();
    for (shard, term, replica) in acks {
        let first = *primaries.entry((*shard, *term)).or_insert(replica);
        if first != replica {
            return Err(Violation::TwoPrimaries {
                shard: *shard,
                term: *term,
                first: first.to_string(),
                second: replica.clone(),
            });
        }
    }
    Ok(())
}

/// Checks that no two different replicas of a shard held a lease at the same instant; each
/// item of `leases` is `(shard, term, replica, from, until)`, held over `[from, until)`, so a
/// lease may start at the very instant the previous one ends.
pub fn leases_disjoint(leases: &[(u32, u64, String, Time, Time)]) -> Result<(), Violation> {
    let mut by_shard: BTreeMap<u32, Vec<Lease>> = BTreeMap::new();
    for (shard, term, replica, from, until) in leases {
        if until < from {
            return Err(Violation::Malformed {
                checker: "leases_disjoint",
                detail: format!(
                    "shard {shard}: {replica}'s lease of term {term} ends at {until} before it starts at {from}"
                ),
            });
        }
        let lease = Lease { term: *term, replica: replica.clone(), from: *from, until: *until };
        by_shard.entry(*shard).or_default().push(lease);
    }
    for (shard, mut leases) in by_shard {
        leases.sort_by_key(|lease| lease.from);
        // Sweep by start time, keeping the leases that have not ended yet.
        let mut active: Vec<&Lease> = Vec::new();
        for lease in &leases {
            active.retain(|held| held.until > lease.from);
            let rival = active.iter().find(|held| held.replica != lease.replica);
            if let Some(held) = rival.filter(|_| lease.until > lease.from) {
                return Err(Violation::LeasesOverlap { shard, first: (*held).clone(), second: lease.clone() });
            }
            active.push(lease);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(shard: u32, term: u64, replica: &str) -> (u32, u64, String) {
        (shard, term, replica.to_string())
    }

    fn lease(shard: u32, term: u64, replica: &str, from: Time, until: Time) -> (u32, u64, String, Time, Time) {
        (shard, term, replica.to_string(), from, until)
    }

    #[test]
    fn one_primary_per_term_passes_when_terms_or_shards_differ() {
        one_primary_per_term(&[]).unwrap();
        one_primary_per_term(&[ack(0, 1, "a"), ack(0, 1, "a"), ack(0, 2, "b"), ack(1, 1, "b"), ack(0, 3, "a")])
            .unwrap();
    }

    #[test]
    fn two_primaries_in_one_term_fail() {
        let violation = one_primary_per_term(&[ack(0, 1, "a"), ack(1, 4, "b"), ack(1, 4, "c")]).unwrap_err();
        let expected = Violation::TwoPrimaries { shard: 1, term: 4, first: "b".into(), second: "c".into() };
        assert_eq!(violation, expected);
        assert_eq!(violation.to_string(), "one_primary_per_term: shard 1 term 4: both b and c acknowledged writes");
    }

    #[test]
    fn handed_over_leases_pass() {
        let leases = [
            lease(0, 1, "a", 0, 100),
            lease(0, 2, "b", 100, 200), // starts the instant a's ends
            lease(0, 2, "b", 150, 300), // b renewing over itself
            lease(1, 1, "a", 120, 180), // another shard
            lease(0, 3, "c", 250, 250), // empty: held at no instant
            lease(0, 4, "a", 300, 400),
        ];
        leases_disjoint(&leases).unwrap();
    }

    #[test]
    fn overlapping_leases_of_two_replicas_fail() {
        let violation = leases_disjoint(&[lease(0, 2, "b", 99, 200), lease(0, 1, "a", 0, 100)]).unwrap_err();
        let Violation::LeasesOverlap { shard: 0, first, second } = &violation else { panic!("{violation}") };
        assert_eq!((first.replica.as_str(), second.replica.as_str()), ("a", "b"));
        assert!(
            violation.to_string().contains("a (term 1) held [0..100) and b (term 2) held [99..200)"),
            "{violation}"
        );
        // A lease nested inside a long one is caught too.
        let nested = [lease(0, 1, "a", 0, 1000), lease(0, 2, "b", 10, 20), lease(0, 3, "b", 500, 600)];
        assert!(leases_disjoint(&nested).is_err());
    }

    #[test]
    fn a_lease_ending_before_it_starts_is_malformed() {
        let violation = leases_disjoint(&[lease(0, 1, "a", 10, 5)]).unwrap_err();
        assert!(matches!(violation, Violation::Malformed { checker: "leases_disjoint", .. }), "{violation}");
    }
}
