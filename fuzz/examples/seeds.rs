//! Writes seed inputs for the fuzz targets into `fuzz/corpus/<target>/seed-*`: a frame for
//! every message variant (and all of them back to back), a log entry for every operation,
//! and a text line for every command. The corpus directories are not in git, so
//! `fuzz/smoke.sh` runs this before fuzzing; by hand:
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds`.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::BytesMut;
use shardline_protocol::*;

fn main() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");

    let dir = corpus.join("frame_decode");
    let mut all = BytesMut::new();
    for (i, frame) in frames().iter().enumerate() {
        let mut wire = BytesMut::new();
        frame::encode(frame, &mut wire);
        write(&dir, &format!("{i:02}-kind-{:02x}", frame.kind), &wire)?;
        all.extend_from_slice(&wire);
    }
    write(&dir, "all", &all)?;

    let dir = corpus.join("log_entry_decode");
    for (i, op) in operations().into_iter().enumerate() {
        let index = i as u64 + 1;
        let record = LogEntry { term: 2, index, op }
            .encode()
            .expect("seed entries encode");
        write(&dir, &index.to_string(), &record)?;
    }

    let dir = corpus.join("text_parse");
    for (i, line) in LINES.iter().enumerate() {
        write(&dir, &i.to_string(), line.as_bytes())?;
    }
    Ok(())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(format!("seed-{name}")), bytes)
}

const LINES: &[&str] = &[
    "PING",
    "HELP",
    "STATUS",
    "STATS",
    "READ 100 200",
    "read -5 5 primary",
    "READSERVER Server0",
    "WRITE 101 alice 77",
    "WRITE 7 \"ann lee\" 91 -1.5e3",
    "UPDATE 7 \"bob \\\"smith\\\"\\n\" 1.5 \"42\"",
    "DEL 101",
    "LOG sh1 10",
    "ADD Server6:sh1,sh2 Server7:3",
    "RM 2 Server3",
    "QUIT",
];

fn rows() -> Vec<Row> {
    vec![
        Row::new(1, vec![Value::Str("ann".into()), Value::Int(90)]),
        Row::new(-7, vec![Value::Float(1.5), Value::Str(String::new())]),
    ]
}

fn operations() -> Vec<Operation> {
    vec![
        Operation::Noop,
        Operation::Write {
            client_id: 5,
            seq: 1,
            rows: rows(),
        },
        Operation::Update {
            client_id: 5,
            seq: 2,
            row: rows().remove(0),
        },
        Operation::Delete {
            client_id: 0,
            seq: 0,
            key: -7,
        },
    ]
}

/// One frame per variant of every message enum.
fn frames() -> Vec<Frame> {
    let shard = ShardId(1);
    let spec = ShardSpec {
        id: shard,
        low: 0,
        size: 4096,
    };
    let addr = ServerAddr {
        name: "Server0".into(),
        addr: "127.0.0.1:7000".into(),
    };
    let names = vec!["Server0".to_owned(), "Server1".to_owned()];
    let servers = BTreeMap::from([("Server0".to_owned(), vec![shard])]);
    let last = LogPosition { term: 2, index: 9 };
    let entry = LogEntry {
        term: 2,
        index: 9,
        op: Operation::Noop,
    }
    .encode()
    .expect("encodes");
    let topology = Topology {
        version: 3,
        schema: Some(Schema::seed()),
        shards: vec![ShardTopology {
            spec,
            term: 2,
            primary: Some(names[0].clone()),
            replicas: names.clone(),
            readable: names.clone(),
        }],
        servers: vec![ServerInfo {
            name: addr.name.clone(),
            addr: addr.addr.clone(),
            healthy: true,
            last_heartbeat_ms: Some(12),
        }],
        copies: vec![],
    };
    let node = NodeStatus {
        node: addr.name.clone(),
        shards: vec![ShardState {
            spec,
            role: ReplicaRole::Primary,
            term: 2,
            last,
            commit_index: 9,
            applied_index: 8,
            serving: true,
            fault: Some("crc mismatch at 4".into()),
            settled: true,
            copies: vec![CopyProgress {
                direction: CopyDirection::Sending,
                peer: "Server6".into(),
                upto: 8,
                copied: CopySize { rows: 10, bytes: 400 },
                total: CopySize { rows: 40, bytes: 1600 },
            }],
        }],
    };
    let error = ErrorCode::NotPrimary {
        shard,
        term: 2,
        primary: Some(addr.clone()),
    };

    let requests = [
        Request::Ping,
        Request::Status,
        Request::Stats,
        Request::Init(InitRequest {
            n: 3,
            schema: Schema::seed(),
            shards: vec![spec],
            servers: servers.clone(),
        }),
        Request::AddServers(AddServersRequest {
            n: 1,
            new_shards: vec![spec],
            servers,
        }),
        Request::RemoveServers {
            n: 2,
            servers: names.clone(),
        },
        Request::Read {
            low: 1,
            high: 100,
            consistency: Consistency::Session {
                positions: vec![ShardPosition { shard, term: 2, index: 9 }],
            },
        },
        Request::ReadServer {
            server: addr.name.clone(),
        },
        Request::Write(WriteBatch::encode(5, 6, &rows()).expect("encodes")),
        Request::Update {
            client_id: 5,
            seq: 7,
            row: rows().remove(1),
        },
        Request::Delete {
            client_id: 5,
            seq: 8,
            key: 9,
        },
        Request::Log { shard, count: 20 },
        Request::GetTopology { known_version: 3 },
        Request::SubscribeTopology,
        Request::Failover { shard: ShardId(1), to: Some("Server2".into()) },
    ];
    let responses = [
        Response::Error(error.clone()),
        Response::Pong,
        Response::Topology(topology),
        Response::Node(node.clone()),
        Response::Stats(vec![("ops".into(), "3".into())]),
        Response::Rows { at: Vec::new(), rows: rows() },
        Response::ServerRows(vec![ShardRows {
            shard,
            rows: rows(),
        }]),
        Response::Committed(vec![ShardCommit {
            shard,
            term: 2,
            index: 9,
            replicas: names,
            rows: 2,
        }]),
        Response::Log(vec![LogLine {
            index: 9,
            term: 2,
            crc: 0xDEAD_BEEF,
            crc_ok: false,
            summary: "noop".into(),
            committed: true,
        }]),
        Response::TopologyUnchanged { version: 3 },
    ];
    let control = [
        ControlRequest::ConfigureShard {
            shard: spec,
            schema: Schema::seed(),
        },
        ControlRequest::DropShard { shard },
        ControlRequest::BecomePrimary {
            shard,
            term: 2,
            followers: vec![addr.clone()],
            learners: vec![],
            lease_ms: 500,
        },
        ControlRequest::BecomeFollower {
            shard,
            term: 2,
            primary: addr,
        },
        ControlRequest::Heartbeat { seq: 2, lease_ms: 500, grant: Some(LeaseGrant { seq: 1, shards: vec![(shard, 2)] }) },
        ControlRequest::ElectionQuery { shard, term: 3 },
        ControlRequest::Handoff { shard, term: 3, for_ms: 2000 },
    ];
    let control_responses = [
        ControlResponse::Error(error.clone()),
        ControlResponse::Ok,
        ControlResponse::Status(node),
        ControlResponse::Vote(Vote {
            shard,
            term: 3,
            last,
            electable: true,
            whole: true,
        }),
    ];
    let peer = [
        PeerRequest::Append {
            shard,
            term: 2,
            primary: "Server0".into(),
            prev: last,
            entries: vec![entry.clone()],
            commit: 9,
            echo: Some(ContactStamp { run: 3, at_nanos: 1_000_000 }),
        },
        PeerRequest::Snapshot {
            shard,
            term: 2,
            primary: "Server0".into(),
            last_included: last,
            chunk: 0,
            rows: rows(),
            marks: vec![ClientSeqMark { client: 7, seq: 3, entry: last }],
            done: true,
            total: CopySize { rows: 3, bytes: 120 },
        },
        PeerRequest::FetchEntries {
            shard,
            from: 1,
            to: 9,
        },
    ];
    let peer_responses = [
        PeerResponse::Error(error),
        PeerResponse::Appended {
            term: 2,
            success: false,
            last,
            retry_from: 4,
            stamp: ContactStamp { run: 3, at_nanos: 2_000_000 },
        },
        PeerResponse::SnapshotStored { term: 2, chunk: 0 },
        PeerResponse::Entries(vec![entry]),
    ];

    let mut frames = Vec::new();
    frames.extend(requests.iter().map(to_frame));
    frames.extend(responses.iter().map(to_frame));
    frames.extend(control.iter().map(to_frame));
    frames.extend(control_responses.iter().map(to_frame));
    frames.extend(peer.iter().map(to_frame));
    frames.extend(peer_responses.iter().map(to_frame));
    frames
}

fn to_frame<M: Message>(message: &M) -> Frame {
    message.to_frame(7).expect("seed messages encode")
}
