//! Reads at a primary under steady writes (issue 13): a primary acknowledges a write at
//! commit and applies its table in batches, so a read that comes while entries wait to be
//! applied waits for them. Every read at the primary, `primary` level and `any` alike,
//! must be answered (not refused as `Behind`: under steady writes the commit index always
//! moves on while the read waits), and must see every write acknowledged before it began.
//! A follower applies in batches too: a session read there, carrying the position of a
//! write just acknowledged, must be answered and hold that write.

mod harness;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use harness::{row_for, within, Cluster, NodeOpts};
use shardline_protocol::{Consistency, Request, Response, ShardPosition, WriteBatch};
use shardline_testkit::poll;

const TEST_TIMEOUT: Duration = Duration::from_secs(120);
const WRITING: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_at_a_primary_under_steady_writes_see_every_acknowledged_write() {
    let cluster = Cluster::start(3, NodeOpts::default()).await;
    within(TEST_TIMEOUT, "primary_reads", scenario(&cluster)).await;
}

async fn scenario(cluster: &Cluster) {
    cluster.setup_shard(0, 1).await;
    let acked = Mutex::new(BTreeSet::new());
    let until = Instant::now() + WRITING;
    let writer = async {
        // Several writers, so commits keep coming while reads wait for applies.
        let write = |w: i64| {
            let acked = &acked;
            async move {
                let mut seq = 0;
                while Instant::now() < until && seq < 1_000 {
                    seq += 1;
                    let key = w * 1_000 + seq;
                    let batch = WriteBatch::encode(w as u64 + 1, seq as u64, &[row_for(key)]).expect("encodable");
                    if let Ok(Response::Committed(_)) = cluster.request(0, &Request::Write(batch), None).await {
                        acked.lock().expect("acked lock").insert(key);
                    }
                }
            }
        };
        futures::future::join_all((0..4).map(write)).await;
    };
    let reader = async {
        let mut reads = 0;
        let mut seen_moving = 0;
        let mut previous = 0;
        while Instant::now() < until {
            let before: BTreeSet<i64> = acked.lock().expect("acked lock").clone();
            let consistency = if reads % 2 == 0 { Consistency::Primary } else { Consistency::Any };
            let read = Request::Read { low: 0, high: 4095, consistency: consistency.clone() };
            let rows = match cluster.request(0, &read, None).await {
                Ok(Response::Rows { rows, .. }) => rows,
                other => panic!("read #{reads} at {consistency:?} at the primary under writes: {other:?}"),
            };
            let keys: BTreeSet<i64> = rows.iter().map(|r| r.key).collect();
            let missing: Vec<&i64> = before.difference(&keys).collect();
            assert!(missing.is_empty(), "read #{reads} at {consistency:?} lacks acknowledged keys {missing:?}");
            if before.len() > previous {
                seen_moving += 1;
            }
            previous = before.len();
            reads += 1;
        }
        (reads, seen_moving)
    };
    let ((), (reads, moving)) = tokio::join!(writer, reader);
    let writes = acked.lock().expect("acked lock").len();
    eprintln!("{reads} reads at the primary while {writes} writes were acknowledged ({moving} reads saw more than the one before)");
    assert!(
        writes > 100 && reads > 50 && moving > 20,
        "too little overlap to show anything: {reads} reads, {writes} writes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_reads_at_a_follower_see_the_write_just_acknowledged() {
    let cluster = Cluster::start(3, NodeOpts::default()).await;
    within(TEST_TIMEOUT, "follower_session_reads", follower_scenario(&cluster)).await;
}

async fn follower_scenario(cluster: &Cluster) {
    cluster.setup_shard(0, 1).await;
    // A follower serves once it has caught up with the new primary's first commit.
    for i in [1, 2] {
        poll(&format!("follower {i} serving"), TEST_TIMEOUT, || async move {
            cluster.state(i).await.ok().filter(|s| s.serving).map(|_| ())
        })
        .await;
    }
    let until = Instant::now() + WRITING;
    // A second writer keeps entries committing (and waiting to be applied) between ours.
    let background = async {
        let mut seq = 0;
        while Instant::now() < until && seq < 1_000 {
            seq += 1;
            let batch = WriteBatch::encode(99, seq, &[row_for(3_000 + seq as i64)]).expect("encodable");
            let _ = cluster.request(0, &Request::Write(batch), None).await;
        }
    };
    let checked = async {
        let mut reads = 0;
        let mut seq = 0;
        while Instant::now() < until && seq < 1_000 {
            seq += 1;
            let key = seq as i64;
            let batch = WriteBatch::encode(1, seq, &[row_for(key)]).expect("encodable");
            let commit = match cluster.request(0, &Request::Write(batch), None).await {
                Ok(Response::Committed(c)) => c.into_iter().next().expect("one shard's commit"),
                _ => continue,
            };
            let at = ShardPosition { shard: commit.shard, term: commit.term, index: commit.index };
            let follower = 1 + (seq as usize % 2);
            let read = Request::Read { low: key, high: key, consistency: Consistency::Session { positions: vec![at] } };
            match cluster.request(follower, &read, None).await {
                Ok(Response::Rows { rows, .. }) => {
                    assert!(rows.iter().any(|r| r.key == key), "session read at follower {follower} lacks key {key}")
                }
                other => panic!("session read #{reads} at follower {follower} after write {key}: {other:?}"),
            }
            reads += 1;
        }
        reads
    };
    let ((), reads) = tokio::join!(background, checked);
    eprintln!("{reads} session reads at followers, each right after its write was acknowledged");
    assert!(reads > 50, "too few reads to show anything: {reads}");
}
