//! The coordinator's recent heartbeats, as a node handled them: lease grants count from these.
//!
//! A grant names an earlier heartbeat (see `ControlRequest::Heartbeat`); the lease it gives
//! starts when this node handled that one, which the coordinator knows came before the
//! answer it got. Only the last few are kept: a grant names the one before it.
//!
//! A coordinator numbers its heartbeats from 1 when it starts leading: a restarted one, or
//! another taking over (coordinators on etcd). A number not above the last one handled
//! starts a new sequence and the old one is forgotten, so a grant from the new
//! coordinator never counts from an old heartbeat that bore the same number (which would
//! give a lease already over: a primary would refuse writes until the old numbers left).

use std::collections::VecDeque;

use shardline_protocol::LeaseGrant;

/// Heartbeats remembered.
const KEPT: usize = 16;

/// When recent heartbeats were handled, by number; `T` is the node's notion of time.
#[derive(Debug, Clone)]
pub struct HeardBeats<T> {
    recent: VecDeque<(u64, T)>,
}

impl<T> Default for HeardBeats<T> {
    fn default() -> Self {
        HeardBeats { recent: VecDeque::new() }
    }
}

impl<T: Copy> HeardBeats<T> {
    /// Heartbeat `seq` was handled at `at`; returns when the one `grant` names was, if the
    /// grant is for a heartbeat this process handled.
    pub fn handled(&mut self, seq: u64, at: T, grant: Option<&LeaseGrant>) -> Option<T> {
        if self.recent.back().is_some_and(|(last, _)| seq <= *last) {
            self.recent.clear();
        }
        self.recent.push_back((seq, at));
        if self.recent.len() > KEPT {
            self.recent.pop_front();
        }
        let grant = grant?;
        self.recent.iter().find(|(s, _)| *s == grant.seq).map(|(_, at)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_counts_from_the_heartbeat_it_names() {
        let mut heard = HeardBeats::default();
        assert_eq!(heard.handled(1, 10, None), None);
        let grant = LeaseGrant { seq: 1, shards: vec![] };
        assert_eq!(heard.handled(2, 20, Some(&grant)), Some(10));
        let unknown = LeaseGrant { seq: 99, shards: vec![] };
        assert_eq!(heard.handled(3, 30, Some(&unknown)), None, "a heartbeat this process never handled");
    }

    #[test]
    fn a_new_coordinator_numbering_from_one_again_is_not_confused_with_the_old() {
        let mut heard = HeardBeats::default();
        for seq in 1..=10 {
            heard.handled(seq, seq * 10, None);
        }
        // Another coordinator takes over and numbers from 1.
        assert_eq!(heard.handled(1, 500, None), None);
        let grant = LeaseGrant { seq: 1, shards: vec![] };
        assert_eq!(heard.handled(2, 600, Some(&grant)), Some(500), "its own heartbeat 1, not the old one's");
        let old = LeaseGrant { seq: 9, shards: vec![] };
        assert_eq!(heard.handled(3, 700, Some(&old)), None, "the old numbers are forgotten");
    }
}
