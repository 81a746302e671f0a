//! The core's steps with simulated time: no sockets, no clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shardline_protocol::{
    ControlRequest, ControlResponse, ErrorCode, LogPosition, NodeStatus, ReplicaRole, ShardId, ShardSpec, ShardState,
    Vote,
};

use super::*;
use crate::meta::ServerMeta;

/// A sink that remembers every configuration saved.
#[derive(Debug, Default, Clone)]
struct Saved(Arc<Mutex<Vec<ClusterMeta>>>);

impl MetaSink for Saved {
    fn save(&self, meta: &ClusterMeta) -> Result<(), MetaError> {
        self.0.lock().unwrap().push(meta.clone());
        Ok(())
    }

    fn load(&self) -> Result<ClusterMeta, MetaError> {
        Ok(self.0.lock().unwrap().last().cloned().unwrap_or_default())
    }
}

const SHARD: ShardId = ShardId(1);

fn cfg() -> CoreConfig {
    let ms = Duration::from_millis;
    CoreConfig {
        heartbeat: ms(100),
        dead_after: ms(400),
        lease: ms(300),
        call_timeout: ms(1000),
        respawn_backoff: ms(1000),
        can_restart: false,
    }
}

/// Shard 1 on a, b, c, led by `primary` at term 4.
fn core(primary: Option<&str>, now: Instant) -> (Core, Saved) {
    let mut meta = ClusterMeta::default();
    let spec = ShardSpec { id: SHARD, low: 0, size: 10 };
    let replicas = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
    let shard = ShardMeta {
        spec,
        term: 4,
        primary: primary.map(str::to_owned),
        replicas,
        catch_up: Default::default(),
        learners: vec![],
        unsettled: false,
    };
    meta.shards.insert(SHARD, shard);
    for s in ["a", "b", "c"] {
        meta.servers.insert(s.into(), ServerMeta { addr: format!("{s}:1") });
    }
    let saved = Saved::default();
    (Core::new(cfg(), meta, Box::new(saved.clone()), now), saved)
}

fn status(node: &str, role: ReplicaRole, term: u64) -> ControlResponse {
    let state = ShardState {
        spec: ShardSpec { id: SHARD, low: 0, size: 10 },
        role,
        term,
        last: LogPosition { term, index: 9 },
        commit_index: 9,
        applied_index: 9,
        serving: true,
        fault: None,
        settled: true,
        copies: Vec::new(),
    };
    ControlResponse::Status(NodeStatus { node: node.into(), shards: vec![state] })
}

fn vote(term: u64, index: u64) -> ControlResponse {
    let last = LogPosition { term: 4, index };
    ControlResponse::Vote(Vote { shard: SHARD, term, last, electable: true, whole: true })
}

fn calls(effects: &[Effect]) -> Vec<&Call> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Call(c) => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn a_term_is_saved_before_any_replica_hears_of_it_and_the_winner_leads() {
    let t0 = Instant::now();
    let (mut core, saved) = core(None, t0);
    let effects = core.reconcile(t0, false);
    let queries = calls(&effects);
    assert_eq!(queries.len(), 3);
    assert!(queries.iter().all(|c| matches!(c.request, ControlRequest::ElectionQuery { term: 5, .. })));
    assert_eq!(saved.0.lock().unwrap().last().unwrap().shards[&SHARD].term, 5, "term 5 saved first");
    let ids: Vec<u64> = queries.iter().map(|c| c.id).collect();
    assert!(core.on_answer(ids[0], Some(vote(5, 7)), t0).is_empty());
    let lead = core.on_answer(ids[1], Some(vote(5, 9)), t0);
    let lead = calls(&lead);
    assert_eq!(lead.len(), 1, "two votes of three decide, no lease was ever granted: b leads at once");
    assert_eq!(lead[0].to.name, "b");
    assert!(core.electing(SHARD));
    assert!(core.on_answer(ids[2], Some(vote(5, 8)), t0).is_empty(), "c's late vote changes nothing");
    let follow = core.on_answer(lead[0].id, Some(ControlResponse::Ok), t0);
    let names: Vec<&str> = calls(&follow).iter().map(|c| c.to.name.as_str()).collect();
    assert_eq!(names, ["a", "c"], "every voter that answered follows, the late one included");
    assert_eq!(core.meta().shards[&SHARD].primary.as_deref(), Some("b"));
    assert!(!core.electing(SHARD));
}

/// Heartbeats to primary `a` answered at `t0` and 100 ms, and the third call, at 200 ms,
/// which carries a lease grant counted from the second.
fn third_heartbeat_of_primary_a(core: &mut Core, t0: Instant) -> Call {
    let ms = Duration::from_millis;
    for at in [t0, t0 + ms(100)] {
        let hb = core.heartbeat_call("a", at);
        core.on_answer(hb.id, Some(status("a", ReplicaRole::Primary, 4)), at);
    }
    core.heartbeat_call("a", t0 + ms(200))
}

#[test]
fn a_successor_leads_only_once_the_old_leases_have_run_out() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let (mut core, _) = core(Some("a"), t0);
    let hb = third_heartbeat_of_primary_a(&mut core, t0);
    assert!(matches!(hb.request, ControlRequest::Heartbeat { grant: Some(_), .. }));
    // a restarted meanwhile and answers idle: a new election, while its lease may still run.
    core.on_answer(hb.id, Some(status("a", ReplicaRole::Idle, 4)), t0 + ms(200));
    let now = t0 + ms(250);
    let queries: Vec<u64> = calls(&core.reconcile(now, false)).iter().map(|c| c.id).collect();
    assert_eq!(queries.len(), 3, "a does not lead: elect");
    assert!(core.on_answer(queries[1], Some(vote(5, 9)), now).is_empty());
    let wait = core.on_answer(queries[2], Some(vote(5, 9)), now);
    let Some(Effect::WakeAt(at)) = wait.first() else { panic!("a wait for the lease: {wait:?}") };
    assert!(core.on_answer(queries[0], None, now).is_empty(), "a's failed call changes nothing");
    assert_eq!(*at, t0 + ms(100) + ms(300) + ms(35), "the last grant's bound, drift margin included");
    assert!(calls(&core.tick(*at - ms(1))).is_empty(), "not before");
    let lead = core.tick(*at);
    assert!(matches!(calls(&lead)[0].request, ControlRequest::BecomePrimary { term: 5, .. }));
}

#[test]
fn no_lease_wait_once_the_old_primary_has_voted_at_the_new_term() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let (mut core, _) = core(Some("a"), t0);
    let hb = third_heartbeat_of_primary_a(&mut core, t0);
    core.on_answer(hb.id, Some(status("a", ReplicaRole::Primary, 4)), t0 + ms(200));
    // A planned switchover to c while a's lease runs: a votes, so it has stepped down.
    let now = t0 + ms(250);
    let queries = core.elect_preferring(SHARD, Some("c".into()), now);
    let queries: Vec<u64> = calls(&queries).iter().map(|c| c.id).collect();
    assert!(core.on_answer(queries[0], Some(vote(5, 9)), now).is_empty());
    assert!(core.on_answer(queries[1], Some(vote(5, 9)), now).is_empty(), "waits for its target");
    let lead = core.on_answer(queries[2], Some(vote(5, 9)), now);
    let lead = calls(&lead);
    assert_eq!(lead.len(), 1, "no wait: {lead:?}");
    assert_eq!(lead[0].to.name, "c", "the target wins the tie");
}

#[test]
fn unanswered_calls_time_out_and_a_failed_election_backs_off() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let (mut core, _) = core(None, t0);
    assert_eq!(calls(&core.reconcile(t0, false)).len(), 3);
    assert!(calls(&core.reconcile(t0 + ms(50), false)).is_empty(), "one election at a time");
    // Nobody answers: at the call timeout the round is decided on nothing.
    assert!(calls(&core.reconcile(t0 + ms(1000), false)).is_empty(), "no quorum, backing off");
    assert!(!core.electing(SHARD));
    assert_eq!(core.counters().failed_elections, 1);
    assert!(calls(&core.reconcile(t0 + ms(1150), false)).is_empty(), "still backing off");
    let again = core.reconcile(t0 + ms(1200), false);
    assert!(calls(&again).iter().all(|c| matches!(c.request, ControlRequest::ElectionQuery { term: 6, .. })));
}

#[test]
fn a_queued_voter_is_retired_once_the_set_has_settled_and_while_an_admin_operation_holds() {
    let t0 = Instant::now();
    let (mut core, _) = core(Some("a"), t0);
    for n in ["a", "b", "c"] {
        let role = if n == "a" { ReplicaRole::Primary } else { ReplicaRole::Follower };
        let hb = core.heartbeat_call(n, t0);
        core.on_answer(hb.id, Some(status(n, role, 4)), t0);
    }
    assert!(core.remove_replica(SHARD, "c", t0).is_empty(), "queued, not yet retired");
    assert_eq!(core.leaving(SHARD), ["c"]);
    let effects = core.reconcile(t0, true);
    assert!(core.leaving(SHARD).is_empty());
    assert_eq!(core.meta().shards[&SHARD].replicas, ["a", "b"]);
    let to: Vec<(&str, bool)> = calls(&effects)
        .iter()
        .map(|c| (c.to.name.as_str(), matches!(c.request, ControlRequest::DropShard { .. })))
        .collect();
    // The primary is told the smaller set (it had not acknowledged the old one either).
    assert!(to.contains(&("a", false)) && to.contains(&("c", true)), "{to:?}");
}

/// Found by the simulator (seed 24016889): a voter that crashed after its last answer is
/// still alive to the failure detector for `dead_after`, with the status it had before.
/// The retirement of another voter waits until it answers a heartbeat again.
#[test]
fn a_queued_voter_waits_while_one_it_relies_on_has_missed_its_last_heartbeat() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let (mut core, _) = core(Some("a"), t0);
    for n in ["a", "b", "c"] {
        let role = if n == "a" { ReplicaRole::Primary } else { ReplicaRole::Follower };
        let hb = core.heartbeat_call(n, t0);
        core.on_answer(hb.id, Some(status(n, role, 4)), t0);
    }
    // The next round: a answers, b does not (it crashed after its answer at t0).
    let hb = core.heartbeat_call("a", t0 + ms(100));
    core.on_answer(hb.id, Some(status("a", ReplicaRole::Primary, 4)), t0 + ms(101));
    core.heartbeat_call("b", t0 + ms(100));
    assert!(core.remove_replica(SHARD, "c", t0 + ms(160)).is_empty());
    core.reconcile(t0 + ms(160), true);
    assert!(core.observe("b", t0 + ms(160)).alive, "b is alive to the detector");
    assert_eq!(core.leaving(SHARD), ["c"], "retiring c would leave a and b, b unheard since t0");
    assert_eq!(core.meta().shards[&SHARD].replicas, ["a", "b", "c"]);
    // b answers again: c may go.
    let hb = core.heartbeat_call("b", t0 + ms(200));
    core.on_answer(hb.id, Some(status("b", ReplicaRole::Follower, 4)), t0 + ms(201));
    core.reconcile(t0 + ms(210), true);
    assert!(core.leaving(SHARD).is_empty());
    assert_eq!(core.meta().shards[&SHARD].replicas, ["a", "b"]);
}

/// Status of shard 1 on `node`: its role at term 4 and its log's end and commit.
fn status_at(node: &str, role: ReplicaRole, last: u64, commit: u64) -> ControlResponse {
    let ControlResponse::Status(mut s) = status(node, role, 4) else { unreachable!() };
    s.shards[0].last = LogPosition { term: 4, index: last };
    s.shards[0].commit_index = commit;
    ControlResponse::Status(s)
}

/// One heartbeat round at `at`, each node answering with `answers(node)`.
fn beat(core: &mut Core, at: Instant, answers: impl Fn(&str) -> ControlResponse) -> Vec<Effect> {
    let mut out = Vec::new();
    for n in ["a", "b", "c"] {
        let hb = core.heartbeat_call(n, at);
        out.extend(core.on_answer(hb.id, Some(answers(n)), at));
    }
    out
}

#[test]
fn a_switchover_hands_off_waits_for_its_target_then_elects_it() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let (mut core, _) = core(Some("a"), t0);
    let role = |n: &str| if n == "a" { ReplicaRole::Primary } else { ReplicaRole::Follower };
    beat(&mut core, t0, |n| status_at(n, role(n), 9, 9));
    let handoff = core.switchover(SHARD, Some("c"), t0).expect("a switchover starts");
    let handoff = calls(&handoff);
    assert!(matches!(handoff[0].request, ControlRequest::Handoff { term: 4, .. }) && handoff[0].to.name == "a");
    assert!(core.switchover(SHARD, Some("b"), t0).is_err(), "one switchover of a shard at a time");
    core.on_answer(handoff[0].id, Some(ControlResponse::Ok), t0 + ms(5));
    // The primary has logged up to 12 and committed 11; c holds 11: not yet.
    let early = beat(&mut core, t0 + ms(100), |n| match n {
        "a" => status_at(n, role(n), 12, 11),
        "b" => status_at(n, role(n), 12, 11),
        _ => status_at(n, role(n), 11, 11),
    });
    assert!(calls(&early).is_empty(), "c is one entry short: {early:?}");
    assert!(core.switch_result(SHARD).is_none());
    let queries = beat(&mut core, t0 + ms(200), |n| status_at(n, role(n), 12, 12));
    let queries = calls(&queries);
    assert_eq!(queries.len(), 3, "caught up: an election");
    assert!(queries.iter().all(|c| matches!(c.request, ControlRequest::ElectionQuery { term: 5, .. })));
    let at = t0 + ms(210);
    let mut lead = Vec::new();
    for q in &queries {
        lead.extend(core.on_answer(q.id, Some(vote(5, 12)), at));
    }
    let lead = calls(&lead);
    assert_eq!(lead.len(), 1, "a voted, so no lease wait: {lead:?}");
    assert_eq!(lead[0].to.name, "c", "the target wins the tie");
    core.on_answer(lead[0].id, Some(ControlResponse::Ok), at);
    core.reconcile(at, true);
    assert_eq!(core.switch_result(SHARD), Some(Ok("c".to_owned())));
    assert_eq!(core.meta().shards[&SHARD].primary.as_deref(), Some("c"));
}

#[test]
fn a_switchover_whose_target_does_not_catch_up_gives_up_and_elects_nobody() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let (mut core, _) = core(Some("a"), t0);
    let role = |n: &str| if n == "a" { ReplicaRole::Primary } else { ReplicaRole::Follower };
    beat(&mut core, t0, |n| status_at(n, role(n), 9, 9));
    assert!(matches!(core.switchover(SHARD, Some("d"), t0), Err(ErrorCode::BadRequest(_))), "no replica on d");
    let handoff = core.switchover(SHARD, None, t0).expect("a switchover starts");
    core.on_answer(calls(&handoff)[0].id, Some(ControlResponse::Ok), t0);
    let mut t = t0;
    while t < t0 + switch::HANDOFF {
        t += ms(100);
        let effects =
            beat(
                &mut core,
                t,
                |n| if n == "a" { status_at(n, role(n), 12, 12) } else { status_at(n, role(n), 10, 10) },
            );
        assert!(calls(&effects).is_empty(), "no election while the target lags");
    }
    core.reconcile(t, true);
    assert!(matches!(core.switch_result(SHARD), Some(Err(ErrorCode::Unavailable { .. }))));
    assert_eq!(core.meta().shards[&SHARD].primary.as_deref(), Some("a"), "the primary stays");
    assert_eq!(core.meta().shards[&SHARD].term, 4, "no new term");
}

#[test]
fn caught_up_needs_the_whole_log_on_the_target_and_all_of_it_committed() {
    let state = |role, last, commit| {
        let ControlResponse::Status(s) = status_at("x", role, last, commit) else { unreachable!() };
        s.shards[0].clone()
    };
    let primary = state(ReplicaRole::Primary, 10, 10);
    assert!(switch::caught_up(&primary, &state(ReplicaRole::Follower, 10, 9), 4));
    assert!(!switch::caught_up(&primary, &state(ReplicaRole::Follower, 9, 9), 4), "one entry short");
    let pending = state(ReplicaRole::Primary, 10, 8);
    assert!(!switch::caught_up(&pending, &state(ReplicaRole::Follower, 10, 8), 4), "not all committed");
    assert!(!switch::caught_up(&primary, &state(ReplicaRole::Follower, 10, 10), 5), "another term's primary");
}

#[test]
fn a_never_elected_shard_waits_for_the_admin_operation_that_configures_it() {
    let t0 = Instant::now();
    let (mut core, _) = core(None, t0);
    core.update(|m| m.shards.get_mut(&SHARD).expect("shard 1").term = 0).expect("saved");
    assert!(calls(&core.reconcile(t0, true)).is_empty(), "Init or AddServers elects it once configured");
    let queries = core.reconcile(t0, false);
    assert!(calls(&queries).iter().all(|c| matches!(c.request, ControlRequest::ElectionQuery { term: 1, .. })));
    assert_eq!(calls(&queries).len(), 3, "with no admin operation under way, the reconcile loop elects it");
}

#[test]
fn a_coordinator_taking_over_waits_out_leases_its_predecessor_may_have_granted() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    // This core took over at 200 ms from a coordinator that may have granted a's lease
    // until then; a never answers this one.
    let (mut core, _) = core(Some("a"), t0);
    core.take_over(t0 + ms(200));
    let now = t0 + ms(450);
    for at in [t0 + ms(50), now] {
        for node in ["b", "c"] {
            let hb = core.heartbeat_call(node, at);
            core.on_answer(hb.id, Some(status(node, ReplicaRole::Follower, 4)), at);
        }
    }
    let queries: Vec<u64> = calls(&core.reconcile(now, false)).iter().map(|c| c.id).collect();
    assert_eq!(queries.len(), 3, "a is dead: elect");
    assert!(core.on_answer(queries[1], Some(vote(5, 9)), now).is_empty());
    let wait = core.on_answer(queries[2], Some(vote(5, 9)), now);
    let Some(Effect::WakeAt(at)) = wait.first() else { panic!("a wait for the predecessor's leases: {wait:?}") };
    assert_eq!(*at, t0 + ms(200) + ms(300) + ms(35), "counted from the takeover");
    assert!(calls(&core.tick(*at - ms(1))).is_empty(), "not before");
    assert!(matches!(calls(&core.tick(*at))[0].request, ControlRequest::BecomePrimary { term: 5, .. }));
}
