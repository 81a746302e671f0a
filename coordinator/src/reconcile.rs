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
    /// Tell the shard's primary its current replica set (voters and learners): it has not
    /// acknowledged this one yet.
    Repoint(ShardId),
    /// The primary at `term` shows the shard's last change settled: record it, so the set
    /// may change again.
    Settled {
        /// The shard.
        shard: ShardId,
        /// The term the primary showed it at.
        term: u64,
    },
    /// `server`, a learner that has caught up, becomes a voter (the set is settled).
    Promote {
        /// The shard.
        shard: ShardId,
        /// The learner.
        server: String,
    },
}

/// Works out the actions the cluster needs now.
///
/// `fresh(shard, server)` says whether the server's last heartbeat answer was asked for
/// after the last role change the coordinator made for it on that shard: an older answer
/// shows the role before the change, and acting on it would undo the change. `told(shard)`
/// says whether the shard's primary acknowledged the shard's current replica set.
pub fn reconcile<'a>(
    meta: &ClusterMeta,
    observe: impl Fn(&str) -> Observed<'a>,
    fresh: impl Fn(ShardId, &str) -> bool,
    told: impl Fn(&ShardMeta) -> bool,
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
        if !told(shard) {
            // Told in any case (a learner added or removed, a restarted coordinator): the
            // primary must replicate to exactly this set.
            actions.insert(Action::Repoint(id));
        } else if shard.unsettled {
            if fresh(id, primary) && leads && seen.shard(id).is_some_and(|s| s.settled) {
                actions.insert(Action::Settled { shard: id, term: shard.term });
            }
        } else if let Some(server) = shard.learners.iter().find(|l| caught_up(shard, l, observe(l), &fresh)) {
            actions.insert(Action::Promote { shard: id, server: server.clone() });
        }
        for replica in shard.holders().filter(|r| *r != primary) {
            let seen = observe(replica);
            match seen.shard(id) {
                _ if !seen.alive || !fresh(id, replica) => {}
                Some(s) if s.term > shard.term => {
                    actions.insert(Action::Elect(id));
                }
                Some(s) if s.role == ReplicaRole::Follower && s.term == shard.term => {}
                // Alive without the shard: a replacement on a fresh data directory. A voter
                // is re-created (as a learner) only once the last change has settled, since
                // losing it as a voter is itself a change.
                None if seen.status.is_some() && !(shard.unsettled && shard.replicas.contains(replica)) => {
                    actions.insert(Action::Configure { shard: id, server: replica.clone() });
                }
                None if seen.status.is_some() => {}
                _ if seen.status.is_some() => {
                    actions.insert(Action::Follow { shard: id, server: replica.clone() });
                }
                _ => {}
            }
        }
    }
    actions
}

/// Whether learner `server` follows at the shard's term and has applied its catch-up target.
fn caught_up(shard: &ShardMeta, server: &str, seen: Observed<'_>, fresh: impl Fn(ShardId, &str) -> bool) -> bool {
    let id = shard.spec.id;
    let Some(&target) = shard.catch_up.get(server) else { return false };
    let Some(state) = seen.shard(id) else { return false };
    seen.alive
        && fresh(id, server)
        && target != u64::MAX
        && state.role == ReplicaRole::Follower
        && state.term == shard.term
        && state.serving
        && state.applied_index >= target
}

/// Whether voter `server` may be retired now as far as health goes: a majority of the
/// voters left must be answering and hold the shard without a fault. Otherwise the shard
/// could neither elect nor commit without replicas that hold nothing (two voters whose
/// disks were wiped, say), and a planned removal must wait rather than strand it.
pub fn can_retire<'a>(shard: &ShardMeta, server: &str, observe: impl Fn(&str) -> Observed<'a>) -> bool {
    let rest: Vec<&String> = shard.replicas.iter().filter(|r| *r != server).collect();
    let healthy = rest
        .iter()
        .filter(|r| {
            let seen = observe(r);
            seen.alive && seen.shard(shard.spec.id).is_some_and(|s| s.fault.is_none())
        })
        .count();
    healthy >= crate::majority(rest.len())
}

/// The replicas of `shard` that may serve reads now.
pub fn readable<'a>(shard: &ShardMeta, observe: impl Fn(&str) -> Observed<'a>) -> Vec<String> {
    shard
        .holders()
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
            ShardMeta {
                spec,
                term: 4,
                primary: Some("a".into()),
                replicas,
                catch_up: Default::default(),
                learners: vec![],
                unsettled: false,
            },
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
            settled: true,
            copies: Vec::new(),
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
        reconcile(meta, observe, |_, _| true, |_| true)
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
        assert!(reconcile(&meta(), observe, |_, server| server != "a", |_| true).is_empty());
        let want = BTreeSet::from([Action::Elect(ShardId(1))]);
        assert_eq!(reconcile(&meta(), observe, |_, _| true, |_| true), want);
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

    #[test]
    fn a_caught_up_learner_is_promoted_only_once_the_set_has_settled() {
        let mut m = meta();
        let mut statuses = healthy();
        m.servers.insert("d".into(), ServerMeta { addr: String::new() });
        let shard = m.shards.get_mut(&ShardId(1)).unwrap();
        shard.learners.push("d".into());
        shard.catch_up.insert("d".into(), 9);
        statuses.insert("d".into(), status("d", ReplicaRole::Follower, 4, 8));
        assert!(run(&m, &statuses, &[]).is_empty(), "not caught up yet");
        statuses.insert("d".into(), status("d", ReplicaRole::Follower, 4, 9));
        let promote = Action::Promote { shard: ShardId(1), server: "d".into() };
        assert_eq!(run(&m, &statuses, &[]), BTreeSet::from([promote]));
        m.shards.get_mut(&ShardId(1)).unwrap().unsettled = true;
        assert_eq!(run(&m, &statuses, &[]), BTreeSet::from([Action::Settled { shard: ShardId(1), term: 4 }]));
        let mut unsettled = status("a", ReplicaRole::Primary, 4, 9);
        unsettled.shards[0].settled = false;
        statuses.insert("a".into(), unsettled);
        assert!(run(&m, &statuses, &[]).is_empty(), "the primary has not shown the set settled");
        let observe = |s: &str| Observed { alive: true, status: statuses.get(s) };
        let want = BTreeSet::from([Action::Repoint(ShardId(1))]);
        assert_eq!(reconcile(&m, observe, |_, _| true, |_| false), want, "the primary was not told the set");
        m.shards.get_mut(&ShardId(1)).unwrap().unsettled = false;
        let observe = |s: &str| Observed { alive: true, status: statuses.get(s) };
        assert_eq!(reconcile(&m, observe, |_, _| true, |_| false), want, "settled or not, it is told its set");
    }

    #[test]
    fn a_voter_back_without_its_replica_waits_while_the_set_settles() {
        let mut m = meta();
        let mut statuses = healthy();
        statuses.insert("c".into(), NodeStatus { node: "c".into(), shards: vec![] });
        m.shards.get_mut(&ShardId(1)).unwrap().unsettled = true;
        let mut want = BTreeSet::from([Action::Settled { shard: ShardId(1), term: 4 }]);
        assert_eq!(run(&m, &statuses, &[]), want, "no Configure while settling");
        m.shards.get_mut(&ShardId(1)).unwrap().unsettled = false;
        want = BTreeSet::from([Action::Configure { shard: ShardId(1), server: "c".into() }]);
        assert_eq!(run(&m, &statuses, &[]), want);
        let shard = m.shards.get_mut(&ShardId(1)).unwrap();
        assert!(shard.demote("c"), "a settled voter is demoted");
        assert_eq!((shard.replicas.len(), shard.learners.clone(), shard.unsettled), (2, vec!["c".to_owned()], true));
        assert!(!shard.demote("b"), "and no second one before the first has settled");
    }
}
