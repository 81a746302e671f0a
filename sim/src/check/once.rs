//! A write takes effect at most once, however often it is retried.
//!
//! The balancer retries a write with the same (client, sequence) after a failover; the
//! primary answers a retry of a write it already applied from its retry marks, without
//! logging it again. A write freshly committed at two log positions was applied twice: a
//! retried update overwrote later writes, a retried delete removed a later row. The
//! linearizability checker sees that only when reads happen to fall in between; this one
//! sees it whenever it happens.

use std::collections::BTreeMap;

use super::Violation;

/// One fresh commit of a write (not a retry answered from a mark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreshCommit {
    /// The write's client id.
    pub client: u64,
    /// The write's sequence number.
    pub seq: u64,
    /// The shard.
    pub shard: u32,
    /// The commit's term.
    pub term: u64,
    /// The commit's log index.
    pub index: u64,
}

/// Checks that no (client, sequence) was freshly committed at two log positions.
pub fn applied_once(commits: &[FreshCommit]) -> Result<(), Violation> {
    let mut first: BTreeMap<(u64, u64), FreshCommit> = BTreeMap::new();
    for c in commits {
        match first.get(&(c.client, c.seq)) {
            Some(f) if (f.shard, f.term, f.index) != (c.shard, c.term, c.index) => {
                return Err(Violation::AppliedTwice { first: *f, second: *c });
            }
            Some(_) => {}
            None => {
                first.insert((c.client, c.seq), *c);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(seq: u64, index: u64) -> FreshCommit {
        FreshCommit { client: 7, seq, shard: 1, term: 1, index }
    }

    #[test]
    fn the_same_commit_seen_twice_is_one_commit() {
        assert!(applied_once(&[commit(1, 5), commit(2, 6), commit(1, 5)]).is_ok());
    }

    #[test]
    fn a_write_committed_at_two_positions_is_caught() {
        let err = applied_once(&[commit(1, 5), commit(2, 6), commit(1, 9)]).unwrap_err();
        assert!(err.to_string().contains("applied_once"), "{err}");
    }
}
