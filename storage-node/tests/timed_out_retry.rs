//! Issue 11, scenario 5: a retry of a write that was logged but not committed is never
//! answered with a definite refusal, because that write can still commit (and here does).
//!
//! Staged with processes: three nodes, node 0 primary at term 1 on a short lease (1.5 s)
//! that the test renews with coordinator heartbeats when it needs one. Both followers are
//! frozen (SIGSTOP, checked in `/proc`) and a write W is sent at once: the primary logs it
//! before it can tell the followers are gone, and answers `Timeout` after its 2 s write
//! timeout (the test checks in `LOG` that W's entry is on the primary, uncommitted; if the
//! primary refused W before logging it, a loaded machine was too slow and the staging is
//! tried again). Then, with the followers still frozen, the same (client, seq) is retried
//! to the same primary twice:
//! - while the lease holds: a fresh write sent just before is refused `NoQuorum`;
//! - once the lease has run out: a fresh write sent just before is refused `LeaseExpired`.
//!
//! Both are definite refusals in the README's table, so each retry of W must be answered
//! `Timeout` (indeterminate) instead. The followers are then resumed: W commits and is
//! applied without being sent again, which is what made a definite answer false. After a
//! lease renewal a third retry is answered `Committed` at W's original log index, the
//! replicas converge, and no write refused definitely is present.

mod harness;

use std::time::Duration;

use harness::{classify, row_for, within, Budget, Cluster, Ledger, NodeOpts, Outcome, SHARD};
use shardline_protocol::{
    ControlRequest, ControlResponse, ErrorCode, LeaseGrant, LogLine, Request, Response, WriteBatch,
};

const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Short enough to run out within the test, long enough for a few immediate answers.
const SHORT_LEASE_MS: u64 = 1500;
/// The client id of the staged write W (the ledger's own writes use another).
const W_CLIENT: u64 = 5_500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_a_logged_write_is_never_refused_definitely() {
    let mut cluster = Cluster::start(3, NodeOpts::default()).await;
    within(TEST_TIMEOUT, "timed_out_retry", scenario(&mut cluster)).await;
}

/// The coordinator's lease grants, played by the test.
struct Beats {
    next: u64,
}

impl Beats {
    /// Renews the primary's lease at `term`: a heartbeat, then a second one whose grant
    /// counts the lease from when the node handled the first.
    async fn renew(&mut self, cluster: &Cluster, primary: usize, term: u64) {
        let first = self.next;
        self.next += 2;
        for (seq, grant) in [(first, None), (first + 1, Some(LeaseGrant { seq: first, shards: vec![(SHARD, term)] }))] {
            let beat = ControlRequest::Heartbeat { seq, lease_ms: SHORT_LEASE_MS, grant };
            match cluster.control(primary, beat).await {
                Ok(ControlResponse::Status(_)) => {}
                other => panic!("Heartbeat {seq}: expected Status, got {other:?}"),
            }
        }
    }
}

/// W's insert of `key` as (`W_CLIENT`, `seq`): the same request on every attempt.
fn w_request(seq: u64, key: i64) -> Request {
    Request::Write(WriteBatch::encode(W_CLIENT, seq, &[row_for(key)]).expect("encodable batch"))
}

async fn scenario(cluster: &mut Cluster) {
    let (primary, term) = (0, 1);
    cluster.setup_shard_with_lease(primary, term, SHORT_LEASE_MS).await;
    let mut beats = Beats { next: 1 };
    let mut ledger = Ledger::new(55);
    beats.renew(cluster, primary, term).await;
    for key in 1..=5 {
        let outcome = ledger.write(cluster, primary, &[key]).await;
        assert!(outcome.is_acked(), "key {key} with every replica up: {outcome}");
    }

    let (w_seq, w_key, w_line) = stage_logged_write(cluster, &mut ledger, &mut beats, primary, term).await;
    eprintln!("W (client {W_CLIENT}, seq {w_seq}, key {w_key}) is logged, uncommitted: {w_line:?}");

    // The lease holds, the followers are silent: fresh writes are refused NoQuorum, the
    // retry of W must not be.
    beats.renew(cluster, primary, term).await;
    let before = fresh_write(cluster, &mut ledger, primary, 600).await;
    let retry = cluster.request(primary, &w_request(w_seq, w_key), None).await;
    let after = fresh_write(cluster, &mut ledger, primary, 601).await;
    eprintln!("no quorum: fresh write before: {before}; retry of W: {retry:?}; fresh write after: {after}");
    assert_eq!(before.refusal(), Some("NoQuorum"), "the primary was not refusing for want of a quorum: {before}");
    expect_timeout("retry of W while the primary refuses NoQuorum", &retry);
    ledger.record(&[w_key], primary, classify(retry), false);

    // The lease runs out (no renewal): fresh writes are refused LeaseExpired, the retry of W
    // must not be.
    let mut budget = Budget::every("lease expiry", Duration::from_secs(10), Duration::from_millis(100));
    let mut key = 700;
    loop {
        let outcome = fresh_write(cluster, &mut ledger, primary, key).await;
        key += 1;
        if outcome.refusal() == Some("LeaseExpired") {
            break;
        }
        if !budget.retry().await {
            panic!("{}: last fresh write {outcome}", budget.spent());
        }
    }
    let retry = cluster.request(primary, &w_request(w_seq, w_key), None).await;
    let after = fresh_write(cluster, &mut ledger, primary, key).await;
    eprintln!("lease expired: retry of W: {retry:?}; fresh write after: {after}");
    expect_timeout("retry of W while the primary refuses LeaseExpired", &retry);
    ledger.record(&[w_key], primary, classify(retry), false);

    // The followers come back: W commits without being sent again.
    for f in [1, 2] {
        cluster.nodes[f].cont();
    }
    let mut budget = Budget::new("W committing once the followers are back", Duration::from_secs(20));
    loop {
        let line = cluster.log(primary, 1000).await.ok().and_then(|lines| find(&lines, w_line.index).cloned());
        let why = match (line, cluster.rows(primary).await) {
            (Some(line), Ok(rows)) if line.committed && rows.iter().any(|r| r.key == w_key) => break,
            (line, rows) => format!(
                "W's entry {line:?}, key {w_key} in the table: {:?}",
                rows.map(|r| r.iter().any(|r| r.key == w_key))
            ),
        };
        if !budget.retry().await {
            panic!("{}: {why}", budget.spent());
        }
    }
    eprintln!("W committed at index {} after the followers resumed", w_line.index);

    // With a lease again, the retry is answered as the write's success, at W's entry.
    beats.renew(cluster, primary, term).await;
    let retry = classify(cluster.request(primary, &w_request(w_seq, w_key), None).await);
    let commit = retry.commit().unwrap_or_else(|| panic!("retry of W after it committed: {retry}"));
    assert_eq!((commit.term, commit.index), (w_line.term, w_line.index), "retry of W answered at another entry");
    ledger.record(&[w_key], primary, retry, false);
    let outcome = ledger.write(cluster, primary, &[800]).await;
    assert!(outcome.is_acked(), "a fresh write once the followers are back: {outcome}");

    let rows = cluster.wait_converged(primary, &[1, 2], Duration::from_secs(20)).await;
    if let Err(problems) = ledger.check(&rows) {
        panic!("rows after the followers returned break the ledger:\n{problems}");
    }
    for f in [1, 2] {
        if let Err(problems) = cluster.log_matches(f, primary).await {
            panic!("node {f}'s log disagrees with the primary's:\n{problems}");
        }
    }
    let (acked, failed, unknown) = ledger.tally();
    eprintln!("timed_out_retry: {acked} acked, {failed} refused, {unknown} indeterminate");
}

/// Freezes both followers and sends W at once, so that the primary logs it and times out.
/// Returns W's (seq, key) and its uncommitted entry in the primary's log. A write refused
/// before logging (the primary already knew the followers were gone) means this machine
/// was too slow for the staging: the followers are resumed and it is tried again.
async fn stage_logged_write(
    cluster: &mut Cluster,
    ledger: &mut Ledger,
    beats: &mut Beats,
    primary: usize,
    term: u64,
) -> (u64, i64, LogLine) {
    for attempt in 0..3u64 {
        let (seq, key) = (attempt + 1, 100 + attempt as i64);
        beats.renew(cluster, primary, term).await;
        for f in [1, 2] {
            cluster.nodes[f].stop().await;
        }
        let outcome = classify(cluster.request(primary, &w_request(seq, key), None).await);
        eprintln!("staging attempt {attempt}: W (seq {seq}, key {key}) with both followers frozen: {outcome}");
        assert!(!outcome.is_acked(), "W acknowledged with both followers frozen: {outcome}");
        ledger.record(&[key], primary, outcome.clone(), false);
        let lines = cluster.log(primary, 1000).await.unwrap_or_else(|e| panic!("primary's LOG: {e}"));
        let logged = lines.iter().rev().find(|l| l.summary == format!("write key {key}")).cloned();
        match (&outcome, logged) {
            (Outcome::Indeterminate(why), Some(line)) if why.starts_with("Timeout") && !line.committed => {
                return (seq, key, line);
            }
            (Outcome::Refused(_), None) => {
                eprintln!("W was refused before it was logged: resuming the followers and staging again");
                for f in [1, 2] {
                    cluster.nodes[f].cont();
                }
                cluster.wait_converged(primary, &[1, 2], Duration::from_secs(20)).await;
            }
            (outcome, line) => panic!("W answered {outcome} with its entry in the primary's log {line:?}"),
        }
    }
    panic!("three attempts to get W logged but not committed all failed");
}

/// A new write of `key` (never a retry) to `node`, recorded in the ledger.
async fn fresh_write(cluster: &Cluster, ledger: &mut Ledger, node: usize, key: i64) -> Outcome {
    let outcome = ledger.write(cluster, node, &[key]).await;
    assert!(!outcome.is_acked(), "key {key} acknowledged with both followers frozen: {outcome}");
    outcome
}

/// Panics unless `answer` is the indeterminate `Timeout`.
fn expect_timeout(what: &str, answer: &Result<Response, harness::CallError>) {
    match answer {
        Ok(Response::Error(ErrorCode::Timeout(_))) => {}
        Ok(Response::Error(code)) => panic!(
            "{what}: answered {} ({code}), a definite refusal, for a write that is logged and may commit",
            code.name()
        ),
        other => panic!("{what}: expected Timeout, got {other:?}"),
    }
}

/// The line for log index `index`.
fn find(lines: &[LogLine], index: u64) -> Option<&LogLine> {
    lines.iter().find(|l| l.index == index)
}
