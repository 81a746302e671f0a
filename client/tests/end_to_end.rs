//! Every seed operation through the balancer with the library, against a `shardline up`
//! cluster (the seed's layout: 6 servers, 4 shards of 4096 keys, 3 replicas each): good
//! input does what it says, bad input gets a clear typed error and changes nothing.

mod harness;

use std::collections::BTreeMap;
use std::time::Duration;

use harness::{poll, row, Up};
use shardline::{AddServersRequest, Client, ClientError, ErrorCode, Row, ShardId, Value};

fn keys(rows: &[Row]) -> Vec<i64> {
    rows.iter().map(|r| r.key).collect()
}

fn code(result: Result<impl std::fmt::Debug, ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Server(code)) => code,
        other => panic!("expected a server error, got {other:?}"),
    }
}

const EVERYTHING: std::ops::RangeInclusive<i64> = 0..=16383;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_seed_operation_good_and_bad() {
    let up = Up::start().await;
    let c = up.client().await;
    tokio::time::timeout(Duration::from_secs(240), scenario(&c)).await.expect("the scenario finishes within 240 s");
}

// A scenario reads top to bottom as the story it tests; split, it would not.
#[allow(clippy::too_many_lines)]
async fn scenario(c: &Client) {
    c.ping().await.unwrap();

    // init was done by `shardline up`: status shows the seed's layout.
    let t = c.status().await.unwrap();
    assert_eq!(t.schema, Some(shardline::Schema::seed()));
    assert_eq!(t.shards.len(), 4);
    assert_eq!(t.servers.len(), 6);
    assert!(t.shards.iter().all(|s| s.replicas.len() == 3));

    // A batch spanning every shard, unsorted.
    let batch_keys = [16383, 1, 4096, 100, 8191, 4095, 12288, 8192, 2, 12287];
    let rows: Vec<Row> = batch_keys.iter().map(|&k| row(k)).collect();
    let done = c.write(&rows).await.unwrap();
    assert_eq!(done.rows(), 10);
    let shards: Vec<ShardId> = done.commits.iter().map(|c| c.shard).collect();
    assert_eq!(shards, vec![ShardId(1), ShardId(2), ShardId(3), ShardId(4)]);
    for commit in &done.commits {
        assert!(commit.index > 0 && commit.term > 0, "{commit:?}");
        assert!(commit.replicas.len() >= 2, "a majority holds it: {commit:?}");
    }
    let mut sorted = batch_keys.to_vec();
    sorted.sort();

    // Reads across shard boundaries come back in key order, primaries and replicas alike.
    assert_eq!(keys(&c.read_primary(EVERYTHING).await.unwrap()), sorted);
    assert_eq!(keys(&c.read_primary(4000..=8200).await.unwrap()), vec![4095, 4096, 8191, 8192]);
    poll("replica reads see the batch", Duration::from_secs(20), || async {
        let rows = c.read(EVERYTHING).await.ok()?;
        (keys(&rows) == sorted).then_some(())
    })
    .await;
    assert_eq!(c.read(4095..=4096).await.unwrap(), vec![row(4095), row(4096)]);
    assert!(matches!(c.read(std::ops::RangeInclusive::new(10, 5)).await, Err(ClientError::InvalidRequest(_))));

    // read-server: Server0 holds sh1 and sh2 in the seed's layout.
    let held = poll("Server0 has applied the batch", Duration::from_secs(20), || async {
        let shards = c.read_server("Server0").await.ok()?;
        let total: usize = shards.iter().map(|s| s.rows.len()).sum();
        (total == 6).then_some(shards)
    })
    .await;
    let ids: Vec<ShardId> = held.iter().map(|s| s.shard).collect();
    assert_eq!(ids, vec![ShardId(1), ShardId(2)]);
    assert_eq!(keys(&held[0].rows), vec![1, 2, 100, 4095]);

    // update and delete.
    let new = Row::new(100, vec![Value::Str("renamed".into()), Value::Int(99)]);
    assert_eq!(c.update(new.clone()).await.unwrap().rows(), 1);
    assert_eq!(c.read_primary(100..=100).await.unwrap(), vec![new]);
    assert_eq!(c.delete(2).await.unwrap().rows(), 1);
    assert!(c.read_primary(2..=2).await.unwrap().is_empty());
    sorted.retain(|&k| k != 2);

    // Bad input: a clear error each, and nothing changes.
    let before = c.read_primary(EVERYTHING).await.unwrap();
    assert_eq!(code(c.write(&[row(1)]).await), ErrorCode::DuplicateKey { key: 1 });
    assert_eq!(code(c.write(&[row(3), row(20000)]).await), ErrorCode::KeyOutOfRange { key: 20000 });
    assert_eq!(code(c.write(&[row(-1)]).await), ErrorCode::KeyOutOfRange { key: -1 });
    let wrong_type = Row::new(5, vec![Value::Int(7), Value::Int(7)]);
    assert!(matches!(code(c.write(&[wrong_type]).await), ErrorCode::SchemaViolation(_)));
    let too_short = Row::new(6, vec![Value::Str("x".into())]);
    assert!(matches!(code(c.write(&[too_short]).await), ErrorCode::SchemaViolation(_)));
    assert!(matches!(
        code(c.update(Row::new(100, vec![Value::Int(1), Value::Int(1)])).await),
        ErrorCode::SchemaViolation(_)
    ));
    assert_eq!(code(c.update(row(7)).await), ErrorCode::NotFound { key: 7 });
    assert_eq!(code(c.delete(2).await), ErrorCode::NotFound { key: 2 });
    assert_eq!(code(c.read_server("Nobody").await), ErrorCode::UnknownServer { name: "Nobody".into() });
    assert!(matches!(c.write(&[]).await, Err(ClientError::InvalidRequest(_))));
    assert_eq!(c.read_primary(EVERYTHING).await.unwrap(), before);

    // add: a new server holding an existing shard catches up and serves it.
    let servers_before = c.status().await.unwrap().servers.len();
    let add = |name: &str, shard: u32| AddServersRequest {
        n: 1,
        new_shards: vec![],
        servers: BTreeMap::from([(name.to_owned(), vec![ShardId(shard)])]),
    };
    let t = c.add_servers(add("Server6", 1)).await.unwrap();
    assert_eq!(t.servers.len(), servers_before + 1);
    let sh1 = t.shards.iter().find(|s| s.spec.id == ShardId(1)).unwrap();
    assert!(sh1.replicas.contains(&"Server6".to_owned()), "{sh1:?}");
    let want_sh1 = c.read_primary(0..=4095).await.unwrap();
    poll("Server6 has caught up with sh1", Duration::from_secs(30), || async {
        let shards = c.read_server("Server6").await.ok()?;
        (shards.len() == 1 && shards[0].rows == want_sh1).then_some(())
    })
    .await;
    // Bad adds change nothing.
    assert!(matches!(code(c.add_servers(add("Server6", 2)).await), ErrorCode::BadRequest(_)));
    assert_eq!(code(c.add_servers(add("Server7", 9)).await), ErrorCode::UnknownShard { shard: ShardId(9) });
    assert_eq!(c.status().await.unwrap().servers.len(), servers_before + 1);

    // rm: an unknown name is refused; then remove the new server and a primary.
    let e = code(c.remove_servers(1, &["Nobody".to_owned()]).await);
    assert!(matches!(e, ErrorCode::UnknownServer { .. } | ErrorCode::BadRequest(_)), "{e:?}");
    assert_eq!(c.status().await.unwrap().servers.len(), servers_before + 1);
    let t = c.remove_servers(1, &["Server6".to_owned()]).await.unwrap();
    assert!(t.server("Server6").is_none());
    let sh3_primary =
        t.shards.iter().find(|s| s.spec.id == ShardId(3)).and_then(|s| s.primary.clone()).expect("sh3 has a primary");
    let t = c.remove_servers(1, std::slice::from_ref(&sh3_primary)).await.unwrap();
    assert!(t.server(&sh3_primary).is_none());
    assert_eq!(t.servers.len(), servers_before - 1);
    // sh3 has a new primary; writes and reads go on, and nothing was lost.
    c.write(&[row(9000)]).await.unwrap();
    sorted.push(9000);
    sorted.sort();
    assert_eq!(keys(&c.read_primary(EVERYTHING).await.unwrap()), sorted);
}
