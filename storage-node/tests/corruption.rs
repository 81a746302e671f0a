//! A corrupt log entry is detected, reported and repaired from a peer, never applied or
//! served; a replica with a corrupt log is not electable until repaired.
//!
//! A follower holding 20 committed entries is SIGKILLed and one byte in the middle of a
//! mid-log entry's operation is flipped on disk. The primary is frozen (SIGSTOP) so that it
//! cannot repair the victim before the test looks. After restart the victim's status shows
//! the fault (or it does not serve), `LOG` shows the damaged entry (or the fault names it),
//! and reads either answer `Unavailable` or, if it claims to serve, return exactly the
//! primary's rows. In an election at the next term among the two live replicas it votes as
//! not electable; told to follow the winner it repairs, clears the fault, and serves
//! exactly the primary's rows with a clean log.

mod harness;

use std::time::Duration;

use harness::cluster::expect_ok;
use harness::segment::{flip_byte, records};
use harness::{within, Cluster, Ledger, NodeOpts, ReadError, SHARD};
use shardline_protocol::ErrorCode;

const TEST_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_entry_is_reported_and_repaired_never_served() {
    let mut cluster = Cluster::start(3, NodeOpts::default()).await;
    within(TEST_TIMEOUT, "corruption", scenario(&mut cluster)).await;
}

async fn scenario(cluster: &mut Cluster) {
    let (primary, term, victim) = (0, 1, 2);
    cluster.setup_shard(primary, term).await;
    let mut ledger = Ledger::new(41);
    for key in 1..=20 {
        let outcome = ledger.write(cluster, primary, &[key]).await;
        assert!(outcome.is_acked(), "key {key}: {outcome}");
    }
    let before = cluster.wait_converged(primary, &[1, victim], Duration::from_secs(20)).await;
    cluster.nodes[victim].kill();

    // Damage the operation of an entry in the middle of the log (not the last one, which a
    // node may rightly treat as a torn tail and drop).
    let data_dir = cluster.nodes[victim].data_dir();
    let on_disk = records(&data_dir, SHARD).unwrap_or_else(|e| panic!("reading the victim's log: {e}"));
    assert!(on_disk.len() >= 20, "expected at least 20 entries on disk, found {}: {on_disk:?}", on_disk.len());
    let target = on_disk[on_disk.len() / 2].clone();
    flip_byte(&target.path, target.op_middle(), 0x5A).expect("flip a byte");
    eprintln!(
        "damaged entry (term {}, index {}) at {}+{} in {}",
        target.term,
        target.index,
        target.offset,
        target.len,
        target.path.display()
    );

    // Freeze the primary so that nothing repairs the victim behind the test's back (a
    // primary re-sends missing entries to any follower it reaches).
    cluster.nodes[primary].stop().await;
    cluster.restart(victim).await;
    let state = cluster.state(victim).await.unwrap_or_else(|e| panic!("victim status after restart: {e}"));
    eprintln!("victim after restart: {state:?}");
    assert!(
        state.fault.is_some() || !state.serving,
        "the replica with a corrupt entry reports no fault and serves: {state:?}"
    );
    match cluster.log(victim, 1000).await {
        Ok(lines) => {
            let flagged = lines.iter().any(|l| l.index == target.index && !l.crc_ok);
            assert!(
                flagged || state.fault.is_some(),
                "LOG shows no damaged entry at index {} and the status names no fault: {lines:?}",
                target.index
            );
        }
        Err(e) => assert!(state.fault.is_some(), "LOG failed ({e}) and the status names no fault"),
    }
    match cluster.rows(victim).await {
        Err(ReadError::Refused(ErrorCode::Unavailable { .. })) => {}
        Ok(rows) if state.serving => {
            assert_eq!(rows, before, "a replica with a fault served rows unlike the primary's")
        }
        other => {
            panic!("read from the corrupt replica (serving: {}): expected Unavailable, got {other:?}", state.serving)
        }
    }

    // Election at the next term among the two live replicas (the frozen primary cannot
    // answer): the corrupt one must vote "not electable", so the other one wins.
    let new_term = term + 1;
    let election =
        cluster.elect(new_term, &[1, victim]).await.unwrap_or_else(|e| panic!("election at {new_term}: {e}"));
    eprintln!("election at {new_term}: node {} wins; votes {:?}", election.winner, election.votes);
    let vote =
        election.vote(victim).unwrap_or_else(|| panic!("the corrupt replica did not vote: {:?}", election.votes));
    assert!(!vote.electable, "a replica with a corrupt, unrepaired log voted electable: {vote:?}");
    assert_ne!(election.winner, victim);
    cluster.nodes[primary].cont();
    expect_ok("BecomeFollower on the old primary", cluster.become_follower(primary, new_term, election.winner).await);

    // Told to follow, it repairs and converges.
    let new = election.winner;
    let others: Vec<usize> = (0..3).filter(|&i| i != new).collect();
    let rows = cluster.wait_converged(new, &others, Duration::from_secs(30)).await;
    if let Err(problems) = ledger.check(&rows) {
        panic!("rows after repair break the ledger:\n{problems}");
    }
    assert_eq!(rows, before, "rows after repair differ from the rows before the damage");
    if let Err(problems) = cluster.log_matches(victim, new).await {
        panic!("the repaired log disagrees with the primary's:\n{problems}");
    }
    let state = cluster.state(victim).await.expect("victim status");
    assert!(state.fault.is_none() && state.serving, "after repair: {state:?}");
}
