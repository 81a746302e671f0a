//! Failover through the balancer: clients keep writing (batches spanning two shards) and
//! reading while a shard's primary is killed, a follower is elected at the next term and
//! the coordinator pushes the new topology. The clients see no error (the balancer
//! retries with the same client id and sequence), and afterwards every acknowledged row is
//! there exactly once.

mod harness;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::{within, Budget, Cluster, Layout};
use shardline_protocol::{Request, Response, Row, Value, WriteBatch};

const WRITERS: i64 = 3;
/// Writes per writer; writer `w` writes keys `3n + w` and `3n + w + 150`, n < PER_WRITER.
const PER_WRITER: i64 = 50;

#[derive(Default)]
struct Record {
    acked: Vec<i64>,
    errors: Vec<String>,
    reads: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_see_no_error_across_a_failover() {
    let mut cluster = Cluster::start(Layout::three_by_three(), |cfg| {
        cfg.retry_deadline = Duration::from_secs(20);
    })
    .await;
    within(Duration::from_secs(120), "failover", scenario(&mut cluster)).await;
}

async fn scenario(cluster: &mut Cluster) {
    let record = Arc::new(Mutex::new(Record::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let mut client = cluster.client().await;
        let record = record.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..PER_WRITER {
                let k = 3 * n + w;
                let rows = [row(k), row(k + 150)];
                let batch = WriteBatch::encode(0, 0, &rows).expect("encodes");
                let answer = client.call(&Request::Write(batch)).await;
                let mut r = record.lock().unwrap();
                match answer {
                    Response::Committed(_) => r.acked.extend([k, k + 150]),
                    other => r.errors.push(format!("write {k}: {other:?}")),
                }
            }
        }));
    }
    let mut reader = cluster.client().await;
    let (reader_record, reader_stop) = (record.clone(), stop.clone());
    let reader = tokio::spawn(async move {
        for _ in 0..100_000 {
            if reader_stop.load(Ordering::Relaxed) {
                break;
            }
            let read = Request::Read { low: 0, high: 299, consistency: shardline_protocol::Consistency::Any };
            let answer = reader.call(&read).await;
            let mut r = reader_record.lock().unwrap();
            match answer {
                Response::Rows { .. } => r.reads += 1,
                other => r.errors.push(format!("read: {other:?}")),
            }
        }
    });

    let acked = || record.lock().unwrap().acked.len();
    let mut budget = Budget::new("30 acknowledged rows before the kill", Duration::from_secs(20));
    while acked() < 30 {
        assert!(budget.retry().await, "{}", budget.spent());
    }
    let at_kill = acked();
    let winner = cluster.fail_over(0).await;
    eprintln!("killed Server0 after {at_kill} acked rows; Server{winner} leads sh1 at term 2");

    for task in tasks {
        within(Duration::from_secs(60), "writers", task).await.expect("writer task");
    }
    stop.store(true, Ordering::Relaxed);
    within(Duration::from_secs(30), "reader", reader).await.expect("reader task");

    let record = std::mem::take(&mut *record.lock().unwrap());
    assert!(record.errors.is_empty(), "clients saw errors: {:?}", record.errors);
    assert_eq!(record.acked.len() as i64, 2 * WRITERS * PER_WRITER);
    assert!(record.reads > 0);
    assert!(record.acked[at_kill..].iter().any(|&k| k < 100), "no write to sh1 was acknowledged after the failover");

    // Every acknowledged row is there, once, with its value.
    let mut c = cluster.client().await;
    let all = c.call(&Request::Read { low: 0, high: 299, consistency: shardline_protocol::Consistency::Primary }).await;
    let Response::Rows { rows, .. } = all else {
        panic!("final read: {all:?}");
    };
    let keys: Vec<i64> = rows.iter().map(|r| r.key).collect();
    let unique: BTreeSet<i64> = keys.iter().copied().collect();
    assert_eq!(unique.len(), keys.len(), "a row is there twice");
    let acked: BTreeSet<i64> = record.acked.iter().copied().collect();
    assert_eq!(unique, acked, "rows differ from the acknowledged writes");
    for r in &rows {
        assert_eq!(*r, row(r.key));
    }
    let Response::Stats(stats) = c.call(&Request::Stats).await else {
        panic!("stats");
    };
    eprintln!("balancer stats after the failover: {stats:?}");
}

fn row(key: i64) -> Row {
    Row::new(key, vec![Value::Str(format!("name{key}")), Value::Int(key * 3)])
}
