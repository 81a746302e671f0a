//! The coordinator's recent heartbeats, as a node handled them: lease grants count from these.
//!
//! A grant names an earlier heartbeat (see `ControlRequest::Heartbeat`); the lease it gives
//! starts when this node handled that one, which the coordinator knows came before the
//! answer it got. Only the last few are kept: a grant names the one before it.

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
}
