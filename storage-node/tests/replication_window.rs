//! Pipelined replication at the seam of the replica core, in process: a primary and a
//! follower on simulated disks, every message carried by hand.
//!
//! - The primary keeps up to [`WINDOW_MESSAGES`] appends in flight to a follower, each
//!   continuing where the one before ended, and sends no more until answers come.
//! - A follower that receives several appends together logs them with one fsync and
//!   answers each; one answer, the last, acknowledges everything before it (cumulative),
//!   so every write it covers commits and the window opens again.
//! - Acknowledgement comes at commit, the table's apply later: a retry of a write committed
//!   but not yet applied is answered from the log, not logged twice; after the apply the
//!   table holds each row once.
//! - A refusal drops the whole window: answers to the dropped appends are ignored and the
//!   primary sends again from where the follower asks.
//! - Only a primary needs ticks: a follower's tick does nothing, so the shard task leaves
//!   followers untimed.

use std::sync::Arc;
use std::time::Duration;

use shardline_protocol::{
    ControlResponse, Operation, PeerRequest, PeerResponse, Row, Schema, ServerAddr, ShardId, ShardSpec, Value,
};
use shardline_storage_node::disk::SimDisk;
use shardline_storage_node::failpoint::Failpoints;
use shardline_storage_node::replica::{AppendRequest, Effect, Link, Replica, ReplicaConfig, WINDOW_MESSAGES};
use shardline_storage_node::store::{MemTable, TableStore};

type Core = Replica<SimDisk, MemTable>;
/// Appends sent, each with its link.
type Sends = Vec<(Link, PeerRequest)>;

const NOW: Duration = Duration::from_millis(5);

fn config(node: &str) -> Arc<ReplicaConfig> {
    Arc::new(ReplicaConfig {
        node: node.into(),
        addr: node.into(),
        write_timeout: Duration::from_secs(60),
        sync_heartbeat: Duration::from_secs(60),
        peer_timeout: Duration::from_secs(60),
        snapshot_lag: 100_000,
        log_retain: 100_000,
        max_payload: shardline_protocol::DEFAULT_MAX_PAYLOAD,
        incarnation: 1,
        snapshot_chunk_bytes: shardline_storage_node::replica::room::SNAPSHOT_CHUNK_BYTES,
        snapshot_rate: 0,
        regressions: Default::default(),
    })
}

fn open(node: &str) -> Core {
    let spec = ShardSpec { id: ShardId(1), low: 0, size: 1_000_000 };
    let failpoints = Arc::new(Failpoints::none());
    Replica::open(config(node), MemTable::new(), SimDisk::new(), failpoints, Some((spec, Schema::seed())))
        .expect("a fresh replica opens")
}

/// A primary "p" at term 1 with the follower "f"; its first append (the no-op) is in flight.
fn pair() -> (Core, Core, Sends) {
    let (mut p, f) = (open("p"), open("f"));
    assert!(matches!(p.election_query(NOW, 1), ControlResponse::Vote(_)));
    let follower = ServerAddr { name: "f".into(), addr: "f".into() };
    assert_eq!(p.become_primary(NOW, 1, vec![follower], vec![], 3_600_000), ControlResponse::Ok);
    let (sends, _) = split(p.effects());
    (p, f, sends)
}

fn insert(client: u64, seq: u64, key: i64) -> Operation {
    let row = Row::new(key, vec![Value::Str(format!("k{key}")), Value::Int(key)]);
    Operation::Write { client_id: client, seq, rows: vec![row] }
}

/// The appends sent, and the writes answered (token, ok), in order.
fn split(effects: Vec<Effect>) -> (Sends, Vec<(u64, bool)>) {
    let (mut sends, mut done) = (Vec::new(), Vec::new());
    for effect in effects {
        match effect {
            Effect::Send { link, request, .. } => sends.push((link, request)),
            Effect::WriteDone { token, result } => done.push((token, result.is_ok())),
        }
    }
    (sends, done)
}

/// The follower receives `sends` together (one group, as its shard task takes them).
fn deliver(f: &mut Core, sends: &[(Link, PeerRequest)]) -> Vec<(Link, PeerResponse)> {
    let requests = sends
        .iter()
        .map(|(_, request)| match request.clone() {
            PeerRequest::Append { term, primary, prev, entries, commit, echo, .. } => {
                AppendRequest { term, primary, prev, entries, commit, echo }
            }
            other => panic!("expected an append, got {other:?}"),
        })
        .collect();
    let answers = f.receive_appends(requests, NOW);
    sends.iter().map(|(link, _)| *link).zip(answers).collect()
}

/// (prev index, entries) of an append.
fn span(request: &PeerRequest) -> (u64, usize) {
    match request {
        PeerRequest::Append { prev, entries, .. } => (prev.index, entries.len()),
        other => panic!("expected an append, got {other:?}"),
    }
}

#[test]
fn a_window_of_appends_is_logged_with_one_follower_fsync_and_acknowledged_cumulatively() {
    let (mut p, mut f, mut in_flight) = pair();
    assert_eq!(in_flight.len(), 1, "the no-op's append");
    // Write groups of one row each, answering nothing: each group's append leaves at once
    // while the window has room, continuing where the one before ended.
    let groups = 2 * WINDOW_MESSAGES as u64;
    for key in 1..=groups {
        p.write_group(NOW, vec![(insert(1, key, key as i64), key)]);
        let (sends, done) = split(p.effects());
        assert!(done.is_empty(), "write {key} acknowledged before a follower holds it: {done:?}");
        in_flight.extend(sends);
    }
    assert_eq!(in_flight.len(), WINDOW_MESSAGES, "the window is full, and no fuller");
    for pair in in_flight.windows(2) {
        let ((prev_a, n_a), (prev_b, _)) = (span(&pair[0].1), span(&pair[1].1));
        assert_eq!(prev_b, prev_a + n_a as u64, "appends continue one another");
    }

    // The follower takes the whole window as one group: one fsync, every append answered.
    let fsyncs = f.sync_counts().fsyncs;
    let answers = deliver(&mut f, &in_flight);
    assert_eq!(f.sync_counts().fsyncs, fsyncs + 1, "one fsync for the group");
    assert!(answers.iter().all(|(_, a)| matches!(a, PeerResponse::Appended { success: true, .. })));

    // Only the last answer reaches the primary: it covers every write in the window.
    let (link, answer) = answers.last().cloned().expect("answers");
    p.on_peer_answers(NOW, vec![(link, Ok(answer))]);
    let (sends, done) = split(p.effects());
    let committed = WINDOW_MESSAGES as u64 - 1; // the no-op took the first append
    assert_eq!(done, (1..=committed).map(|t| (t, true)).collect::<Vec<_>>(), "cumulative acknowledgement");
    assert!(!sends.is_empty(), "the window opened again for the writes still unsent");
    assert_eq!(span(&sends[0].1).0, committed + 1, "sending on from the last entry the follower holds");
    // The earlier answers arrive late: ignored (their appends were acknowledged already).
    p.on_peer_answers(NOW, answers[..answers.len() - 1].iter().map(|(l, a)| (*l, Ok(a.clone()))).collect());
    assert!(split(p.effects()).1.is_empty(), "nothing answered twice");

    // The rest lands. (The term's first commit, the no-op's, was applied at once; these are
    // acknowledged at commit and applied later.)
    let answers = deliver(&mut f, &sends);
    p.on_peer_answers(NOW, answers.into_iter().map(|(l, a)| (l, Ok(a))).collect());
    let (_, done) = split(p.effects());
    assert_eq!(done, (committed + 1..=groups).map(|t| (t, true)).collect::<Vec<_>>());
    assert!(p.state().applied_index < p.state().commit_index, "acknowledged, not applied yet");

    // A retry before the apply is answered from the log (no second entry), and after the
    // apply the table holds each row once.
    let last = p.state().last.index;
    p.write_group(NOW, vec![(insert(1, groups, groups as i64), 100)]);
    let (_, done) = split(p.effects());
    assert_eq!(done, vec![(100, true)], "a retry of a committed write is answered at once");
    assert_eq!(p.state().last.index, last, "and not logged again");
    p.apply_committed();
    assert_eq!(p.state().applied_index, p.state().commit_index);
    let rows = p.table().read_range(0, 1_000_000).expect("read");
    assert_eq!(rows.iter().map(|r| r.key).collect::<Vec<_>>(), (1..=groups as i64).collect::<Vec<_>>());
}

#[test]
fn a_refusal_drops_the_window_and_the_primary_sends_again_from_where_the_follower_asks() {
    let (mut p, mut f, mut in_flight) = pair();
    for key in 1..=3 {
        p.write_group(NOW, vec![(insert(1, key, key as i64), key)]);
        in_flight.extend(split(p.effects()).0);
    }
    assert_eq!(in_flight.len(), 4);
    // The first append (the no-op) is lost; the follower, holding nothing, refuses the rest.
    let answers = deliver(&mut f, &in_flight[1..]);
    assert!(answers.iter().all(|(_, a)| matches!(a, PeerResponse::Appended { success: false, .. })));
    let (link, answer) = answers[0].clone();
    p.on_peer_answers(NOW, vec![(link, Ok(answer))]);
    let (resent, done) = split(p.effects());
    assert!(done.is_empty());
    assert_eq!(resent.len(), 1, "one append from where the follower asked: {resent:?}");
    assert_eq!(span(&resent[0].1), (0, 4), "the whole log again, from its start");
    // Answers to the dropped appends change nothing.
    p.on_peer_answers(NOW, answers[1..].iter().map(|(l, a)| (*l, Ok(a.clone()))).collect());
    assert!(split(p.effects()).0.is_empty(), "no second resend for answers to dropped appends");
    // The resent append lands: everything commits.
    let answers = deliver(&mut f, &resent);
    p.on_peer_answers(NOW, answers.into_iter().map(|(l, a)| (l, Ok(a))).collect());
    let (_, done) = split(p.effects());
    assert_eq!(done, vec![(1, true), (2, true), (3, true)]);
}

#[test]
fn only_a_primary_needs_ticks_and_a_follower_tick_does_nothing() {
    let (mut p, mut f, in_flight) = pair();
    deliver(&mut f, &in_flight);
    assert!(p.needs_tick() && !f.needs_tick());

    // A follower's tick, however late, changes nothing and asks for nothing.
    let hour = Duration::from_secs(3600);
    let before = f.state();
    f.tick(NOW + hour);
    assert!(f.effects().is_empty(), "a follower's tick had effects");
    assert_eq!(f.state(), before, "a follower's tick changed its state");

    // A primary's tick has work: a write no follower answered times out.
    p.write_group(NOW, vec![(insert(1, 1, 1), 1)]);
    split(p.effects());
    p.tick(NOW + hour);
    let (_, done) = split(p.effects());
    assert_eq!(done, vec![(1, false)], "the waiting write timed out at the tick");

    // Stepped down, it follows: no deadlines left.
    let primary = ServerAddr { name: "f".into(), addr: "f".into() };
    assert_eq!(p.become_follower(2, primary), ControlResponse::Ok);
    split(p.effects());
    assert!(!p.needs_tick());
    let before = p.state();
    p.tick(NOW + 2 * hour);
    assert!(p.effects().is_empty() && p.state() == before, "a former primary's tick still did something");
}
