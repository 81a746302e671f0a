//! A restarted replica does not serve rows older than those it served before it died:
//! until it has caught up it answers `Unavailable` (and reports `serving: false`).
//!
//! Three replicas take 50 acknowledged writes and converge; a follower (with the primary
//! frozen, so nobody catches it up first) and then the primary are SIGKILLed and
//! restarted. Before anyone tells them anything, each either refuses reads or serves every
//! row it held before (a client routed to it must not see acknowledged rows vanish). Once
//! roles are given again, all converge.

mod harness;

use std::time::Duration;

use harness::{within, Cluster, Ledger, NodeOpts, ReadError};
use shardline_protocol::ErrorCode;

const TEST_TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_does_not_serve_stale_rows() {
    let mut cluster = Cluster::start(3, NodeOpts::default()).await;
    within(TEST_TIMEOUT, "restart_reads", scenario(&mut cluster)).await;
}

async fn scenario(cluster: &mut Cluster) {
    let (primary, term) = (0, 1);
    cluster.setup_shard(primary, term).await;
    let mut ledger = Ledger::new(61);
    for key in 1..=50 {
        let outcome = ledger.write(cluster, primary, &[key]).await;
        assert!(outcome.is_acked(), "key {key}: {outcome}");
    }
    let before = cluster.wait_converged(primary, &[1, 2], Duration::from_secs(20)).await;

    let mut problems = Vec::new();
    for victim in [2, primary] {
        // While the follower restarts the primary is frozen, so that no primary contacts
        // it and catches it up before the test reads from it.
        if victim != primary {
            cluster.nodes[primary].stop().await;
        }
        cluster.nodes[victim].kill();
        cluster.restart(victim).await;
        let state = cluster.state(victim).await;
        let read = cluster.rows(victim).await;
        let verdict = match &read {
            Err(ReadError::Refused(ErrorCode::Unavailable { .. })) => "refuses reads: fine".to_owned(),
            Ok(rows) if *rows == before => "serves every row it held: fine".to_owned(),
            Ok(rows) => {
                let msg = format!(
                    "node {victim}, restarted, told nothing yet, serves {} rows where it served {} before it died; status {state:?}",
                    rows.len(),
                    before.len()
                );
                problems.push(msg.clone());
                msg
            }
            Err(e) => {
                let msg = format!("node {victim}, restarted: read answered {e:?}");
                problems.push(msg.clone());
                msg
            }
        };
        eprintln!("after restarting node {victim}: {verdict}");
        cluster.nodes[primary].cont();
    }

    // Roles again at a new term (the old primary restarted, so elect): all converge.
    let election = cluster.elect(term + 1, &[0, 1, 2]).await.unwrap_or_else(|e| panic!("election: {e}"));
    let others: Vec<usize> = (0..3).filter(|&i| i != election.winner).collect();
    let rows = cluster.wait_converged(election.winner, &others, Duration::from_secs(30)).await;
    if let Err(e) = ledger.check(&rows) {
        panic!("after re-election:\n{e}");
    }
    assert_eq!(rows, before);
    let outcome = ledger.write(cluster, election.winner, &[51]).await;
    assert!(outcome.is_acked(), "write after re-election: {outcome}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
