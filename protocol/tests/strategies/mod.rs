//! proptest strategies for every protocol type, shared by the property tests.

#![allow(dead_code)]

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use shardline_protocol::frame::{FLAG_END_OF_STREAM, FLAG_LINEARIZABLE};
use shardline_protocol::*;

pub(crate) fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::Int),
        any::<f64>().prop_filter("finite", |x| x.is_finite()).prop_map(Value::Float),
        ".{0,12}".prop_map(Value::Str),
    ]
}

pub(crate) fn row() -> impl Strategy<Value = Row> {
    (any::<i64>(), vec(value(), 0..4)).prop_map(|(k, v)| Row::new(k, v))
}

pub(crate) fn rows() -> impl Strategy<Value = Vec<Row>> {
    vec(row(), 0..8)
}

pub(crate) fn shard_id() -> impl Strategy<Value = ShardId> {
    any::<u32>().prop_map(ShardId)
}

pub(crate) fn shard_spec() -> impl Strategy<Value = ShardSpec> {
    (shard_id(), any::<i64>(), any::<u64>()).prop_map(|(id, low, size)| ShardSpec { id, low, size })
}

pub(crate) fn schema() -> impl Strategy<Value = Schema> {
    let ty = prop_oneof![Just(ColumnType::Int), Just(ColumnType::Float), Just(ColumnType::Str)];
    vec(("[a-z]{1,6}", ty), 1..5)
        .prop_map(|cols| Schema { columns: cols.into_iter().map(|(name, ty)| Column { name, ty }).collect() })
}

pub(crate) fn name() -> impl Strategy<Value = String> {
    "Server[0-9]{1,2}"
}

pub(crate) fn server_map() -> impl Strategy<Value = BTreeMap<String, Vec<ShardId>>> {
    btree_map(name(), vec(shard_id(), 0..3), 0..4)
}

pub(crate) fn position() -> impl Strategy<Value = LogPosition> {
    (any::<u64>(), any::<u64>()).prop_map(|(term, index)| LogPosition { term, index })
}

pub(crate) fn server_addr() -> impl Strategy<Value = ServerAddr> {
    (name(), "127\\.0\\.0\\.1:[0-9]{4}").prop_map(|(name, addr)| ServerAddr { name, addr })
}

pub(crate) fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        (shard_id(), any::<u64>(), proptest::option::of(server_addr()))
            .prop_map(|(shard, term, primary)| ErrorCode::NotPrimary { shard, term, primary }),
        (any::<u64>(), any::<u64>()).prop_map(|(current, got)| ErrorCode::StaleTerm { current, got }),
        (shard_id(), any::<u32>(), any::<u32>())
            .prop_map(|(shard, acked, needed)| { ErrorCode::NoQuorum { shard, acked, needed } }),
        any::<i64>().prop_map(|key| ErrorCode::KeyOutOfRange { key }),
        ".{0,20}".prop_map(ErrorCode::SchemaViolation),
        any::<i64>().prop_map(|key| ErrorCode::DuplicateKey { key }),
        ".{0,20}".prop_map(ErrorCode::Overloaded),
        (any::<u64>(), any::<u64>()).prop_map(|(len, max)| ErrorCode::TooLarge { len, max }),
        proptest::option::of(".{0,20}").prop_map(|leader| ErrorCode::NotLeader { leader }),
        (".{0,20}", ".{0,20}").prop_map(|(addr, reason)| ErrorCode::Unreachable { addr, reason }),
        (shard_id(), ".{0,20}").prop_map(|(shard, reason)| ErrorCode::Behind { shard, reason }),
    ]
}

/// A shard position, as read answers and session tokens carry it.
pub(crate) fn shard_position() -> impl Strategy<Value = ShardPosition> {
    (shard_id(), any::<u64>(), any::<u64>()).prop_map(|(shard, term, index)| ShardPosition { shard, term, index })
}

/// Any read consistency level.
pub(crate) fn consistency() -> impl Strategy<Value = Consistency> {
    prop_oneof![
        Just(Consistency::Any),
        (any::<u64>(), any::<u64>())
            .prop_map(|(max_lag_ms, max_lag_entries)| Consistency::Bounded { max_lag_ms, max_lag_entries }),
        vec(shard_position(), 0..4).prop_map(|positions| Consistency::Session { positions }),
        Just(Consistency::Primary),
    ]
}

pub(crate) fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Ping),
        Just(Request::Status),
        Just(Request::Stats),
        (any::<usize>(), schema(), vec(shard_spec(), 0..4), server_map())
            .prop_map(|(n, schema, shards, servers)| Request::Init(InitRequest { n, schema, shards, servers })),
        (any::<usize>(), vec(shard_spec(), 0..4), server_map())
            .prop_map(|(n, new_shards, servers)| { Request::AddServers(AddServersRequest { n, new_shards, servers }) }),
        (any::<usize>(), vec(name(), 0..4)).prop_map(|(n, servers)| Request::RemoveServers { n, servers }),
        (any::<i64>(), any::<i64>(), consistency()).prop_map(|(low, high, consistency)| Request::Read {
            low,
            high,
            consistency
        }),
        name().prop_map(|server| Request::ReadServer { server }),
        (any::<u64>(), any::<u64>(), rows())
            .prop_map(|(c, s, rows)| Request::Write(WriteBatch::encode(c, s, &rows).unwrap())),
        (any::<u64>(), any::<u64>(), row()).prop_map(|(client_id, seq, row)| Request::Update { client_id, seq, row }),
        (any::<u64>(), any::<u64>(), any::<i64>())
            .prop_map(|(client_id, seq, key)| { Request::Delete { client_id, seq, key } }),
        (shard_id(), any::<u32>()).prop_map(|(shard, count)| Request::Log { shard, count }),
        any::<u64>().prop_map(|known_version| Request::GetTopology { known_version }),
        Just(Request::SubscribeTopology),
        (shard_id(), proptest::option::of(name())).prop_map(|(shard, to)| Request::Failover { shard, to }),
    ]
}

pub(crate) fn topology() -> impl Strategy<Value = Topology> {
    let shard = (shard_spec(), any::<u64>(), proptest::option::of(name()), vec(name(), 0..3)).prop_map(
        |(spec, term, primary, replicas)| ShardTopology { spec, term, primary, readable: replicas.clone(), replicas },
    );
    let server = (name(), any::<bool>(), proptest::option::of(any::<u64>())).prop_map(|(name, healthy, age)| {
        ServerInfo { addr: format!("{name}:1"), name, healthy, last_heartbeat_ms: age }
    });
    let copy = (shard_id(), name(), copy_progress()).prop_map(|(shard, server, progress)| ShardCopy {
        shard,
        server,
        progress,
    });
    (any::<u64>(), proptest::option::of(schema()), vec(shard, 0..3), vec(server, 0..3), vec(copy, 0..3))
        .prop_map(|(version, schema, shards, servers, copies)| Topology { version, schema, shards, servers, copies })
}

pub(crate) fn copy_size() -> impl Strategy<Value = CopySize> {
    (any::<u64>(), any::<u64>()).prop_map(|(rows, bytes)| CopySize { rows, bytes })
}

pub(crate) fn copy_progress() -> impl Strategy<Value = CopyProgress> {
    let direction = prop_oneof![Just(CopyDirection::Sending), Just(CopyDirection::Receiving)];
    (direction, name(), any::<u64>(), copy_size(), copy_size())
        .prop_map(|(direction, peer, upto, copied, total)| CopyProgress { direction, peer, upto, copied, total })
}

pub(crate) fn shard_state() -> impl Strategy<Value = ShardState> {
    let role = prop_oneof![Just(ReplicaRole::Primary), Just(ReplicaRole::Follower), Just(ReplicaRole::Idle)];
    (
        shard_spec(),
        role,
        any::<u64>(),
        position(),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        proptest::option::of(".{0,10}"),
        any::<bool>(),
        vec(copy_progress(), 0..2),
    )
        .prop_map(|(spec, role, term, last, commit_index, applied_index, serving, fault, settled, copies)| {
            ShardState { spec, role, term, last, commit_index, applied_index, serving, fault, settled, copies }
        })
}

pub(crate) fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        error_code().prop_map(Response::Error),
        Just(Response::Pong),
        topology().prop_map(Response::Topology),
        (name(), vec(shard_state(), 0..3)).prop_map(|(node, shards)| Response::Node(NodeStatus { node, shards })),
        vec((".{0,8}", ".{0,8}"), 0..4).prop_map(Response::Stats),
        (vec(shard_position(), 0..4), rows()).prop_map(|(at, rows)| Response::Rows { at, rows }),
        vec((shard_id(), rows()), 0..3)
            .prop_map(|s| Response::ServerRows(s.into_iter().map(|(shard, rows)| ShardRows { shard, rows }).collect())),
        vec((shard_id(), any::<u64>(), any::<u64>(), vec(name(), 0..3), any::<u64>()), 0..3).prop_map(|c| {
            Response::Committed(
                c.into_iter()
                    .map(|(shard, term, index, replicas, rows)| ShardCommit { shard, term, index, replicas, rows })
                    .collect(),
            )
        }),
        any::<u64>().prop_map(|version| Response::TopologyUnchanged { version }),
    ]
}

pub(crate) fn control_request() -> impl Strategy<Value = ControlRequest> {
    prop_oneof![
        (shard_spec(), schema()).prop_map(|(shard, schema)| ControlRequest::ConfigureShard { shard, schema }),
        shard_id().prop_map(|shard| ControlRequest::DropShard { shard }),
        (shard_id(), any::<u64>(), vec(server_addr(), 0..3), vec(server_addr(), 0..2), any::<u64>()).prop_map(
            |(shard, term, followers, learners, lease_ms)| ControlRequest::BecomePrimary {
                shard,
                term,
                followers,
                learners,
                lease_ms
            }
        ),
        (shard_id(), any::<u64>(), server_addr())
            .prop_map(|(shard, term, primary)| { ControlRequest::BecomeFollower { shard, term, primary } }),
        (any::<u64>(), any::<u64>(), option::of((any::<u64>(), vec((shard_id(), any::<u64>()), 0..3)))).prop_map(
            |(seq, lease_ms, grant)| ControlRequest::Heartbeat {
                seq,
                lease_ms,
                grant: grant.map(|(seq, shards)| LeaseGrant { seq, shards })
            }
        ),
        (shard_id(), any::<u64>()).prop_map(|(shard, term)| ControlRequest::ElectionQuery { shard, term }),
        (shard_id(), any::<u64>(), any::<u64>()).prop_map(|(shard, term, for_ms)| ControlRequest::Handoff {
            shard,
            term,
            for_ms
        }),
    ]
}

pub(crate) fn log_entry() -> impl Strategy<Value = LogEntry> {
    let op = prop_oneof![
        Just(Operation::Noop),
        (any::<u64>(), any::<u64>(), rows()).prop_map(|(client_id, seq, rows)| Operation::Write {
            client_id,
            seq,
            rows
        }),
        (any::<u64>(), any::<u64>(), row()).prop_map(|(client_id, seq, row)| Operation::Update { client_id, seq, row }),
        (any::<u64>(), any::<u64>(), any::<i64>())
            .prop_map(|(client_id, seq, key)| { Operation::Delete { client_id, seq, key } }),
    ];
    (any::<u64>(), any::<u64>(), op).prop_map(|(term, index, op)| LogEntry { term, index, op })
}

/// A follower's contact stamp.
pub(crate) fn stamp() -> impl Strategy<Value = ContactStamp> {
    (any::<u64>(), any::<u64>()).prop_map(|(run, at_nanos)| ContactStamp { run, at_nanos })
}

pub(crate) fn peer_request() -> impl Strategy<Value = PeerRequest> {
    prop_oneof![
        (shard_id(), any::<u64>(), name(), position(), vec(log_entry(), 0..3), any::<u64>(), option::of(stamp()))
            .prop_map(|(shard, term, primary, prev, entries, commit, echo)| {
                PeerRequest::Append {
                    shard,
                    term,
                    primary,
                    prev,
                    commit,
                    echo,
                    entries: entries.iter().map(|e| e.encode().unwrap()).collect(),
                }
            }),
        (
            (shard_id(), any::<u64>(), name(), position(), any::<u32>(), rows(), any::<bool>()),
            vec((any::<u64>(), any::<u64>(), position()), 0..3),
            copy_size(),
        )
            .prop_map(|((shard, term, primary, last_included, chunk, rows, done), marks, total)| {
                let marks =
                    marks.into_iter().map(|(client, seq, entry)| ClientSeqMark { client, seq, entry }).collect();
                PeerRequest::Snapshot { shard, term, primary, last_included, chunk, rows, marks, done, total }
            }),
        (shard_id(), any::<u64>(), any::<u64>()).prop_map(|(shard, from, to)| PeerRequest::FetchEntries {
            shard,
            from,
            to
        }),
    ]
}

pub(crate) fn frame() -> impl Strategy<Value = Frame> {
    let route = prop_oneof![Just(Route::None), any::<i64>().prop_map(Route::Key), any::<u32>().prop_map(Route::Shard),];
    let flags = prop_oneof![Just(0u16), Just(FLAG_LINEARIZABLE), Just(FLAG_END_OF_STREAM)];
    (any::<u8>(), any::<u64>(), route, flags, vec(any::<u8>(), 0..200)).prop_map(|(kind, id, route, flags, payload)| {
        Frame::new(kind, id, Bytes::from(payload)).with_route(route).with_flags(flags)
    })
}
