//! Majority commit: a write is acknowledged only once a majority of the shard's replicas
//! (2 of 3) hold it durably.
//!
//! With one follower dead the shard still commits; with both dead the primary refuses
//! (`NoQuorum`, before logging) and acknowledges nothing. When the followers come back they
//! catch up to exactly the primary's rows: every acknowledged write is there, no refused
//! one is, and the replicas' logs agree entry by entry.

mod harness;

use std::time::{Duration, Instant};

use harness::{within, Cluster, Ledger, NodeOpts, Outcome};

const TEST_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_commit_on_a_majority_and_stop_without_one() {
    let mut cluster = Cluster::start(3, NodeOpts::default()).await;
    within(TEST_TIMEOUT, "majority_commit", scenario(&mut cluster)).await;
}

async fn scenario(cluster: &mut Cluster) {
    let (primary, term) = (0, 1);
    cluster.setup_shard(primary, term).await;
    let mut ledger = Ledger::new(11);

    // All three up: every write is acknowledged by at least two replicas.
    for key in 1..=10 {
        let outcome = ledger.write(cluster, primary, &[key]).await;
        let commit = outcome.commit().unwrap_or_else(|| panic!("key {key} with 3 replicas up: {outcome}"));
        assert!(commit.replicas.len() >= 2, "key {key} acked by fewer than 2 replicas: {commit:?}");
        assert_eq!(commit.term, term, "key {key} committed in an unexpected term: {commit:?}");
    }

    // One follower dead: a majority (primary + the other follower) remains.
    cluster.nodes[2].kill();
    for key in 11..=20 {
        let outcome = ledger.write(cluster, primary, &[key]).await;
        let commit = outcome.commit().unwrap_or_else(|| panic!("key {key} with 2 of 3 replicas up: {outcome}"));
        assert!(commit.replicas.len() >= 2, "key {key} acked by fewer than 2 replicas: {commit:?}");
        assert!(
            !commit.replicas.iter().any(|r| r == cluster.nodes[2].name()),
            "key {key} names the dead replica as holding it: {commit:?}"
        );
    }

    // Both followers dead: no majority. Keep writing until the primary refuses with NoQuorum
    // (it may first time out while it notices); nothing may be acknowledged.
    cluster.nodes[1].kill();
    let started = Instant::now();
    let mut saw_no_quorum = false;
    let mut key = 100;
    while !saw_no_quorum && key < 150 && started.elapsed() < Duration::from_secs(10) {
        let outcome = ledger.write(cluster, primary, &[key]).await;
        eprintln!("no majority: key {key}: {outcome}");
        assert!(!outcome.is_acked(), "key {key} acknowledged with both followers dead: {outcome}");
        saw_no_quorum = outcome.refusal() == Some("NoQuorum");
        key += 1;
    }
    assert!(saw_no_quorum, "no write was refused with NoQuorum in {} attempts over {:?}", key - 100, started.elapsed());
    let (acked, failed, unknown) = ledger.tally();
    eprintln!("before the followers return: {acked} acked, {failed} refused, {unknown} indeterminate");

    // The followers return at the same term and catch up.
    for f in [1, 2] {
        cluster.restart(f).await;
        let answer = cluster.become_follower(f, term, primary).await;
        harness::cluster::expect_ok(&format!("BecomeFollower on restarted node {f}"), answer);
    }
    // The shard takes writes again once the primary has reached a follower: until then it
    // may still refuse (definitely, nothing logged) while its retry backoff runs out.
    let started = Instant::now();
    let mut key = 500;
    loop {
        let outcome = ledger.write(cluster, primary, &[key]).await;
        if outcome.is_acked() {
            break;
        }
        assert!(outcome.definitely_failed(), "write {key} after the followers returned: {outcome}");
        assert!(
            key < 600 && started.elapsed() < Duration::from_secs(10),
            "no write acknowledged in {:?} after the followers returned: last {outcome}",
            started.elapsed()
        );
        key += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let rows = cluster.wait_converged(primary, &[1, 2], Duration::from_secs(30)).await;
    if let Err(problems) = ledger.check(&rows) {
        panic!("primary's rows break the ledger:\n{problems}");
    }
    for f in [1, 2] {
        if let Err(problems) = cluster.log_matches(f, primary).await {
            panic!("node {f}'s log disagrees with the primary's:\n{problems}");
        }
    }
    for key in ledger.failed_keys() {
        assert!(!rows.iter().any(|r| r.key == key), "refused key {key} is present");
    }
    let refused: Vec<&Outcome> =
        ledger.entries().iter().map(|e| &e.outcome).filter(|o| o.definitely_failed()).collect();
    eprintln!("done: {} rows; refusals {:?}", rows.len(), refused.iter().map(|o| o.to_string()).collect::<Vec<_>>());
}
