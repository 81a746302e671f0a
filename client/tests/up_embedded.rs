//! `shardline up` with no flags keeps its metadata in the embedded redb file, as before
//! the etcd backend: its coordinator is the sole one (STATS `role sole`), the file
//! `coordinator/coordinator.redb` is there, and the time from start to a settled cluster
//! is printed (the README quotes it beside the same measure before the etcd backend).

mod harness;

use std::time::{Duration, Instant};

use harness::Up;
use shardline::Client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shardline_up_runs_on_the_embedded_store() {
    let started = Instant::now();
    let up = Up::start().await;
    let settled = started.elapsed();
    let coordinator = Client::connect(format!("127.0.0.1:{}", up.coordinator_port)).await.unwrap();
    let stats = coordinator.stats().await.unwrap();
    let role = stats.iter().find(|(k, _)| k == "role").map(|(_, v)| v.as_str());
    assert_eq!(role, Some("sole"), "{stats:?}");
    assert!(up.data_dir().join("coordinator/coordinator.redb").is_file(), "the metadata is in redb");
    eprintln!("shardline up (embedded store): settled {settled:?} after start");
    assert!(settled < Duration::from_secs(90));
}
