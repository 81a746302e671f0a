//! `shardline add` returns only once the new replica serves reads, and shows the snapshot
//! copy's progress while it waits.
//!
//! A `shardline up` cluster (the seed's layout) with small frames and a low snapshot rate
//! (`--max-payload 8192 --snapshot-rate 20000`), so a copy of a few thousand rows takes a
//! few seconds in many chunks. Shard 1 takes 3,000 rows, one write each, so its log drops
//! its first entries and only a snapshot can catch a new replica up. Then `shardline add
//! Server6:sh1` (stderr not a terminal: a progress line a second instead of the bar). What
//! must hold: it exits 0; its stderr shows the copy under way (`copying from`, rows of
//! 3,000); and the moment it returns, STATUS lists Server6 among sh1's readable replicas.
//! (That the rows copied match is `storage-node/tests/snapshot_stream.rs`'s to check.)

mod harness;

use std::io::Write as _;
use std::time::Duration;

use harness::{cli, Up};
use shardline::ShardId;

const ROWS: i64 = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_waits_until_the_new_replica_is_readable_and_shows_the_copy() {
    let up = Up::start_with(&["--max-payload", "8192", "--snapshot-rate", "20000"]).await;
    let addr = up.addr();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("rows.csv");
    let mut f = std::fs::File::create(&csv).unwrap();
    writeln!(f, "Stud_id,Stud_name,Stud_marks").unwrap();
    for key in 0..ROWS {
        writeln!(f, "{key},student{key},{}", key % 100).unwrap();
    }
    drop(f);
    let csv = csv.to_string_lossy().into_owned();
    let (load_addr, add_addr) = (addr.clone(), addr.clone());
    let load = tokio::task::spawn_blocking(move || {
        cli(&["--addr", &load_addr, "write", "--file", &csv, "--batch", "1", "--parallel", "16"])
    });
    let loaded = tokio::time::timeout(Duration::from_secs(120), load).await.expect("the load ends").unwrap();
    assert_eq!(loaded.code, Some(0), "{loaded:?}");

    let add = tokio::task::spawn_blocking(move || cli(&["--addr", &add_addr, "add", "Server6:sh1"]));
    let added = tokio::time::timeout(Duration::from_secs(120), add).await.expect("the add ends").unwrap();
    let client = up.client().await;
    let t = client.status().await.expect("status right after the add");
    eprintln!("shardline add: {added:?}");
    assert_eq!(added.code, Some(0), "{added:?}");
    let sh1 = t.shards.iter().find(|s| s.spec.id == ShardId(1)).expect("sh1");
    assert!(sh1.readable.iter().any(|r| r == "Server6"), "add returned before Server6 was readable: {sh1:?}");
    let progress = added.stderr.lines().find(|l| l.starts_with("sh1 on Server6: copying from Server"));
    let progress = progress.unwrap_or_else(|| panic!("no progress line: {added:?}"));
    assert!(progress.contains(&format!("/{ROWS} rows")), "{progress}");
}
