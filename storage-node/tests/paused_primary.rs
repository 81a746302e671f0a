//! A paused old primary is fenced by term: after an election at T+1 it cannot acknowledge
//! anything, and what it appended alone is discarded when it follows.
//!
//! The primary is frozen with SIGSTOP (alive, sockets open, silent: a GC pause or a
//! partition). The followers elect a new primary at T+1, which takes writes. Writes sent to
//! the old primary while it is frozen (queued in its socket) and after SIGCONT (it still
//! believes in its 60 s lease) must not be acknowledged; the followers refuse its term-T
//! appends. Told to follow at T+1, it drops its divergent suffix: its rows equal the new
//! primary's, and its log holds no entry the new primary's log does not.

mod harness;

use std::time::Duration;

use harness::cluster::expect_ok;
use harness::{classify, row_for, within, Cluster, Ledger, NodeOpts, Outcome};
use shardline_protocol::{ReplicaRole, Request, Row, WriteBatch};

const TEST_TIMEOUT: Duration = Duration::from_secs(150);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_primary_cannot_commit_after_an_election() {
    let mut cluster = Cluster::start(3, NodeOpts::default()).await;
    within(TEST_TIMEOUT, "paused_primary", scenario(&mut cluster)).await;
}

async fn scenario(cluster: &mut Cluster) {
    let (old, term) = (0, 1);
    cluster.setup_shard(old, term).await;
    let mut ledger = Ledger::new(31);
    for key in 1..=20 {
        let outcome = ledger.write(cluster, old, &[key]).await;
        assert!(outcome.is_acked(), "key {key}: {outcome}");
    }

    cluster.nodes[old].stop().await;
    let new_term = term + 1;
    let election = cluster.elect(new_term, &[1, 2]).await.unwrap_or_else(|e| panic!("election at {new_term}: {e}"));
    let new = election.winner;
    let other = 3 - new;
    eprintln!("election at {new_term} with node {old} paused: node {new} wins");
    for key in 21..=30 {
        let outcome = ledger.write(cluster, new, &[key]).await;
        assert!(outcome.is_acked(), "key {key} on the new primary: {outcome}");
    }

    // Writes queued to the frozen old primary: they reach it only after SIGCONT.
    let addr = cluster.nodes[old].addr();
    let queued: Vec<(i64, tokio::task::JoinHandle<Outcome>)> = (100..103)
        .map(|key| {
            let addr = addr.clone();
            let task = tokio::spawn(async move { write_to(&addr, 3100 + key as u64, key).await });
            (key, task)
        })
        .collect();
    // Give the queued writes time to connect and send into the frozen process's socket; not
    // a readiness wait: the test holds whether or not they made it before SIGCONT.
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.nodes[old].cont();

    for key in 200..205 {
        let outcome = ledger.write(cluster, old, &[key]).await;
        eprintln!("write to the old primary after SIGCONT: key {key}: {outcome}");
        assert!(!outcome.is_acked(), "the fenced old primary acknowledged key {key}: {outcome}");
        ledger.mark_last_must_be_absent();
    }
    for (key, task) in queued {
        let outcome = task.await.expect("queued write task");
        eprintln!("write queued to the frozen old primary: key {key}: {outcome}");
        assert!(!outcome.is_acked(), "the fenced old primary acknowledged queued key {key}: {outcome}");
        ledger.record(&[key], old, outcome, true);
    }

    // The new primary still takes writes.
    let outcome = ledger.write(cluster, new, &[31]).await;
    assert!(outcome.is_acked(), "key 31 on the new primary after the old one woke: {outcome}");

    expect_ok("BecomeFollower on the old primary", cluster.become_follower(old, new_term, new).await);
    let rows = cluster.wait_converged(new, &[old, other], Duration::from_secs(30)).await;
    if let Err(problems) = ledger.check(&rows) {
        panic!("rows after the paused primary rejoined break the ledger:\n{problems}");
    }
    for f in [old, other] {
        if let Err(problems) = cluster.log_matches(f, new).await {
            panic!("node {f}'s log keeps entries the new primary lacks:\n{problems}");
        }
    }
    let state = cluster.state(old).await.expect("old primary state");
    assert_eq!((state.role, state.term), (ReplicaRole::Follower, new_term), "old primary after rejoining: {state:?}");
}

/// One write of `key` to `addr` as its own client, classified.
async fn write_to(addr: &str, client_id: u64, key: i64) -> Outcome {
    let rows: Vec<Row> = vec![row_for(key)];
    let batch = WriteBatch::encode(client_id, 1, &rows).expect("batch");
    let answer = harness::call_once(addr, &Request::Write(batch), None, Duration::from_secs(10)).await;
    classify(answer)
}
