//! Failover: no acknowledged write is lost when the primary dies, and a restarted old
//! primary neither acknowledges writes on its own nor keeps anything the new primary lacks.
//!
//! The primary acknowledges 200 writes and is SIGKILLed. The harness runs the coordinator's
//! election at the next term among the two followers (ask both, promote the highest log).
//! The new primary holds all 200 rows and takes new writes. The old primary restarts and,
//! told nothing yet, must not acknowledge a write sent straight to it; once told to follow
//! at the new term it converges to exactly the new primary's rows and log.

mod harness;

use std::time::Duration;

use harness::cluster::expect_ok;
use harness::{within, Budget, Cluster, Ledger, NodeOpts};

const TEST_TIMEOUT: Duration = Duration::from_secs(150);
const WRITES: i64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_the_primary() {
    let mut cluster = Cluster::start(3, NodeOpts::default()).await;
    within(TEST_TIMEOUT, "failover", scenario(&mut cluster)).await;
}

async fn scenario(cluster: &mut Cluster) {
    let (old, term) = (0, 1);
    cluster.setup_shard(old, term).await;
    let mut ledger = Ledger::new(21);
    for key in 1..=WRITES {
        let outcome = ledger.write(cluster, old, &[key]).await;
        let commit = outcome.commit().unwrap_or_else(|| panic!("key {key}: {outcome}"));
        assert!(commit.replicas.len() >= 2, "key {key} acked by fewer than 2 replicas: {commit:?}");
    }

    cluster.nodes[old].kill();
    let new_term = term + 1;
    let election = cluster.elect(new_term, &[1, 2]).await.unwrap_or_else(|e| panic!("election at {new_term}: {e}"));
    let new = election.winner;
    let other = 3 - new;
    eprintln!("election at {new_term}: node {new} wins; votes {:?}", election.votes);
    for (i, vote) in &election.votes {
        let vote = vote.as_ref().unwrap_or_else(|e| panic!("node {i} did not vote: {e}"));
        assert!(vote.electable, "node {i} is not electable: {vote:?}");
    }

    // Every acknowledged write is on the new primary (it may need a moment to apply them).
    let mut budget = Budget::new("the new primary applying the acknowledged writes", Duration::from_secs(20));
    loop {
        let why = match cluster.rows(new).await {
            Ok(rows) if rows.len() as i64 >= WRITES => match ledger.check(&rows) {
                Ok(()) => break,
                Err(problems) => problems,
            },
            Ok(rows) => format!("{} of {WRITES} rows so far", rows.len()),
            Err(e) => format!("{e:?}"),
        };
        if !budget.retry().await {
            panic!("{}: {why}", budget.spent());
        }
    }

    // The new primary takes writes.
    for key in 1001..=1020 {
        let outcome = ledger.write(cluster, new, &[key]).await;
        let commit = outcome.commit().unwrap_or_else(|| panic!("key {key} on the new primary: {outcome}"));
        assert_eq!(commit.term, new_term, "key {key} committed in another term: {commit:?}");
        assert!(commit.replicas.len() >= 2, "key {key} acked by fewer than 2 replicas: {commit:?}");
    }

    // The old primary comes back, told nothing: it must not acknowledge a write by itself.
    cluster.restart(old).await;
    match cluster.state(old).await {
        Ok(state) => eprintln!("restarted old primary, before any command: {state:?}"),
        Err(e) => eprintln!("restarted old primary, before any command: {e}"),
    }
    match cluster.rows(old).await {
        Ok(rows) => eprintln!("restarted old primary serves {} rows before any command", rows.len()),
        Err(e) => eprintln!("restarted old primary, read before any command: {e:?}"),
    }
    let outcome = ledger.write(cluster, old, &[3000]).await;
    eprintln!("write straight to the restarted old primary: {outcome}");
    assert!(!outcome.is_acked(), "the restarted old primary acknowledged a write on its own: {outcome}");
    // Only the old primary can have logged it, at its old term: it must never commit.
    ledger.mark_last_must_be_absent();

    expect_ok("BecomeFollower on the old primary", cluster.become_follower(old, new_term, new).await);
    let rows = cluster.wait_converged(new, &[old, other], Duration::from_secs(30)).await;
    if let Err(problems) = ledger.check(&rows) {
        panic!("rows after failover break the ledger:\n{problems}");
    }
    for f in [old, other] {
        if let Err(problems) = cluster.log_matches(f, new).await {
            panic!("node {f}'s log disagrees with the new primary's:\n{problems}");
        }
    }
    let state = cluster.state(old).await.expect("old primary state");
    assert_eq!(state.term, new_term, "old primary's term after following: {state:?}");
    eprintln!("converged on {} rows; old primary now {state:?}", rows.len());
}
