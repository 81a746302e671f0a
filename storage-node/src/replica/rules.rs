//! The replication rules as pure functions: when an entry is committed, and what a
//! follower does with an append. No I/O, no clocks; the shard task calls these.

pub use shardline_protocol::quorum::majority;
use shardline_protocol::LogPosition;

/// The highest index a majority holds durably, if that entry is from the current term
/// (Raft's rule: earlier terms' entries commit only by a current-term entry after them).
///
/// `durable` holds every replica's last durable index, the primary's included.
pub fn quorum_commit(durable: &[u64], commit: u64, term: u64, term_at: impl Fn(u64) -> Option<u64>) -> u64 {
    let mut sorted = durable.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let candidate = sorted[majority(durable.len()) - 1];
    if candidate > commit && term_at(candidate) == Some(term) {
        candidate
    } else {
        commit
    }
}

/// What a follower does with an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendPlan {
    /// The log does not hold `prev`: refuse, and ask for entries from `retry_from`.
    Reject {
        /// The index the primary should resend from.
        retry_from: u64,
    },
    /// Accept: cut the log from `truncate_from` (if set), then append `entries[skip..]`.
    Accept {
        /// First index of a divergent suffix to remove.
        truncate_from: Option<u64>,
        /// Leading entries already held (same index and term): not written again.
        skip: usize,
    },
}

/// Decides an append (Raft's AppendEntries consistency check).
///
/// `base` is the position before the follower's first kept entry (everything up to it is
/// applied, hence committed, hence the same on every replica); `last` its last entry;
/// `incoming` the (term, index) of the entries after `prev`.
pub fn plan_append(
    base: LogPosition,
    last: LogPosition,
    prev: LogPosition,
    incoming: &[LogPosition],
    term_at: impl Fn(u64) -> Option<u64>,
) -> AppendPlan {
    if prev.index > last.index {
        return AppendPlan::Reject { retry_from: last.index + 1 };
    }
    // Entries at or below our base are committed: they match by construction.
    let mut skip = incoming.iter().take_while(|e| e.index <= base.index).count();
    if prev.index >= base.index {
        let ours = term_at(prev.index);
        if ours != Some(prev.term) {
            let conflict_term = ours.unwrap_or(0);
            let mut retry = prev.index;
            while retry > base.index + 1 && term_at(retry - 1) == Some(conflict_term) {
                retry -= 1;
            }
            return AppendPlan::Reject { retry_from: retry.max(1) };
        }
    }
    for e in &incoming[skip..] {
        match term_at(e.index) {
            Some(t) if t == e.term => skip += 1,
            Some(_) => return AppendPlan::Accept { truncate_from: Some(e.index), skip },
            None => break,
        }
    }
    AppendPlan::Accept { truncate_from: None, skip }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(term: u64, index: u64) -> LogPosition {
        LogPosition { term, index }
    }

    /// A log given as the term of each entry, index 1 first.
    fn log(terms: &[u64]) -> impl Fn(u64) -> Option<u64> + '_ {
        move |i| {
            if i == 0 {
                Some(0)
            } else {
                terms.get(i as usize - 1).copied()
            }
        }
    }

    fn last(terms: &[u64]) -> LogPosition {
        pos(terms.last().copied().unwrap_or(0), terms.len() as u64)
    }

    #[test]
    fn commit_needs_a_majority_and_the_current_term() {
        let terms = [1, 1, 2, 2];
        assert_eq!(quorum_commit(&[4, 4, 0], 0, 2, log(&terms)), 4);
        assert_eq!(quorum_commit(&[4, 3, 0], 0, 2, log(&terms)), 3);
        assert_eq!(quorum_commit(&[4, 0, 0], 0, 2, log(&terms)), 0);
        // Index 2 is from term 1: a term-2 primary must not count it committed on its own.
        assert_eq!(quorum_commit(&[4, 2, 2], 0, 2, log(&terms)), 0);
        assert_eq!(quorum_commit(&[4], 1, 2, log(&terms)), 4, "one replica is its own majority");
        assert_eq!(quorum_commit(&[1, 1, 1], 3, 2, log(&terms)), 3, "commit never goes back");
        assert_eq!(majority(3), 2);
        assert_eq!(majority(4), 3);
    }

    #[test]
    fn appends_that_continue_the_log_are_accepted() {
        let ours = [1, 1];
        let plan = plan_append(pos(0, 0), last(&ours), pos(1, 2), &[pos(1, 3)], log(&ours));
        assert_eq!(plan, AppendPlan::Accept { truncate_from: None, skip: 0 });
    }

    #[test]
    fn a_gap_asks_for_the_missing_entries() {
        let ours = [1, 1];
        let plan = plan_append(pos(0, 0), last(&ours), pos(1, 5), &[pos(1, 6)], log(&ours));
        assert_eq!(plan, AppendPlan::Reject { retry_from: 3 });
    }

    #[test]
    fn a_divergent_suffix_is_truncated_by_term_not_by_commit_mark() {
        // Ours: 1 1 2 2 2 (the 2s from a primary that lost); the new primary has 1 1 3.
        let ours = [1, 1, 2, 2, 2];
        let plan = plan_append(pos(0, 0), last(&ours), pos(1, 2), &[pos(3, 3)], log(&ours));
        assert_eq!(plan, AppendPlan::Accept { truncate_from: Some(3), skip: 0 });
        // A prev that disagrees skips back over the whole conflicting term at once.
        let plan = plan_append(pos(0, 0), last(&ours), pos(3, 5), &[], log(&ours));
        assert_eq!(plan, AppendPlan::Reject { retry_from: 3 });
    }

    #[test]
    fn entries_already_held_are_skipped() {
        let ours = [1, 1, 1];
        let incoming = [pos(1, 2), pos(1, 3), pos(1, 4)];
        let plan = plan_append(pos(0, 0), last(&ours), pos(1, 1), &incoming, log(&ours));
        assert_eq!(plan, AppendPlan::Accept { truncate_from: None, skip: 2 });
    }

    #[test]
    fn entries_below_the_base_match_by_construction() {
        // Log compacted up to index 10 (term 2); entries 11, 12 kept.
        let term_at = |i: u64| match i {
            10 => Some(2),
            11 | 12 => Some(2),
            _ => None,
        };
        let incoming = [pos(2, 9), pos(2, 10), pos(2, 11), pos(2, 12), pos(2, 13)];
        let plan = plan_append(pos(2, 10), pos(2, 12), pos(2, 8), &incoming, term_at);
        assert_eq!(plan, AppendPlan::Accept { truncate_from: None, skip: 4 });
    }
}
