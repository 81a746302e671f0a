//! Crash consistency at real fsyncs, with the real abort: a node started with
//! `SHARDLINE_FAILPOINT` dies at exactly one sync; after a restart every acknowledged batch
//! is there in full and no batch is there in part.
//!
//! Two cases keep the process path tested (the environment variable, `abort()`, redb and
//! the segment files recovering from it): `log-sync:tear@3` (half a log write reaches the
//! disk) and `table-commit:crash-after@2` (a table transaction commits, then the node
//! dies). The whole grid (every point × action × hit) runs in the simulator, where a
//! failpoint kills a simulated node at the same sync in milliseconds:
//! `sim/tests/failpoints.rs`, and in process on one replica `tests/sim_crash.rs`.
//!
//! In each case a single-replica shard (its own majority) runs on a node started with the
//! failpoint, taking batches of 5 rows until the node aborts or 20 batches are
//! acknowledged; every 5 batches it is re-elected at the next term (election query, then
//! `BecomePrimary`), so terms are persisted mid-run too. The node restarts without the
//! failpoint on the same data dir and leads at a higher term. Then: acknowledged batches
//! are all present, refused ones absent, indeterminate ones all-or-nothing, the log's CRCs
//! are good, the shard serves and takes writes. The failpoint must fire (otherwise the
//! test could not fail).

mod harness;

use std::fmt;
use std::process::ExitStatus;
use std::time::Duration;

use harness::{Budget, Cluster, Ledger, NodeOpts, LEASE_MS};
use shardline_protocol::{ControlResponse, ReplicaRole};

/// A re-election at the next term every this many batches.
const ELECT_EVERY: i64 = 5;
const BATCHES: i64 = 20;
const BATCH_ROWS: i64 = 5;
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(45);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_log_sync_loses_nothing_acknowledged() {
    run_case("log-sync:tear@3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_table_commit_loses_nothing_acknowledged() {
    run_case("table-commit:crash-after@2").await;
}

/// What one scenario saw.
struct Report {
    failpoint: String,
    /// Where the node died, if it did.
    died: Option<String>,
    exit: Option<ExitStatus>,
    /// Batches acked, refused, indeterminate before the crash.
    tally: (usize, usize, usize),
    rows_after: usize,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (acked, failed, unknown) = self.tally;
        write!(
            f,
            "{:<28} {:<60} batches acked {acked:>2}, refused {failed}, indeterminate {unknown}; rows after restart {}",
            self.failpoint,
            match (&self.died, &self.exit) {
                (Some(at), exit) => format!("died at {at} ({exit:?})"),
                (None, _) => "never fired".to_owned(),
            },
            self.rows_after
        )
    }
}

/// Runs one failpoint on a fresh node; fails if an invariant broke or the node never died.
async fn run_case(failpoint: &str) {
    let mut cluster = Cluster::start_with_env(1, NodeOpts::default(), &[("SHARDLINE_FAILPOINT", failpoint)]).await;
    let result = match tokio::time::timeout(SCENARIO_TIMEOUT, scenario(&mut cluster, failpoint)).await {
        Ok(result) => result,
        Err(_) => Err(format!("did not finish within {SCENARIO_TIMEOUT:?}")),
    };
    match result {
        Ok(report) => {
            eprintln!("{report}");
            assert!(report.died.is_some(), "{failpoint}: the failpoint never fired (the node never died)");
        }
        Err(e) => panic!("{failpoint}: {e}\n{}", cluster.stderr_tails(25)),
    }
}

async fn scenario(cluster: &mut Cluster, failpoint: &str) -> Result<Report, String> {
    let mut ledger = Ledger::new(51);
    let mut died = None;

    // With the failpoint armed: set up, then write until the node dies or 20 batches land.
    if let Err(e) = lead(cluster, 1).await {
        if !has_died(cluster).await {
            return Err(format!("setup failed with the node alive: {e}"));
        }
        died = Some(format!("setup ({e})"));
    }
    if died.is_none() {
        let mut term = 1;
        for b in 0..BATCHES {
            if b > 0 && b % ELECT_EVERY == 0 {
                term += 1;
                if let Err(e) = cluster.elect(term, &[0]).await {
                    if !has_died(cluster).await {
                        return Err(format!("re-election at {term} failed with the node alive: {e}"));
                    }
                    died = Some(format!("re-election at {term} ({e})"));
                    break;
                }
            }
            let keys: Vec<i64> = (0..BATCH_ROWS).map(|j| b * 10 + j + 1).collect();
            let outcome = ledger.write(cluster, 0, &keys).await;
            if outcome.is_acked() {
                continue;
            }
            if !has_died(cluster).await {
                return Err(format!("batch {b} not acknowledged with the node alive: {outcome}"));
            }
            died = Some(format!("batch {b} ({outcome})"));
            break;
        }
    }
    let exit = cluster.nodes[0].exit_status();
    let tally = ledger.tally();

    // Restart without the failpoint and lead at a higher term.
    cluster.nodes[0].restart(&[]).map_err(|e| format!("respawn: {e}"))?;
    cluster.nodes[0].wait_ready().await?;
    match cluster.configure(0).await {
        Ok(ControlResponse::Ok) => {}
        other => return Err(format!("ConfigureShard after restart: {other:?}")),
    }
    let term = cluster.state(0).await?.term + 1;
    lead(cluster, term).await.map_err(|e| format!("after restart: {e}"))?;

    let rows = serving_rows(cluster).await?;
    ledger.check(&rows).map_err(|problems| format!("after restart:\n{problems}"))?;
    let state = cluster.state(0).await?;
    if state.fault.is_some() || !state.serving || state.role != ReplicaRole::Primary {
        return Err(format!("after restart the shard is not a healthy primary: {state:?}"));
    }
    let bad: Vec<_> = cluster.log(0, 10_000).await?.into_iter().filter(|l| !l.crc_ok).collect();
    if !bad.is_empty() {
        return Err(format!("after restart the log holds damaged entries: {bad:?}"));
    }
    let outcome = ledger.write(cluster, 0, &[4000]).await;
    if !outcome.is_acked() {
        return Err(format!("write after restart: {outcome}"));
    }
    let rows_after = rows.len();
    let rows = serving_rows(cluster).await?;
    ledger.check(&rows).map_err(|problems| format!("after the last write:\n{problems}"))?;

    Ok(Report { failpoint: failpoint.to_owned(), died, exit, tally, rows_after })
}

/// Configures shard 1 and makes the single node its primary at `term`, no followers.
async fn lead(cluster: &Cluster, term: u64) -> Result<(), String> {
    match cluster.configure(0).await {
        Ok(ControlResponse::Ok) => {}
        other => return Err(format!("ConfigureShard: {other:?}")),
    }
    match cluster.become_primary(0, term, LEASE_MS).await {
        Ok(ControlResponse::Ok) => Ok(()),
        other => Err(format!("BecomePrimary at {term}: {other:?}")),
    }
}

/// Whether the node has exited (waiting briefly: an abort may lag its last answer).
async fn has_died(cluster: &mut Cluster) -> bool {
    cluster.nodes[0].wait_exit(Duration::from_secs(3)).await
}

/// Polls until the restarted primary serves its rows.
async fn serving_rows(cluster: &Cluster) -> Result<Vec<shardline_protocol::Row>, String> {
    let mut budget = Budget::new("rows after restart", Duration::from_secs(15));
    loop {
        let why = match cluster.rows(0).await {
            Ok(rows) => return Ok(rows),
            Err(e) => format!("{e:?}"),
        };
        if !budget.retry().await {
            return Err(format!("{}: {why}", budget.spent()));
        }
    }
}
