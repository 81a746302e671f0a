//! What the cluster needs, from the configuration and what heartbeats show: pure.
//!
//! The driver calls [`reconcile`] after every heartbeat round and carries out the actions;
//! an action that fails is simply asked for again next round.

use std::collections::BTreeSet;

use shardline_protocol::{NodeStatus, ReplicaRole, ShardId, ShardState};

use crate::meta::{ClusterMeta, ShardMeta};

/// What heartbeats say about one server.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// Its heartbeats arrive.
    pub alive: bool,
    /// Its last heartbeat answer, if any.
    pub status: Option<&'a NodeStatus>,
}

impl Observed<'_> {
    fn shard(&self, shard: ShardId) -> Option<&ShardState> {
        self.status.and_then(|s| s.shard(shard))
    }
}

/// Something the cluster needs done.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Elect a primary for the shard at a new term.
    Elect(ShardId),
    /// Tell `server` to follow the shard's primary at the shard's term.
    Follow {
        /// The shard.
        shard: ShardId,
        /// The replica.
        server: String,
    },
    /// Create the shard's replica on `server` (it came back without it), then follow.
    Configure {
        /// The shard.
        shard: ShardId,
        /// The replica.
        server: String,
    },
    /// Start the server again on its data (it is not answering).
    Respawn(String),
}

/// Works out the actions the cluster needs now.
///
/// `fresh(shard, server)` says whether the server's last heartbeat answer was asked for
/// after the last role change the coordinator made for it on that shard: an older answer
/// shows the role before the change, and acting on it would undo the change.
pub fn reconcile<'a>(
    meta: &ClusterMeta,
    observe: impl Fn(&str) -> Observed<'a>,
    fresh: impl Fn(ShardId, &str) -> bool,
) -> BTreeSet<Action> {
    let mut actions = BTreeSet::new();
    for name in meta.servers.keys() {
        if !observe(name).alive {
            actions.insert(Action::Respawn(name.clone()));
        }
    }
    for shard in meta.shards.values() {
        let id = shard.spec.id;
        let Some(primary) = &shard.primary else {
            actions.insert(Action::Elect(id));
            continue;
        };
        let seen = observe(primary);
        if seen.alive && !fresh(id, primary) {
            continue;
        }
        let leads = seen.shard(id).is_some_and(|s| s.role == ReplicaRole::Primary && s.term == shard.term);
        if !seen.alive || (seen.status.is_some() && !leads) {
            actions.insert(Action::Elect(id));
            continue;
        }
        for replica in shard.replicas.iter().filter(|r| *r != primary) {
            let seen = observe(replica);
            match seen.shard(id) {
                _ if !seen.alive || !fresh(id, replica) => {}
                Some(s) if s.term > shard.term => {
                    actions.insert(Action::Elect(id));
                }
                Some(s) if s.role == ReplicaRole::Follower && s.term == shard.term => {}
                None if seen.status.is_some() => {
                    // Alive without the shard: a replacement on a fresh data directory.
                    actions.insert(Action::Configure { shard: id, server: replica.clone() });
                }
                _ if seen.status.is_some() => {
                    actions.insert(Action::Follow { shard: id, server: replica.clone() });
                }
                _ => {}
            }
        }
    }
    actions
}

/// The replicas of `shard` that may serve reads now.
pub fn readable<'a>(shard: &ShardMeta, observe: impl Fn(&str) -> Observed<'a>) -> Vec<String> {
    shard
        .replicas
        .iter()
        .filter(|r| {
            let seen = observe(r);
            let Some(state) = seen.shard(shard.spec.id) else {
                return false;
            };
            let role_ok = match state.role {
                ReplicaRole::Primary => shard.primary.as_deref() == Some(r.as_str()),
                ReplicaRole::Follower => true,
                ReplicaRole::Idle => false,
            };
            let caught_up = shard.catch_up.get(*r).is_none_or(|&target| state.applied_index >= target);
            seen.alive && state.serving && state.term == shard.term && role_ok && caught_up
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::ServerMeta;
    use shardline_protocol::{LogPosition, ShardSpec};
    use std::collections::HashMap;

    fn meta() -> ClusterMeta {
        let mut meta = ClusterMeta::default();
        let spec = ShardSpec { id: ShardId(1), low: 0, size: 10 };
        let replicas = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        meta.shards.insert(
            ShardId(1),
            ShardMeta { spec, term: 4, primary: Some("a".into()), replicas, catch_up: Default::default() },
        );
        for s in ["a", "b", "c"] {
            meta.servers.insert(s.into(), ServerMeta { addr: String::new() });
        }
        meta
    }

    fn status(node: &str, role: ReplicaRole, term: u64, applied: u64) -> NodeStatus {
        let spec = ShardSpec { id: ShardId(1), low: 0, size: 10 };
        let state = ShardState {
            spec,
            role,
            term,
            last: LogPosition { term, index: applied },
            commit_index: applied,
            applied_index: applied,
            serving: true,
            fault: None,
        };
        NodeStatus { node: node.into(), shards: vec![state] }
    }

    fn healthy() -> HashMap<String, NodeStatus> {
        [
            ("a", status("a", ReplicaRole::Primary, 4, 9)),
            ("b", status("b", ReplicaRole::Follower, 4, 9)),
            ("c", status("c", ReplicaRole::Follower, 4, 9)),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_owned(), s))
        .collect()
    }

    fn run(meta: &ClusterMeta, statuses: &HashMap<String, NodeStatus>, dead: &[&str]) -> BTreeSet<Action> {
        let observe = |s: &str| Observed { alive: !dead.contains(&s), status: statuses.get(s) };
        reconcile(meta, observe, |_, _| true)
    }

    #[test]
    fn a_healthy_shard_needs_nothing() {
        assert!(run(&meta(), &healthy(), &[]).is_empty());
    }

    #[test]
    fn a_dead_primary_means_an_election_and_a_respawn() {
        let actions = run(&meta(), &healthy(), &["a"]);
        assert!(actions.contains(&Action::Elect(ShardId(1))));
        assert!(actions.contains(&Action::Respawn("a".into())));
    }

    #[test]
    fn a_primary_that_restarted_idle_is_replaced_at_a_new_term() {
        let mut statuses = healthy();
        statuses.insert("a".into(), status("a", ReplicaRole::Idle, 4, 9));
        assert_eq!(run(&meta(), &statuses, &[]), BTreeSet::from([Action::Elect(ShardId(1))]));
    }

    #[test]
    fn an_answer_from_before_a_role_change_is_not_acted_on() {
        let mut statuses = healthy();
        // The new primary's last answer still shows it following: the election just ran.
        statuses.insert("a".into(), status("a", ReplicaRole::Follower, 3, 9));
        let observe = |s: &str| Observed { alive: true, status: statuses.get(s) };
        assert!(reconcile(&meta(), observe, |_, server| server != "a").is_empty());
        let want = BTreeSet::from([Action::Elect(ShardId(1))]);
        assert_eq!(reconcile(&meta(), observe, |_, _| true), want);
    }

    #[test]
    fn a_replacement_without_the_shard_is_configured() {
        let mut statuses = healthy();
        statuses.insert("c".into(), NodeStatus { node: "c".into(), shards: vec![] });
        let want = BTreeSet::from([Action::Configure { shard: ShardId(1), server: "c".into() }]);
        assert_eq!(run(&meta(), &statuses, &[]), want);
    }

    #[test]
    fn a_follower_that_restarted_is_told_to_follow() {
        let mut statuses = healthy();
        statuses.insert("c".into(), status("c", ReplicaRole::Idle, 4, 2));
        let want = BTreeSet::from([Action::Follow { shard: ShardId(1), server: "c".into() }]);
        assert_eq!(run(&meta(), &statuses, &[]), want);
    }

    #[test]
    fn readable_needs_the_term_the_role_and_the_catch_up_target() {
        let mut m = meta();
        let statuses = healthy();
        let observe = |s: &str| Observed { alive: true, status: statuses.get(s) };
        assert_eq!(readable(&m.shards[&ShardId(1)], observe), vec!["a", "b", "c"]);
        m.shards.get_mut(&ShardId(1)).unwrap().catch_up.insert("c".into(), 10);
        assert_eq!(readable(&m.shards[&ShardId(1)], observe), vec!["a", "b"]);
    }
}
