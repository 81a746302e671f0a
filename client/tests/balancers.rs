//! `shardline up --balancers 2`, and a client given both: one balancer is SIGKILLed while
//! clients write through it; the client moves to the other with no error, and every
//! acknowledged write is readable exactly once (a write in flight at the killed balancer
//! is sent again with the same client id and sequence, so it applies once).

mod harness;

use std::time::{Duration, Instant};

use harness::writers::{assert_rows_are, Writers};
use harness::{poll, signal, Up};
use shardline::Client;

/// Concurrent writers; writer `w` writes keys `w, w + WRITERS, ...` (all in sh1).
const WRITERS: i64 = 4;
/// Each writer stops after this many writes at most.
const MAX_WRITES: i64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_moves_to_the_other_balancer_when_one_is_killed() {
    let up = Up::start_with(&["--balancers", "2"]).await;
    tokio::time::timeout(Duration::from_secs(120), scenario(&up)).await.expect("the scenario finishes within 120 s");
}

async fn scenario(up: &Up) {
    let (first, second) = (up.addr(), format!("127.0.0.1:{}", up.balancer_port + 1));
    let stats = Client::connect(second.clone()).await.expect("the second balancer answers").stats().await.unwrap();
    assert!(stats.iter().any(|(k, v)| k == "role" && v == "balancer"), "{stats:?}");
    let c = Client::connect(format!("{first},{second}")).await.unwrap();
    assert_eq!(c.addr(), first, "the first balancer is used first");
    let pid = harness::stats_pid(&c).await;

    let writers = Writers::start(&c, WRITERS, MAX_WRITES);
    poll("100 writes acknowledged", Duration::from_secs(30), || async { (writers.acked() >= 100).then_some(()) }).await;
    signal(pid, libc::SIGKILL);
    let killed = Instant::now();
    let at_kill = writers.acked();
    poll("300 writes after the kill", Duration::from_secs(30), || async {
        (writers.acked() >= at_kill + 300).then_some(())
    })
    .await;
    let moved_after = killed.elapsed();
    assert_eq!(c.addr(), second, "the client moved to the second balancer");
    let written = writers.stop("the balancer's death").await;
    eprintln!(
        "balancer failover: {} writes acknowledged, {} after the kill ({moved_after:?} for 300 of them), none lost or doubled",
        written.len(),
        written.len() as u64 - at_kill
    );
    assert_rows_are(&c, &written).await;
}
