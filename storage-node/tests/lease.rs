//! A primary whose lease runs out stops taking writes and linearizable reads (answering
//! `LeaseExpired`, before logging) until a coordinator heartbeat renews the lease.
//!
//! The primary leads with a 400 ms lease and is not renewed: a write is acknowledged at
//! first, then writes and `primary: true` reads are refused with `LeaseExpired`. A
//! `Heartbeat` renews the lease and writes are acknowledged again. Refused writes are never
//! applied; the replicas converge on the acknowledged ones.

mod harness;

use std::time::Duration;

use harness::cluster::shard_spec;
use harness::{within, Budget, Cluster, Ledger, NodeOpts, SHARD};
use shardline_protocol::{ControlRequest, ControlResponse, ErrorCode, LeaseGrant, Request, Response, Route};

const TEST_TIMEOUT: Duration = Duration::from_secs(60);
const SHORT_LEASE_MS: u64 = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_stops_writes_until_renewed() {
    let mut cluster = Cluster::start(3, NodeOpts::default()).await;
    within(TEST_TIMEOUT, "lease", scenario(&mut cluster)).await;
}

async fn scenario(cluster: &mut Cluster) {
    let (primary, term) = (0, 1);
    cluster.setup_shard_with_lease(primary, term, SHORT_LEASE_MS).await;
    let mut ledger = Ledger::new(71);
    let outcome = ledger.write(cluster, primary, &[1]).await;
    assert!(outcome.is_acked(), "write inside the lease: {outcome}");

    // No renewal: within a few lease lengths writes must be refused with LeaseExpired.
    let mut budget = Budget::every("lease expiry", Duration::from_secs(5), Duration::from_millis(100));
    let mut key = 2;
    loop {
        let outcome = ledger.write(cluster, primary, &[key]).await;
        key += 1;
        if outcome.refusal() == Some("LeaseExpired") {
            break;
        }
        if !budget.retry().await {
            panic!("{}: last write {outcome}", budget.spent());
        }
    }
    let linearizable = Request::Read {
        low: 0,
        high: shard_spec().high().expect("non-empty"),
        consistency: shardline_protocol::Consistency::Primary,
    };
    match cluster.request(primary, &linearizable, Some(Route::Shard(SHARD.0))).await {
        Ok(Response::Error(ErrorCode::LeaseExpired { .. })) => {}
        other => {
            panic!("linearizable read with an expired lease: expected LeaseExpired, got {other:?}")
        }
    }

    // A grant renews the lease, counted from when the node handled the heartbeat it names.
    let beat = ControlRequest::Heartbeat { seq: 1, lease_ms: 60_000, grant: None };
    match cluster.control(primary, beat).await {
        Ok(ControlResponse::Status(status)) => eprintln!("heartbeat answered {status:?}"),
        other => panic!("Heartbeat: expected Status, got {other:?}"),
    }
    let outcome = ledger.write(cluster, primary, &[999]).await;
    assert_eq!(outcome.refusal(), Some("LeaseExpired"), "a heartbeat without a grant renews nothing: {outcome}");
    // A grant for another term renews nothing either.
    let stale = LeaseGrant { seq: 1, shards: vec![(SHARD, term + 1)] };
    let beat = ControlRequest::Heartbeat { seq: 2, lease_ms: 60_000, grant: Some(stale) };
    assert!(matches!(cluster.control(primary, beat).await, Ok(ControlResponse::Status(_))));
    let outcome = ledger.write(cluster, primary, &[998]).await;
    assert_eq!(outcome.refusal(), Some("LeaseExpired"), "a grant for another term renews nothing: {outcome}");
    let grant = LeaseGrant { seq: 2, shards: vec![(SHARD, term)] };
    let beat = ControlRequest::Heartbeat { seq: 3, lease_ms: 60_000, grant: Some(grant) };
    assert!(matches!(cluster.control(primary, beat).await, Ok(ControlResponse::Status(_))));
    let outcome = ledger.write(cluster, primary, &[1000]).await;
    assert!(outcome.is_acked(), "write after the lease was renewed: {outcome}");
    match cluster.request(primary, &linearizable, Some(Route::Shard(SHARD.0))).await {
        Ok(Response::Rows { rows, .. }) => {
            assert!(
                rows.iter().any(|r| r.key == 1000),
                "linearizable read misses the write just acknowledged: {rows:?}"
            )
        }
        other => panic!("linearizable read with a renewed lease: {other:?}"),
    }

    let rows = cluster.wait_converged(primary, &[1, 2], Duration::from_secs(20)).await;
    if let Err(problems) = ledger.check(&rows) {
        panic!("rows break the ledger:\n{problems}");
    }
    let (acked, failed, unknown) = ledger.tally();
    eprintln!("lease: {acked} acked, {failed} refused, {unknown} indeterminate");
}
