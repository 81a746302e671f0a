//! Choosing a shard's new primary from election votes: a pure function.
//!
//! The coordinator has already persisted the new term and asked every replica for its
//! last (term, index) in a message carrying that term; each replica that answered has
//! adopted the term and will refuse appends from older ones. With answers from a
//! majority, the electable replica with the highest (term, index) holds every committed
//! entry (a committed entry is on a majority, which meets the voters), so it leads.

use shardline_protocol::{LogPosition, Vote};

/// What the votes decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// `primary` leads; the other replicas follow.
    Elect {
        /// The new primary.
        primary: String,
        /// Its log position.
        last: LogPosition,
    },
    /// Too few answers (or no electable voter): the shard stays without a primary.
    NoQuorum {
        /// Usable answers.
        votes: usize,
        /// Answers needed.
        needed: usize,
    },
}

/// Decides from the votes of `replicas`; `needed` is the majority to reach. Among the
/// longest logs, `prefer` (a planned switchover's target) wins, else the lowest name.
pub fn decide(votes: &[(String, Vote)], needed: usize, prefer: Option<&str>) -> Decision {
    let preferred = |name: &String| Some(name.as_str()) == prefer;
    let winner = votes.iter().filter(|(_, v)| v.electable).max_by(|(a_name, a), (b_name, b)| {
        a.last.cmp(&b.last).then_with(|| preferred(a_name).cmp(&preferred(b_name))).then_with(|| b_name.cmp(a_name))
    });
    // A replica that may have lost acknowledged entries (its log was cut at corruption) is
    // not electable, and its vote does not count either: with it, a majority might not
    // include any replica that holds an acknowledged entry. (A replica mid-install is not
    // electable, but its log lost nothing it acknowledged: it still counts.)
    let usable = votes.iter().filter(|(_, v)| v.whole).count();
    match winner {
        Some((name, vote)) if usable >= needed => Decision::Elect { primary: name.clone(), last: vote.last },
        _ => Decision::NoQuorum { votes: usable, needed },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline_protocol::ShardId;

    fn vote(name: &str, term: u64, index: u64, electable: bool) -> (String, Vote) {
        let last = LogPosition { term, index };
        (name.to_owned(), Vote { shard: ShardId(1), term: 9, last, electable, whole: electable })
    }

    #[test]
    fn highest_term_then_index_wins() {
        let votes = [vote("a", 2, 10, true), vote("b", 3, 4, true), vote("c", 3, 2, true)];
        assert_eq!(decide(&votes, 2, None), Decision::Elect { primary: "b".into(), last: LogPosition { term: 3, index: 4 } });
    }

    #[test]
    fn a_minority_elects_nobody() {
        assert_eq!(decide(&[vote("a", 1, 1, true)], 2, None), Decision::NoQuorum { votes: 1, needed: 2 });
    }

    #[test]
    fn a_damaged_replica_neither_wins_nor_counts_toward_the_quorum() {
        let votes = [vote("a", 5, 50, false), vote("b", 5, 40, true)];
        assert_eq!(decide(&votes, 2, None), Decision::NoQuorum { votes: 1, needed: 2 });
        let votes = [vote("a", 5, 50, false), vote("b", 5, 40, true), vote("c", 5, 30, true)];
        assert_eq!(
            decide(&votes, 2, None),
            Decision::Elect { primary: "b".into(), last: LogPosition { term: 5, index: 40 } }
        );
    }

    #[test]
    fn a_replica_mid_install_counts_but_cannot_win() {
        let (name, mut installing) = vote("a", 5, 50, false);
        installing.whole = true;
        let votes = [(name, installing), vote("b", 5, 40, true)];
        assert_eq!(
            decide(&votes, 2, None),
            Decision::Elect { primary: "b".into(), last: LogPosition { term: 5, index: 40 } }
        );
    }

    #[test]
    fn a_preferred_replica_wins_a_tie_but_never_a_longer_log() {
        let votes = [vote("a", 1, 5, true), vote("b", 1, 5, true), vote("c", 1, 4, true)];
        assert!(matches!(decide(&votes, 2, Some("b")), Decision::Elect { primary, .. } if primary == "b"));
        assert!(matches!(decide(&votes, 2, Some("c")), Decision::Elect { primary, .. } if primary == "a"));
    }

    #[test]
    fn ties_are_broken_by_name_for_repeatability() {
        let votes = [vote("b", 1, 1, true), vote("a", 1, 1, true)];
        assert!(matches!(decide(&votes, 2, None), Decision::Elect { primary, .. } if primary == "a"));
    }
}
