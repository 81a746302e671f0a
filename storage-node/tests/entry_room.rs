//! Rows near the frame limit, in process: a write whose log entry could not travel to a
//! follower in one append is refused `TooLarge` before it is logged (so replication never
//! stalls on an append that cannot be sent), and one just under the limit is logged and
//! sent in an append that fits a frame.

use std::sync::Arc;
use std::time::Duration;

use shardline_protocol::{ControlResponse, ErrorCode, Message, Operation, Row, Schema, ServerAddr, ShardId, ShardSpec};
use shardline_protocol::{LogPosition, PeerRequest, PeerResponse, Value};
use shardline_storage_node::disk::SimDisk;
use shardline_storage_node::failpoint::Failpoints;
use shardline_storage_node::replica::room::Room;
use shardline_storage_node::replica::{Effect, Replica, ReplicaConfig};
use shardline_storage_node::store::MemTable;

const MAX: usize = 8192;
const NODE: &str = "n0";

fn primary_with_a_follower() -> Replica<SimDisk, MemTable> {
    let cfg = Arc::new(ReplicaConfig {
        node: NODE.into(),
        addr: "127.0.0.1:1".into(),
        write_timeout: Duration::from_secs(2),
        sync_heartbeat: Duration::from_millis(50),
        peer_timeout: Duration::from_millis(500),
        snapshot_lag: 1000,
        log_retain: 1000,
        max_payload: MAX,
        incarnation: 1,
        snapshot_chunk_bytes: shardline_storage_node::replica::room::SNAPSHOT_CHUNK_BYTES,
        snapshot_rate: 0,
        regressions: Default::default(),
    });
    let spec = ShardSpec { id: ShardId(1), low: 0, size: 1000 };
    let failpoints = Arc::new(Failpoints::none());
    let mut r = Replica::open(cfg, MemTable::new(), SimDisk::new(), failpoints, Some((spec, Schema::seed())))
        .expect("the replica opens");
    let now = Duration::from_millis(1);
    assert!(matches!(r.election_query(now, 1), ControlResponse::Vote(_)));
    let follower = ServerAddr { name: "n1".into(), addr: "127.0.0.1:2".into() };
    assert_eq!(r.become_primary(now, 1, vec![follower], vec![], 60_000), ControlResponse::Ok);
    r.effects();
    r
}

fn insert(key: i64, name_len: usize) -> Operation {
    Operation::Write {
        client_id: 1,
        seq: key as u64,
        rows: vec![Row::new(key, vec![Value::Str("n".repeat(name_len)), Value::Int(1)])],
    }
}

#[test]
fn an_entry_too_large_for_an_append_is_refused_before_it_is_logged() {
    let mut r = primary_with_a_follower();
    let room = Room::new(MAX, NODE);
    let before = r.state().last;
    r.write_group(Duration::from_millis(2), vec![(insert(5, MAX), 1)]);
    let effects = r.effects();
    let refused = effects.iter().find_map(|e| match e {
        Effect::WriteDone { token: 1, result: Err(e) } => Some(e.clone()),
        _ => None,
    });
    assert!(matches!(refused, Some(ErrorCode::TooLarge { max, .. }) if max == room.entry() as u64), "{effects:?}");
    assert_eq!(r.state().last, before, "nothing was logged");
    assert!(!effects.iter().any(|e| matches!(e, Effect::Send { .. })), "nothing to replicate");
}

#[test]
fn an_entry_just_under_the_room_is_logged_and_its_append_fits_a_frame() {
    let mut r = primary_with_a_follower();
    let room = Room::new(MAX, NODE);
    // The largest name whose entry still fits: grow until the write is refused.
    let mut fitting = None;
    for name_len in (room.entry() - 200..room.entry()).rev() {
        let entry = shardline_protocol::LogEntry { term: 1, index: 2, op: insert(7, name_len) };
        if entry.encode().expect("encodes").len() <= room.entry() {
            fitting = Some(name_len);
            break;
        }
    }
    let name_len = fitting.expect("some name fits");
    r.write_group(Duration::from_millis(2), vec![(insert(7, name_len), 1)]);
    // The follower takes whatever it is sent, so the no-op's append is answered and the
    // entry follows it.
    let mut sends = Vec::new();
    for ms in 2..100 {
        let now = Duration::from_millis(ms * 10);
        r.tick(now);
        for e in r.effects() {
            if let Effect::WriteDone { result: Err(e), .. } = &e {
                panic!("refused: {e}");
            }
            let Effect::Send { link, request, .. } = e else { continue };
            let PeerRequest::Append { prev, entries, .. } = &request else { continue };
            let last = LogPosition { term: 1, index: prev.index + entries.len() as u64 };
            let answer =
                PeerResponse::Appended { term: 1, success: true, last, retry_from: 0, stamp: Default::default() };
            if entries.iter().any(|e| e.len() > 1000) {
                sends.push(request.clone());
            }
            r.on_peer_answer(now, link, Ok(answer));
        }
        if !sends.is_empty() {
            break;
        }
    }
    let append = sends.first().expect("the entry is sent to the follower");
    let len = append.to_frame(1).expect("encodes").payload.len();
    assert!(len <= MAX, "an append of {len} bytes is over the {MAX}-byte limit");
    assert!(len > MAX - 100, "the entry was near the limit: {len}");
}
