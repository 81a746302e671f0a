//! Two failovers in a row: an old primary holding a longer log from an older term loses the
//! election to a shorter log from a newer term, and its divergent suffix is truncated by
//! term, not kept because it is "further ahead".
//!
//! Node A leads at term 1 with follower B (C is dead). B is frozen (SIGSTOP) and A logs
//! writes that B never reads: they time out on A alone. A and B are SIGKILLed (B while
//! frozen, so A's appends in its socket are lost). B and C restart; B wins term 2 and
//! commits a few writes with C: fewer entries than A's suffix. The term-2 primary freezes
//! and A restarts: its log ends at (term 1, higher index). The election at term 3 between
//! A and the other term-2 replica (by term first, then index) must pick the latter; A, told
//! to follow, must drop its term-1 suffix. No acknowledged write is lost, A's
//! lone writes never appear, and every log agrees with the primary's.

mod harness;

use std::time::Duration;

use harness::cluster::expect_ok;
use harness::{classify, row_for, within, Cluster, Ledger, NodeOpts, Outcome};
use shardline_protocol::{Request, WriteBatch};

const TEST_TIMEOUT: Duration = Duration::from_secs(120);
const LONE_WRITES: i64 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_longer_log_is_truncated_by_term() {
    let mut cluster = Cluster::start(3, NodeOpts::default()).await;
    within(TEST_TIMEOUT, "divergent_suffix", scenario(&mut cluster)).await;
}

async fn scenario(cluster: &mut Cluster) {
    let (a, b, c) = (0, 1, 2);
    cluster.setup_shard(a, 1).await;
    let mut ledger = Ledger::new(81);
    for key in 1..=5 {
        assert!(ledger.write(cluster, a, &[key]).await.is_acked(), "key {key}");
    }
    cluster.nodes[c].kill();
    for key in 6..=10 {
        let outcome = ledger.write(cluster, a, &[key]).await;
        assert!(outcome.is_acked(), "key {key} with A and B up: {outcome}");
    }

    // B freezes; A logs writes at once, before it can tell B is gone. They cannot commit.
    // SIGSTOP is asynchronous: until the kernel shows B stopped it may still read (and log)
    // what A sends, and then A's writes are no longer A's alone.
    cluster.nodes[b].stop().await;
    let addr = cluster.nodes[a].addr();
    let lone: Vec<_> = (0..LONE_WRITES)
        .map(|i| {
            let (addr, key) = (addr.clone(), 100 + i);
            (key, tokio::spawn(async move { write_to(&addr, 8100 + i as u64, key).await }))
        })
        .collect();
    let mut logged_alone = 0;
    for (key, task) in lone {
        let outcome = task.await.expect("write task");
        eprintln!("write to A with B frozen and C dead: key {key}: {outcome}");
        assert!(!outcome.is_acked(), "A acknowledged key {key} with no live follower: {outcome}");
        if !outcome.definitely_failed() {
            logged_alone += 1;
        }
        // Only A can have logged it: B never read it, C was dead.
        ledger.record(&[key], a, outcome, true);
    }
    let a_last = cluster.state(a).await.expect("A's state").last;
    eprintln!("A logged {logged_alone} writes alone; its log ends at {a_last:?}");
    cluster.nodes[a].kill();
    cluster.nodes[b].kill();

    // Term 2: B and C.
    cluster.restart(b).await;
    cluster.restart(c).await;
    let second = cluster.elect(2, &[b, c]).await.unwrap_or_else(|e| panic!("election at 2: {e}"));
    eprintln!("election at 2: node {} wins; votes {:?}", second.winner, second.votes);
    for key in 20..=21 {
        let outcome = ledger.write(cluster, second.winner, &[key]).await;
        assert!(outcome.is_acked(), "key {key} at term 2: {outcome}");
    }

    // Term 3: A returns with its longer, older log. The term-2 primary is frozen first, so
    // that it cannot catch A up before the election: A's vote shows its own suffix.
    let (p2, other2) = (second.winner, if second.winner == b { c } else { b });
    cluster.nodes[p2].stop().await;
    cluster.restart(a).await;
    let third = cluster.elect(3, &[a, other2]).await.unwrap_or_else(|e| panic!("election at 3: {e}"));
    eprintln!("election at 3 (node {p2} frozen): node {} wins; votes {:?}", third.winner, third.votes);
    assert_eq!(third.winner, other2, "A's term-1 log must lose to a term-2 log: {:?}", third.votes);
    if let (Some(va), Some(vw)) = (third.vote(a), third.vote(other2)) {
        if va.last.index <= vw.last.index {
            eprintln!(
                "note: A's log is not longer than the winner's ({:?} vs {:?}); the scenario is weaker",
                va.last, vw.last
            );
        }
    }
    cluster.nodes[p2].cont();
    expect_ok("BecomeFollower on the term-2 primary", cluster.become_follower(p2, 3, third.winner).await);
    let followers: Vec<usize> = (0..3).filter(|&i| i != third.winner).collect();
    let rows = cluster.wait_converged(third.winner, &followers, Duration::from_secs(30)).await;
    if let Err(problems) = ledger.check(&rows) {
        panic!("rows after two failovers break the ledger:\n{problems}");
    }
    for f in followers {
        if let Err(problems) = cluster.log_matches(f, third.winner).await {
            panic!("node {f}'s log disagrees with the primary's after two failovers:\n{problems}");
        }
    }
    let outcome = ledger.write(cluster, third.winner, &[30]).await;
    assert!(outcome.is_acked(), "write at term 3: {outcome}");
}

/// One write of `key` to `addr` as its own client, classified.
async fn write_to(addr: &str, client_id: u64, key: i64) -> Outcome {
    let batch = WriteBatch::encode(client_id, 1, &[row_for(key)]).expect("batch");
    classify(harness::call_once(addr, &Request::Write(batch), None, Duration::from_secs(10)).await)
}
