//! Crash consistency at the storage seam, in process: a one-replica shard on a simulated
//! disk and table writes batch after batch, and crashes after every number of syncs, with
//! the unsynced tail dropped or torn at every length. On reopen, every acknowledged write
//! is there, no batch is half applied, and the log replays without damage (a torn tail is
//! an interrupted write, not corruption). The failpoints (log-sync, table-commit,
//! term-commit; crash-before, crash-after, tear) kill the replica at exactly one sync, as
//! they abort a real node in the process-level `crash_points` test; here every one of them
//! runs in milliseconds.

use std::sync::Arc;
use std::time::Duration;

use shardline_protocol::{ControlResponse, Operation, Row, Schema, ShardId, ShardSpec, Value};
use shardline_storage_node::disk::{CrashTail, Disk, SimDisk};
use shardline_storage_node::failpoint::{Action, Failpoints, Point};
use shardline_storage_node::replica::{Effect, Replica, ReplicaConfig};
use shardline_storage_node::store::{MemTable, TableStore};

const BATCHES: u64 = 12;
const ROWS_PER_BATCH: i64 = 3;

fn config(incarnation: u64) -> Arc<ReplicaConfig> {
    Arc::new(ReplicaConfig {
        node: "n0".into(),
        addr: "n0".into(),
        write_timeout: Duration::from_secs(2),
        sync_heartbeat: Duration::from_millis(50),
        peer_timeout: Duration::from_millis(500),
        snapshot_lag: 1000,
        log_retain: 4,
        max_payload: shardline_protocol::DEFAULT_MAX_PAYLOAD,
        incarnation,
        snapshot_chunk_bytes: shardline_storage_node::replica::room::SNAPSHOT_CHUNK_BYTES,
        snapshot_rate: 0,
        regressions: Default::default(),
    })
}

fn open(disk: &SimDisk, table: &MemTable, incarnation: u64, fresh: bool) -> Replica<SimDisk, MemTable> {
    open_with(disk, table, incarnation, fresh, &Arc::new(Failpoints::none()))
}

/// Opens the replica as a process with `failpoints` would, and makes it primary.
fn open_with(
    disk: &SimDisk,
    table: &MemTable,
    incarnation: u64,
    fresh: bool,
    failpoints: &Arc<Failpoints>,
) -> Replica<SimDisk, MemTable> {
    let spec = ShardSpec { id: ShardId(1), low: 0, size: 1000 };
    let configure = fresh.then(|| (spec, Schema::seed()));
    let table = table.with_failpoints(failpoints.clone());
    let mut r = Replica::open(config(incarnation), table, disk.clone(), failpoints.clone(), configure)
        .expect("the replica opens");
    assert!(elect(&mut r), "the replica leads");
    r
}

/// Elects the replica at the next term (election query, then `BecomePrimary`); whether
/// both succeeded.
fn elect(r: &mut Replica<SimDisk, MemTable>) -> bool {
    let term = r.state().term + 1;
    let now = Duration::from_millis(1);
    matches!(r.election_query(now, term), ControlResponse::Vote(_))
        && r.become_primary(now, term, vec![], vec![], 60_000) == ControlResponse::Ok
}

fn batch(b: u64) -> Operation {
    let rows = (0..ROWS_PER_BATCH)
        .map(|i| Row::new(b as i64 * 10 + i, vec![Value::Str(format!("b{b}")), Value::Int(b as i64)]))
        .collect();
    Operation::Write { client_id: 7, seq: b, rows }
}

/// The process dies: the disk keeps what was synced (and `tail` of the rest), the table
/// rolls back to its last durable commit. The replica reopens (leading at the next term)
/// without damage (`what` names the case if not); returns its rows.
fn crash_and_reopen(
    r: Replica<SimDisk, MemTable>,
    disk: &SimDisk,
    table: &MemTable,
    tail: CrashTail,
    what: &str,
) -> Vec<Row> {
    drop(r);
    disk.crash(tail);
    table.crash();
    let mut r = open(disk, table, 2, false);
    assert!(r.state().fault.is_none(), "{what}: {:?}", r.state().fault);
    // Committed (with the new term's no-op), applied when the driver asks.
    r.apply_committed();
    r.table().read_range(0, 1000).unwrap()
}

/// The log segments' bytes (as the page cache holds them).
fn log_bytes(disk: &SimDisk) -> usize {
    let segments = disk.list().unwrap().into_iter().filter(|name| name.ends_with(".seg"));
    segments.map(|name| disk.read(&name).unwrap().map_or(0, |d| d.len())).sum()
}

/// Writes batches until `crash_after` of them were submitted; returns the acknowledged ones.
fn run_until_crash(r: &mut Replica<SimDisk, MemTable>, crash_after: u64) -> Vec<u64> {
    let mut acked = Vec::new();
    for b in 1..=crash_after.min(BATCHES) {
        r.write_group(Duration::from_millis(2), vec![(batch(b), b)]);
        for effect in r.effects() {
            if let Effect::WriteDone { token, result: Ok(_) } = effect {
                acked.push(token);
            }
        }
    }
    acked
}

#[test]
fn every_acknowledged_write_survives_a_crash_at_every_point() {
    let mut scenarios = 0;
    for crash_after in 1..=BATCHES {
        for tail in [CrashTail::Drop, CrashTail::Keep(1), CrashTail::Keep(20), CrashTail::Keep(200)] {
            let (disk, table) = (SimDisk::new(), MemTable::new());
            let mut r = open(&disk, &table, 1, true);
            let acked = run_until_crash(&mut r, crash_after);
            assert_eq!(acked.len() as u64, crash_after, "a one-replica shard acks on its own fsync");
            let rows = crash_and_reopen(r, &disk, &table, tail, &format!("crash after {crash_after} ({tail:?})"));
            for b in &acked {
                let present = rows.iter().filter(|row| row.key / 10 == *b as i64).count() as i64;
                assert_eq!(
                    present, ROWS_PER_BATCH,
                    "crash after {crash_after} ({tail:?}): batch {b} has {present} rows"
                );
            }
            for b in 1..=BATCHES {
                let present = rows.iter().filter(|row| row.key / 10 == b as i64).count() as i64;
                assert!(present == 0 || present == ROWS_PER_BATCH, "batch {b} half applied: {present} rows");
            }
            scenarios += 1;
        }
    }
    assert_eq!(scenarios, BATCHES * 4);
}

#[test]
fn a_failed_fsync_never_acknowledges_what_it_lost() {
    let (disk, table) = (SimDisk::new(), MemTable::new());
    let mut r = open(&disk, &table, 1, true);
    let acked = run_until_crash(&mut r, 3);
    disk.fail_syncs(1);
    r.write_group(Duration::from_millis(3), vec![(batch(4), 4)]);
    let answers: Vec<_> = r.effects();
    assert!(
        answers.iter().all(|e| !matches!(e, Effect::WriteDone { result: Ok(_), .. })),
        "a write whose fsync failed was acknowledged: {answers:?}"
    );
    // A later fsync succeeds; what the failed one dropped must not be counted as on disk.
    let rows = crash_and_reopen(r, &disk, &table, CrashTail::Drop, "after a failed fsync");
    for b in &acked {
        assert!(rows.iter().any(|row| row.key / 10 == *b as i64), "acknowledged batch {b} lost");
    }
}

/// Every failpoint, as the process test arms them, on a one-replica shard (its own
/// majority): it takes batches, re-elected at the next term every 2, until the failpoint
/// kills it. The step it died in is lost (nothing it produced is acknowledged), the storage
/// crashes keeping what was synced, and the replica reopens unarmed. Every acknowledged
/// batch is there, none in part, and the batch it died writing is there exactly when its
/// log sync completed before the death (crash-after on log-sync; any table-commit).
#[test]
fn every_failpoint_kills_a_one_replica_shard_at_exactly_its_sync() {
    let mut fired = 0;
    for point in Point::ALL {
        for action in Action::ALL {
            for hit in 1..=6 {
                let what = format!("{point}:{action}@{hit}");
                let (disk, table) = (SimDisk::new(), MemTable::new());
                let failpoints = Arc::new(Failpoints::simulated());
                let mut r = open_with(&disk, &table, 1, true, &failpoints);
                failpoints.arm(point, action, hit);
                let mut acked = Vec::new();
                let mut died_writing = None;
                let mut logged = 0;
                for b in 1..=BATCHES {
                    // A death in the election (its term, or its no-op's sync or apply) is no
                    // batch's: whatever the election answered, the process is gone.
                    if b % 2 == 0 && (!elect(&mut r) || failpoints.fired().is_some()) {
                        break;
                    }
                    logged = log_bytes(&disk);
                    r.write_group(Duration::from_millis(2), vec![(batch(b), b)]);
                    let effects = r.effects();
                    if failpoints.fired().is_some() {
                        died_writing = Some(b);
                        break;
                    }
                    acked.extend(effects.iter().filter_map(|e| match e {
                        Effect::WriteDone { token, result: Ok(_) } => Some(*token),
                        _ => None,
                    }));
                }
                assert!(failpoints.fired().is_some(), "{what}: never fired");
                fired += 1;
                if let (Some(_), Point::LogSync) = (died_writing, point) {
                    // What the death left on the disk: nothing of the batch before the sync,
                    // all of it after, a torn part of it with `tear` (replay cuts that off).
                    disk.crash(CrashTail::Drop);
                    let grew = log_bytes(&disk) - logged;
                    assert_eq!(grew > 0, action != Action::CrashBefore, "{what}: {grew} bytes of the batch kept");
                }
                let rows = crash_and_reopen(r, &disk, &table, CrashTail::Drop, &what);
                let present = |b: u64| rows.iter().filter(|row| row.key / 10 == b as i64).count() as i64;
                for b in 1..=BATCHES {
                    let n = present(b);
                    assert!(n == 0 || n == ROWS_PER_BATCH, "{what}: batch {b} half applied: {n} rows");
                    assert!(!acked.contains(&b) || n == ROWS_PER_BATCH, "{what}: acknowledged batch {b} lost");
                }
                if let Some(b) = died_writing {
                    let synced = point == Point::TableCommit || (point, action) == (Point::LogSync, Action::CrashAfter);
                    assert_eq!(present(b) == ROWS_PER_BATCH, synced, "{what}: the batch it died writing");
                }
            }
        }
    }
    assert_eq!(fired, 3 * 3 * 6);
}
