//! Planned switchovers under load: clients write through the balancer while sh1's primary
//! is moved twice, once with `shardline failover sh1 --to <server>` and once with the text
//! mode's `FAILOVER sh1` (the most caught-up replica). The clients, writers and readers,
//! see no error (writes refused during the handoff are retried by the balancer), and
//! afterwards the readable
//! rows are exactly the acknowledged writes: none lost, none twice.

mod harness;

use std::sync::atomic::Ordering;
use std::time::Duration;

use harness::writers::{assert_rows_are, Writers};
use harness::{cli, poll, Up};
use shardline::{Client, ShardId};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Concurrent writers; writer `w` writes keys `w, w + WRITERS, ...` (all in sh1).
const WRITERS: i64 = 4;
/// Each writer stops after this many writes at most.
const MAX_WRITES: i64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchovers_under_load_cost_no_error_and_no_write() {
    let up = Up::start().await;
    let c = up.client().await;
    tokio::time::timeout(Duration::from_secs(180), scenario(&up, &c)).await.expect("the scenario ends within 180 s");
}

async fn sh1_primary(c: &Client) -> Option<(String, u64, Vec<String>)> {
    let t = c.status().await.ok()?;
    let s = t.shards.iter().find(|s| s.spec.id == ShardId(1))?;
    Some((s.primary.clone()?, s.term, s.replicas.clone()))
}

/// Sends one text-mode line to `addr` and returns the answer's lines through OK/ERR.
async fn text_line(addr: &str, line: &str) -> Vec<String> {
    let (read, mut write) = TcpStream::connect(addr).await.expect("connect").into_split();
    write.write_all(format!("{}{line}\n", harness::auth_line()).as_bytes()).await.expect("send");
    let mut lines = BufReader::new(read);
    let mut answer = Vec::new();
    for _ in 0..1000 {
        let mut l = String::new();
        let n = lines.read_line(&mut l).await.expect("receive");
        assert!(n > 0, "connection closed after {answer:?}");
        let l = l.trim_end().to_owned();
        if l.starts_with("OK authenticated") {
            continue;
        }
        let last = l.starts_with("OK") || l.starts_with("ERR");
        answer.push(l);
        if last {
            return answer;
        }
    }
    panic!("no OK/ERR line in {answer:?}");
}

async fn scenario(up: &Up, c: &Client) {
    let writers = Writers::start(c, WRITERS, MAX_WRITES);
    // Readers of sh1's replicas and of its primary, all along.
    let stop = writers.stop_flag();
    let mut readers = Vec::new();
    for primary in [false, true] {
        let (c, stop) = (c.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let result = if primary { c.read_primary(0..=63).await } else { c.read(0..=63).await };
                if let Err(e) = result {
                    return Err(format!("a {} read failed: {e}", if primary { "primary" } else { "replica" }));
                }
                reads += 1;
            }
            Ok(reads)
        }));
    }
    let acked_at_least = |n: u64| {
        let writers = &writers;
        async move {
            poll(&format!("{n} writes acknowledged"), Duration::from_secs(60), || async {
                (writers.acked() >= n).then_some(())
            })
            .await
        }
    };
    acked_at_least(100).await;

    // 1. The CLI, with a target.
    let (first, term, replicas) = sh1_primary(c).await.expect("sh1 has a primary");
    let target = replicas.iter().find(|r| **r != first).expect("sh1 has another replica").clone();
    let args = ["--addr".to_owned(), up.addr(), "failover".into(), "sh1".into(), "--to".into(), target.clone()];
    let run = tokio::task::spawn_blocking(move || cli(&args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .expect("cli task");
    assert_eq!(run.code, Some(0), "shardline failover failed: {}{}", run.stdout, run.stderr);
    let (now, new_term, _) = sh1_primary(c).await.expect("sh1 has a primary");
    assert_eq!(now, target, "the CLI's switchover moved sh1 to its target");
    assert!(new_term > term, "the target leads at a new term");
    eprintln!("switched sh1 from {first} to {target} (term {term} → {new_term})\n{}", run.stdout);
    acked_at_least(writers.acked() + 100).await;

    // 2. The text mode, without a target.
    let answer = text_line(&up.addr(), "FAILOVER sh1").await;
    assert!(answer.last().is_some_and(|l| l.starts_with("OK")), "FAILOVER sh1: {answer:?}");
    let (third, _, _) = sh1_primary(c).await.expect("sh1 has a primary");
    assert_ne!(third, target, "FAILOVER sh1 moved the primary away from {target}");
    acked_at_least(writers.acked() + 100).await;

    // Bad requests change nothing and say why.
    let answer = text_line(&up.addr(), "FAILOVER sh1 NoSuchServer").await;
    assert!(answer.last().is_some_and(|l| l.starts_with("ERR")), "a target with no replica: {answer:?}");
    let answer = text_line(&up.addr(), "FAILOVER sh99").await;
    assert!(answer.last().is_some_and(|l| l.starts_with("ERR")), "an unknown shard: {answer:?}");

    let written = writers.stop("a switchover").await;
    for r in readers {
        match r.await.expect("reader task") {
            Ok(reads) => eprintln!("{reads} reads, none failed"),
            Err(e) => panic!("a client saw an error during a switchover: {e}"),
        }
    }
    assert_rows_are(c, &written).await;
    eprintln!("{} writes acknowledged across two switchovers, every one readable once", written.len());
}
