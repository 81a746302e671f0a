//! Crash consistency at the storage seam, in process: a one-replica shard on a simulated
//! disk and table writes batch after batch, and crashes after every number of syncs, with
//! the unsynced tail dropped or torn at every length. On reopen, every acknowledged write
//! is there, no batch is half applied, and the log replays without damage (a torn tail is
//! an interrupted write, not corruption). The process-level `crash_points` test covers the
//! same at real fsyncs with failpoints; this one runs every crash point in milliseconds.

use std::sync::Arc;
use std::time::Duration;

use shardline_protocol::{ControlResponse, Operation, Row, Schema, ShardId, ShardSpec, Value};
use shardline_storage_node::disk::{CrashTail, SimDisk};
use shardline_storage_node::failpoint::Failpoints;
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
        regressions: Default::default(),
    })
}

fn open(disk: &SimDisk, table: &MemTable, incarnation: u64, fresh: bool) -> Replica<SimDisk, MemTable> {
    let spec = ShardSpec { id: ShardId(1), low: 0, size: 1000 };
    let configure = fresh.then(|| (spec, Schema::seed()));
    let mut r =
        Replica::open(config(incarnation), table.clone(), disk.clone(), Arc::new(Failpoints::none()), configure)
            .expect("the replica opens");
    let term = r.state().term + 1;
    let now = Duration::from_millis(1);
    assert!(matches!(r.election_query(now, term), ControlResponse::Vote(_)));
    assert_eq!(r.become_primary(now, term, vec![], vec![], 60_000), ControlResponse::Ok);
    r
}

fn batch(b: u64) -> Operation {
    let rows = (0..ROWS_PER_BATCH)
        .map(|i| Row::new(b as i64 * 10 + i, vec![Value::Str(format!("b{b}")), Value::Int(b as i64)]))
        .collect();
    Operation::Write { client_id: 7, seq: b, rows }
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
            drop(r);
            disk.crash(tail);
            table.crash();
            let r = open(&disk, &table, 2, false);
            let state = r.state();
            assert!(state.fault.is_none(), "crash after {crash_after} ({tail:?}): {:?}", state.fault);
            let rows = r.table().read_range(0, 1000).unwrap();
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
    drop(r);
    disk.crash(CrashTail::Drop);
    table.crash();
    let r = open(&disk, &table, 2, false);
    assert!(r.state().fault.is_none(), "{:?}", r.state().fault);
    let rows = r.table().read_range(0, 1000).unwrap();
    for b in &acked {
        assert!(rows.iter().any(|row| row.key / 10 == *b as i64), "acknowledged batch {b} lost");
    }
}
