//! A replica whose log cannot be opened does not keep its node down.
//!
//! A follower holding committed entries is SIGKILLed and its log's `BASE` file (where the
//! log starts) is overwritten with bytes whose checksum fails. Restarted, the node must
//! start and serve (before, it refused to start at all, taking every other shard on it down
//! too), without that replica: its directory is set aside as `<shard>.damaged`, never
//! deleted. Configured again and told to follow, the replica is rebuilt from the primary
//! and holds exactly the primary's rows.

mod harness;

use std::time::Duration;

use harness::cluster::expect_ok;
use harness::segment::log_dir;
use harness::{within, Cluster, Ledger, NodeOpts, SHARD};

const TEST_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_open_is_set_aside_and_rebuilt() {
    let mut cluster = Cluster::start(3, NodeOpts::default()).await;
    within(TEST_TIMEOUT, "damaged BASE", scenario(&mut cluster)).await;
}

async fn scenario(cluster: &mut Cluster) {
    let (primary, term, victim) = (0, 1, 2);
    cluster.setup_shard(primary, term).await;
    let mut ledger = Ledger::new(43);
    for key in 1..=10 {
        let outcome = ledger.write(cluster, primary, &[key]).await;
        assert!(outcome.is_acked(), "key {key}: {outcome}");
    }
    let before = cluster.wait_converged(primary, &[1, victim], Duration::from_secs(20)).await;
    cluster.nodes[victim].kill();
    let data_dir = cluster.nodes[victim].data_dir();
    std::fs::write(log_dir(&data_dir, SHARD).join("BASE"), [0xA5u8; 20]).expect("damaging BASE");

    cluster.restart(victim).await;
    let state = cluster.state(victim).await;
    assert!(state.is_err(), "the damaged replica was opened as if whole: {state:?}");
    let aside = data_dir.join("shards").join(format!("{}.damaged", SHARD.0));
    assert!(aside.join("log").join("BASE").exists(), "the damaged files were not kept at {}", aside.display());

    expect_ok("ConfigureShard again", cluster.configure(victim).await);
    expect_ok("BecomeFollower", cluster.become_follower(victim, term, primary).await);
    let after = cluster.wait_converged(primary, &[victim], Duration::from_secs(30)).await;
    assert_eq!(after, before, "the rebuilt replica holds exactly the primary's rows");
    ledger.check(&after).unwrap_or_else(|e| panic!("{e}"));
}
