//! End to end through the balancer: three in-process storage nodes holding three shards, a
//! fake coordinator, real sockets on 127.0.0.1.
//!
//! A batch spanning every shard, reads across shard boundaries in key order (from ring
//! replicas and from primaries), update, delete, read-server; then bad input: a duplicate
//! key, a key outside every shard, a wrong type, a missing key. Each gets a clear typed
//! error and changes nothing. Last, a batch that fails in one shard after committing in
//! another: the answer names the shard that committed.

mod harness;

use std::time::Duration;

use harness::{within, Budget, Cluster, Layout};
use shardline_protocol::{ErrorCode, Request, Response, Row, ShardId, Value, WriteBatch};

fn row(key: i64, name: &str, marks: i64) -> Row {
    Row::new(key, vec![Value::Str(name.into()), Value::Int(marks)])
}

fn write(rows: &[Row]) -> Request {
    Request::Write(WriteBatch::encode(0, 0, rows).expect("encodes"))
}

fn read(low: i64, high: i64, primary: bool) -> Request {
    let consistency =
        if primary { shardline_protocol::Consistency::Primary } else { shardline_protocol::Consistency::Any };
    Request::Read { low, high, consistency }
}

fn keys(response: &Response) -> Vec<i64> {
    match response {
        Response::Rows { rows, .. } => rows.iter().map(|r| r.key).collect(),
        other => panic!("expected rows, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_reads_writes_and_errors() {
    let cluster = Cluster::start(Layout::three_by_three(), |_| {}).await;
    within(Duration::from_secs(60), "end to end", scenario(&cluster)).await;
}

async fn scenario(cluster: &Cluster) {
    let mut c = cluster.client().await;
    assert_eq!(c.call(&Request::Ping).await, Response::Pong);

    // One batch, unsorted, spanning all three shards.
    let rows =
        [row(250, "carol", 70), row(5, "alice", 90), row(150, "bob", 80), row(6, "ann", 91), row(199, "bea", 60)];
    match c.call(&write(&rows)).await {
        Response::Committed(commits) => {
            let shards: Vec<ShardId> = commits.iter().map(|c| c.shard).collect();
            assert_eq!(shards, vec![ShardId(1), ShardId(2), ShardId(3)]);
            let counts: Vec<u64> = commits.iter().map(|c| c.rows).collect();
            assert_eq!(counts, vec![2, 2, 1]);
        }
        other => panic!("batch write: {other:?}"),
    }

    // Across shard boundaries, in key order: from the primaries at once...
    let all = c.call(&read(0, 299, true)).await;
    assert_eq!(keys(&all), vec![5, 6, 150, 199, 250]);
    match &all {
        Response::Rows { rows: r, .. } => assert_eq!(r[2], row(150, "bob", 80)),
        _ => unreachable!(),
    }
    assert_eq!(keys(&c.call(&read(6, 150, true)).await), vec![6, 150]);
    // ...and from ring replicas, once the followers have applied the batch.
    let mut budget = Budget::new("replicas applying the batch", Duration::from_secs(10));
    for _ in 0..20 {
        while keys(&c.call(&read(0, 299, false)).await) != vec![5, 6, 150, 199, 250] {
            assert!(budget.retry().await, "{}", budget.spent());
        }
    }
    assert_eq!(keys(&c.call(&read(200, 249, false)).await), Vec::<i64>::new());
    assert_eq!(keys(&c.call(&read(1000, 2000, false)).await), Vec::<i64>::new());

    // Update and delete.
    let update = Request::Update { client_id: 0, seq: 0, row: row(150, "bob", 99) };
    assert!(matches!(c.call(&update).await, Response::Committed(_)));
    let delete = Request::Delete { client_id: 0, seq: 0, key: 6 };
    assert!(matches!(c.call(&delete).await, Response::Committed(_)));
    match c.call(&read(0, 299, true)).await {
        Response::Rows { rows: r, .. } => {
            assert_eq!(r.iter().map(|r| r.key).collect::<Vec<_>>(), [5, 150, 199, 250]);
            assert_eq!(r[1], row(150, "bob", 99));
        }
        other => panic!("{other:?}"),
    }

    // ReadServer: Server2 holds all three shards; wait until it has applied everything.
    let mut budget = Budget::new("Server2 applying every write", Duration::from_secs(10));
    loop {
        let answer = c.call(&Request::ReadServer { server: "Server2".into() }).await;
        let Response::ServerRows(shards) = answer else {
            panic!("read server: {answer:?}");
        };
        let held: Vec<(ShardId, Vec<i64>)> =
            shards.iter().map(|s| (s.shard, s.rows.iter().map(|r| r.key).collect())).collect();
        let want = vec![(ShardId(1), vec![5]), (ShardId(2), vec![150, 199]), (ShardId(3), vec![250])];
        if held == want {
            break;
        }
        assert!(budget.retry().await, "{}: {held:?}", budget.spent());
    }
    let unknown = Request::ReadServer { server: "Nobody".into() };
    assert!(matches!(c.call(&unknown).await, Response::Error(ErrorCode::UnknownServer { .. })));

    bad_input(&mut c).await;
    partial_batch(&mut c).await;

    // Status is the coordinator's; Stats the balancer's own.
    assert!(matches!(c.call(&Request::Status).await, Response::Topology(t) if t.version >= 1));
    let Response::Stats(stats) = c.call(&Request::Stats).await else {
        panic!("stats");
    };
    let reads: u64 =
        stats.iter().filter(|(k, _)| k.starts_with("reads.")).map(|(_, v)| v.parse::<u64>().unwrap()).sum();
    assert!(reads >= 60, "{stats:?}");
}

async fn bad_input(c: &mut harness::cluster::Client) {
    let before = keys(&c.call(&read(0, 299, true)).await);

    // A duplicate key: the whole shard part is refused, the new row in it is not written.
    let dup = write(&[row(5, "again", 1), row(7, "new", 2)]);
    assert_eq!(c.call(&dup).await, Response::Error(ErrorCode::DuplicateKey { key: 5 }));
    // A key outside every shard: refused before anything is sent.
    let outside = write(&[row(8, "in", 1), row(300, "out", 2)]);
    assert_eq!(c.call(&outside).await, Response::Error(ErrorCode::KeyOutOfRange { key: 300 }));
    // A wrong type (an int where the name goes).
    let wrong = write(&[Row::new(9, vec![Value::Int(1), Value::Int(2)])]);
    assert!(matches!(c.call(&wrong).await, Response::Error(ErrorCode::SchemaViolation(_))));
    // Update or delete of a missing key; update outside every shard.
    let update = Request::Update { client_id: 0, seq: 0, row: row(42, "ghost", 1) };
    assert_eq!(c.call(&update).await, Response::Error(ErrorCode::NotFound { key: 42 }));
    let delete = Request::Delete { client_id: 0, seq: 0, key: -5 };
    assert_eq!(c.call(&delete).await, Response::Error(ErrorCode::KeyOutOfRange { key: -5 }));
    assert!(matches!(c.call(&read(10, 5, false)).await, Response::Error(ErrorCode::BadRequest(_))));

    assert_eq!(keys(&c.call(&read(0, 299, true)).await), before, "bad input changed data");
}

/// A batch spanning shards where one part is refused: each shard's part is atomic, the
/// batch is not. The answer says which shards committed.
async fn partial_batch(c: &mut harness::cluster::Client) {
    let mixed = write(&[row(10, "fresh", 1), row(150, "dup", 2)]);
    match c.call(&mixed).await {
        Response::Error(ErrorCode::BadRequest(m)) => {
            assert!(m.contains("duplicate key 150"), "{m}");
            assert!(m.contains("sh1 committed") && m.contains("sh2 did not"), "{m}");
        }
        other => panic!("partial batch: {other:?}"),
    }
    assert_eq!(keys(&c.call(&read(10, 10, true)).await), vec![10]);
}
