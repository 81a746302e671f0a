//! `shardline up` twice on one data directory: the first stops on SIGINT with exit code 0
//! and leaves no process behind; the second resumes the same cluster with its data.

mod harness;

use std::time::Duration;

use harness::{poll, row, Up};
use shardline::Row;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_up_resumes_the_cluster() {
    let mut up = Up::start().await;
    tokio::time::timeout(Duration::from_secs(240), scenario(&mut up))
        .await
        .expect("the scenario finishes within 240 s");
}

async fn scenario(up: &mut Up) {
    let c = up.client().await;
    let rows: Vec<Row> = (0..200).map(|i| row(i * 80)).collect();
    c.write(&rows).await.unwrap();
    let before = c.status().await.unwrap();
    drop(c);

    let status = up.interrupt().await;
    assert!(status.success(), "shardline up exited with {status}");
    poll("every process gone", Duration::from_secs(10), || async { up.spawned_pids().is_empty().then_some(()) }).await;

    up.spawn().await;
    let c = up.client().await;
    let after = c.status().await.unwrap();
    assert_eq!(after.schema, before.schema);
    let names = |t: &shardline::Topology| -> Vec<String> { t.servers.iter().map(|s| s.name.clone()).collect() };
    assert_eq!(names(&after), names(&before));
    let specs = |t: &shardline::Topology| -> Vec<_> { t.shards.iter().map(|s| (s.spec, s.replicas.clone())).collect() };
    assert_eq!(specs(&after), specs(&before));
    assert_eq!(c.read_primary(0..=16383).await.unwrap(), rows);
    c.write(&[row(1)]).await.unwrap();
    assert_eq!(c.read_primary(1..=1).await.unwrap(), vec![row(1)]);
    let log = std::fs::read_to_string(up.dir.path().join("up.log")).unwrap();
    assert!(log.contains("resuming the cluster"), "{log}");
}
