//! `session` reads never go back in time across a failover. One client writes sh1's keys
//! and, after each acknowledged write, reads sh1 at `session` (served by any replica that
//! has applied the client's token, else the primary): every read holds every key the client
//! wrote before it (read-your-writes) and every key its earlier reads held (monotonic
//! reads). A second client only reads at `session`, and its reads never lose a key either.
//! Meanwhile sh1's primary is SIGKILLed, so reads before and after run under two terms.

mod harness;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{poll, row, signal, Up};
use shardline::{Client, ShardId};
use shardline_protocol::Consistency;
use tokio::task::JoinHandle;

/// sh1's keys, as the seed lays them out.
const SH1: std::ops::RangeInclusive<i64> = 0..=4095;
/// The writer stops after this many writes at most.
const MAX_WRITES: i64 = 3_000;
/// Each task stops after this long at most.
const MAX_RUN: Duration = Duration::from_secs(120);

fn session() -> Consistency {
    Consistency::Session { positions: Vec::new() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_reads_never_go_back_in_time_across_a_failover() {
    let up = Up::start().await;
    tokio::time::timeout(Duration::from_secs(240), scenario(&up)).await.expect("the scenario finishes within 240 s");
}

/// What one client's reads saw.
#[derive(Debug, Default)]
struct Seen {
    reads: u64,
    /// Reads that failed (an error is not a read that went back in time; counted).
    failed: u64,
    /// The terms sh1 was read at.
    terms: BTreeSet<u64>,
}

async fn scenario(up: &Up) {
    let writer = up.client().await;
    let t = writer.status().await.expect("status");
    let sh1 = t.shards.iter().find(|s| s.spec.id == ShardId(1)).expect("sh1");
    let old_primary = sh1.primary.clone().expect("sh1 has a primary");
    let node = Client::connect(t.server(&old_primary).expect("its address").addr.clone()).await.expect("node");
    let pid = harness::stats_pid(&node).await;
    drop(node);

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writing = tokio::spawn(write_and_read_back(writer.clone(), stop.clone(), acked.clone()));
    let reading = tokio::spawn(read_only(up.client().await, stop.clone()));

    let mut tasks = [writing, reading];
    until_acked(100, &acked, &mut tasks).await;
    signal(pid, libc::SIGKILL);
    let at_kill = acked.load(Ordering::Relaxed);
    poll("a new primary for sh1", Duration::from_secs(30), || async {
        let t = writer.status().await.ok()?;
        let s = t.shards.iter().find(|s| s.spec.id == ShardId(1))?;
        s.primary.as_deref().is_some_and(|p| p != old_primary).then_some(())
    })
    .await;
    until_acked(at_kill + 200, &acked, &mut tasks).await;
    stop.store(true, Ordering::Relaxed);
    let [writing, reading] = tasks;
    let wrote = writing.await.expect("writer task").unwrap_or_else(|e| panic!("the writer: {e}"));
    let read = reading.await.expect("reader task").unwrap_or_else(|e| panic!("the reader: {e}"));
    eprintln!("writer: {} writes acknowledged, {:?}; reader: {read:?}", acked.load(Ordering::Relaxed), wrote);
    for (who, seen) in [("the writer", &wrote), ("the reader", &read)] {
        assert!(
            seen.terms.len() >= 2,
            "{who} read sh1 under one term only ({:?}): not across the failover",
            seen.terms
        );
    }
}

/// Waits until `target` writes are acknowledged; a task that ends first (a read that went
/// back in time) fails the test with its finding.
async fn until_acked(target: u64, acked: &AtomicU64, tasks: &mut [JoinHandle<Result<Seen, String>>; 2]) {
    let what = format!("{target} writes acknowledged");
    poll(&what, Duration::from_secs(60), || async {
        (acked.load(Ordering::Relaxed) >= target || tasks.iter().any(JoinHandle::is_finished)).then_some(())
    })
    .await;
    for (task, who) in tasks.iter_mut().zip(["the writer", "the reader"]) {
        if task.is_finished() {
            match task.await.expect("task") {
                Err(finding) => panic!("{who}: {finding}"),
                Ok(seen) => panic!("{who} stopped early: {seen:?}"),
            }
        }
    }
}

/// Writes key after key of sh1; after each acknowledgement, reads sh1 at `session`.
async fn write_and_read_back(c: Client, stop: Arc<AtomicBool>, acked: Arc<AtomicU64>) -> Result<Seen, String> {
    let (mut written, mut unknown, mut last) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let mut seen = Seen::default();
    let started = Instant::now();
    for key in 0..MAX_WRITES {
        if stop.load(Ordering::Relaxed) || started.elapsed() > MAX_RUN {
            break;
        }
        match c.write(&[row(key)]).await {
            Ok(_) => {
                written.insert(key);
                acked.fetch_add(1, Ordering::Relaxed);
            }
            // Counted as of unknown fate (even where the error says it was refused): a
            // read may or may not hold it.
            Err(_) => {
                unknown.insert(key);
            }
        }
        let Some(keys) = session_read(&c, &mut seen).await else { continue };
        if let Some(missing) = written.iter().find(|k| !keys.contains(k)) {
            return Err(format!("read #{} lacks key {missing}, acknowledged before it", seen.reads));
        }
        if let Some(gone) = last.iter().find(|k| !keys.contains(k)) {
            return Err(format!("read #{} lacks key {gone}, which an earlier read held", seen.reads));
        }
        if let Some(stranger) = keys.iter().find(|k| !written.contains(k) && !unknown.contains(k)) {
            return Err(format!("read #{} holds key {stranger}, never written", seen.reads));
        }
        last = keys;
    }
    Ok(seen)
}

/// Reads sh1 at `session` until stopped; no read may lack a key an earlier one held.
async fn read_only(c: Client, stop: Arc<AtomicBool>) -> Result<Seen, String> {
    let mut last = BTreeSet::new();
    let mut seen = Seen::default();
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_RUN {
        let Some(keys) = session_read(&c, &mut seen).await else { continue };
        if let Some(gone) = last.iter().find(|k| !keys.contains(k)) {
            return Err(format!("read #{} lacks key {gone}, which an earlier read held", seen.reads));
        }
        last = keys;
    }
    Ok(seen)
}

/// One `session` read of sh1: its keys, or `None` if it failed (counted).
async fn session_read(c: &Client, seen: &mut Seen) -> Option<BTreeSet<i64>> {
    match c.read_positioned(SH1, &session()).await {
        Ok((rows, at)) => {
            seen.reads += 1;
            seen.terms.extend(at.iter().filter(|p| p.shard == ShardId(1)).map(|p| p.term));
            Some(rows.iter().map(|r| r.key).collect())
        }
        Err(_) => {
            seen.failed += 1;
            None
        }
    }
}
