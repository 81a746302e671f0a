//! Issue 11, scenario 4: a replica rebuilt from a snapshot still knows which (client, seq)
//! writes were applied, so once it leads, retries of them are answered as their first
//! attempts' success and applied at most once.
//!
//! Staged with processes: three nodes with a short log (`--snapshot-lag 4 --log-retain
//! 4`), node 0 primary at term 1. Client C inserts key 10, updates it twice (the second
//! update is the later value that must stay), inserts key 20, deletes it and inserts it
//! again (the later row that must stay); each write has its own seq and is acknowledged.
//! Twenty more writes push those entries out of reach of the log. Node 2 is then
//! SIGKILLed, its data directory deleted, and it is restarted empty and configured again:
//! the primary can only rebuild it from a snapshot, which the test checks (its log holds
//! none of C's entries, yet it serves all the rows). The old primary is SIGKILLed, every
//! node is asked the election query of term 2 (node 2's log is as long as node 1's, so a
//! coordinator may pick it) and node 2 leads. Then C resends all six writes, same (client,
//! seq), to node 2, the first update and the delete last (as a client retrying only the
//! writes whose answers it lost would). What must hold:
//! - each is answered `Committed` at the term and index of its first attempt (the insert
//!   does not get `DuplicateKey`, nothing is logged again);
//! - key 10 keeps the later update's value (no update applied twice) and key 20 the later
//!   insert's row (no delete applied twice);
//! - the replicas, the old primary included once it follows, converge on those rows.

mod harness;

use std::time::Duration;

use harness::cluster::expect_ok;
use harness::{within, Cluster, Ledger, NodeOpts, LEASE_MS, SHARD};
use shardline_protocol::{
    ControlRequest, ControlResponse, ReplicaRole, Request, Response, Row, ShardCommit, Value, WriteBatch,
};

const TEST_TIMEOUT: Duration = Duration::from_secs(90);
/// Client C, whose writes are retried.
const C: u64 = 4_400;
/// The order of C's retries, as positions in [`c_writes`]: the first update (seq 2) and
/// the delete (seq 5) come after the writes that followed them the first time.
const RETRY_ORDER: [usize; 6] = [2, 5, 3, 0, 1, 4];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_after_a_snapshot_install_apply_once() {
    let opts = NodeOpts { snapshot_lag: Some(4), log_retain: Some(4), ..NodeOpts::default() };
    let mut cluster = Cluster::start(3, opts).await;
    within(TEST_TIMEOUT, "snapshot_marks", scenario(&mut cluster)).await;
}

/// A row of the seed schema whose name says which of C's writes put it there.
fn row(key: i64, name: &str, marks: i64) -> Row {
    Row::new(key, vec![Value::Str(name.into()), Value::Int(marks)])
}

/// C's writes, in order, each with its own seq (its position + 1).
fn c_writes() -> Vec<Request> {
    let insert = |seq, r: Row| Request::Write(WriteBatch::encode(C, seq, &[r]).expect("encodable batch"));
    vec![
        insert(1, row(10, "first", 1)),
        Request::Update { client_id: C, seq: 2, row: row(10, "second", 2) },
        Request::Update { client_id: C, seq: 3, row: row(10, "third", 3) },
        insert(4, row(20, "old", 4)),
        Request::Delete { client_id: C, seq: 5, key: 20 },
        insert(6, row(20, "new", 6)),
    ]
}

/// Sends `req` to node `i` and returns its commit, panicking on anything else.
async fn committed(cluster: &Cluster, i: usize, req: &Request, what: &str) -> ShardCommit {
    match cluster.request(i, req, None).await {
        Ok(Response::Committed(mut commits)) if commits.len() == 1 && commits[0].shard == SHARD => commits.remove(0),
        other => panic!("{what} to node {i}: expected Committed, got {other:?}"),
    }
}

// A scenario reads top to bottom as the story it tests; split, it would not.
#[allow(clippy::too_many_lines)]
async fn scenario(cluster: &mut Cluster) {
    let (old, term, rebuilt, other) = (0, 1, 2, 1);
    cluster.setup_shard(old, term).await;
    let mut firsts = Vec::new();
    for (i, req) in c_writes().iter().enumerate() {
        let commit = committed(cluster, old, req, &format!("C's write seq {}", i + 1)).await;
        assert!(commit.replicas.len() >= 2, "C's write seq {} acked by fewer than 2: {commit:?}", i + 1);
        firsts.push(commit);
    }
    let last_c = firsts.iter().map(|c| c.index).max().expect("six commits");
    let mut ledger = Ledger::new(44);
    for key in 100..120 {
        let outcome = ledger.write(cluster, old, &[key]).await;
        assert!(outcome.is_acked(), "filler key {key}: {outcome}");
    }
    let want = expected_rows(&ledger);
    let rows = cluster.wait_converged(old, &[other, rebuilt], Duration::from_secs(20)).await;
    assert_eq!(rows, want, "rows after C's writes and the fillers");

    // Node 2 loses its disk and is rebuilt by the primary.
    cluster.wipe_and_restart(rebuilt).await;
    expect_ok("ConfigureShard on the wiped node", cluster.configure(rebuilt).await);
    expect_ok("BecomeFollower on the wiped node", cluster.become_follower(rebuilt, term, old).await);
    let rows = cluster.wait_converged(old, &[other, rebuilt], Duration::from_secs(20)).await;
    assert_eq!(rows, want, "rows once the wiped node is rebuilt");
    let log = cluster.log(rebuilt, 10_000).await.unwrap_or_else(|e| panic!("LOG of the rebuilt node: {e}"));
    let state = cluster.state(rebuilt).await.unwrap_or_else(|e| panic!("state of the rebuilt node: {e}"));
    eprintln!("rebuilt node: {state:?}; its log: {log:?}");
    assert!(
        log.iter().all(|l| l.index > last_c) && state.applied_index >= last_c,
        "node {rebuilt} was not rebuilt from a snapshot: its log holds one of C's entries (at or before {last_c}): {log:?}"
    );

    // The rebuilt node leads at term 2; the old primary is gone first so it cannot interfere.
    cluster.nodes[old].kill();
    let new_term = term + 1;
    let mut lasts = Vec::new();
    for i in 0..3 {
        match cluster.control(i, ControlRequest::ElectionQuery { shard: SHARD, term: new_term }).await {
            Ok(ControlResponse::Vote(v)) => {
                assert!(v.electable && v.term == new_term, "node {i}'s vote: {v:?}");
                lasts.push((i, v.last));
            }
            other => eprintln!("election query at {new_term} to node {i}: {other:?}"),
        }
    }
    assert!(lasts.len() >= 2, "fewer than a majority voted at {new_term}: {lasts:?}");
    let mine = lasts.iter().find(|(i, _)| *i == rebuilt).map(|(_, l)| *l).expect("the rebuilt node voted");
    assert!(
        lasts.iter().all(|(_, l)| *l <= mine),
        "the rebuilt node's log is not the longest, a coordinator would not pick it: {lasts:?}"
    );
    expect_ok("BecomePrimary on the rebuilt node", cluster.become_primary(rebuilt, new_term, LEASE_MS).await);
    expect_ok("BecomeFollower", cluster.become_follower(other, new_term, rebuilt).await);
    cluster.wait_converged(rebuilt, &[other], Duration::from_secs(20)).await;

    // C retries every write: each is its first attempt's success, applied once. The
    // first update and the delete go last, as a client retrying only the writes whose
    // answers it lost would send them: applied again, they would overwrite the later
    // update and remove the later row. Every answer is checked before failing, so that a
    // failure shows all that went wrong.
    let before = cluster.state(rebuilt).await.unwrap_or_else(|e| panic!("new primary's state: {e}"));
    let mut problems = Vec::new();
    let writes = c_writes();
    for i in RETRY_ORDER {
        let req = &writes[i];
        let what = format!("retry of C's write seq {} ({})", i + 1, summary(req));
        let answer = cluster.request(rebuilt, req, None).await;
        eprintln!("{what}: {answer:?}; first attempt {:?}", firsts[i]);
        match answer {
            Ok(Response::Committed(commits)) if commits.len() == 1 => {
                if (commits[0].term, commits[0].index) != (firsts[i].term, firsts[i].index) {
                    problems.push(format!("{what}: committed at {commits:?}, not at its first attempt's entry"));
                }
            }
            other => problems.push(format!("{what}: expected Committed, got {other:?}")),
        }
    }
    let after = cluster.state(rebuilt).await.unwrap_or_else(|e| panic!("new primary's state: {e}"));
    if after.last != before.last {
        problems.push(format!("retries were logged again: the log went from {:?} to {:?}", before.last, after.last));
    }
    let rows = cluster.rows(rebuilt).await.unwrap_or_else(|e| panic!("rows of the new primary: {e:?}"));
    for key in [10, 20] {
        let got = rows.iter().find(|r| r.key == key);
        let wanted = want.iter().find(|r| r.key == key);
        if got != wanted {
            problems.push(format!("key {key} after the retries: {got:?}, should be {wanted:?}"));
        }
    }
    assert!(problems.is_empty(), "retries to the replica rebuilt from a snapshot:\n{}", problems.join("\n"));
    assert_eq!(rows, want, "rows on the new primary after the retries");

    // The old primary comes back as a follower; everyone agrees.
    cluster.restart(old).await;
    expect_ok("BecomeFollower on the old primary", cluster.become_follower(old, new_term, rebuilt).await);
    let outcome = ledger.write(cluster, rebuilt, &[200]).await;
    assert!(outcome.is_acked(), "a new write at term {new_term}: {outcome}");
    let rows = cluster.wait_converged(rebuilt, &[old, other], Duration::from_secs(20)).await;
    assert_eq!(rows, expected_rows(&ledger), "rows once every replica follows the rebuilt node");
    for f in [old, other] {
        if let Err(problems) = cluster.log_matches(f, rebuilt).await {
            panic!("node {f}'s log disagrees with the new primary's:\n{problems}");
        }
    }
    let state = cluster.state(rebuilt).await.expect("new primary's state");
    assert_eq!((state.role, state.term), (ReplicaRole::Primary, new_term), "{state:?}");
}

/// What the shard must hold: C's writes applied once each, then every filler.
fn expected_rows(ledger: &Ledger) -> Vec<Row> {
    let mut rows = vec![row(10, "third", 3), row(20, "new", 6)];
    rows.extend(ledger.acked_keys().into_iter().map(harness::row_for));
    rows.sort_by_key(|r| r.key);
    rows
}

/// What kind of write `req` is, for messages.
fn summary(req: &Request) -> &'static str {
    match req {
        Request::Write(_) => "insert",
        Request::Update { .. } => "update",
        Request::Delete { .. } => "delete",
        _ => "other",
    }
}
