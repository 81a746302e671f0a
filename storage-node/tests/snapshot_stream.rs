//! A new replica catches up by a streamed snapshot, held to the sender's `--snapshot-rate`,
//! with its progress in STATUS on both sides.
//!
//! Two nodes with a short log and small frames (`--snapshot-lag 4 --log-retain 4
//! --max-payload 65536`, so the snapshot travels in many chunks) and a low rate limit
//! (`--snapshot-rate 250000`). Node 0 leads shard 1 alone (keys `[0, 2^20)`) with node 1
//! as a learner whose node does not hold the shard yet, and takes 20,000 rows in batches;
//! its log drops their entries. Then node 1 is configured and follows: the primary can
//! only send it a snapshot. What must hold:
//! - the copy takes at least `(bytes - one chunk) / rate`: the pacer spaces chunks by their
//!   bytes, so all but the last have left no sooner than that (a property of the throttle,
//!   not a performance figure; unthrottled, this copy takes well under a second);
//! - during the copy, STATUS on the primary shows it sending to node 1 with part of the
//!   20,000 rows copied, STATUS on node 1 shows it receiving, and the text mode's STATUS
//!   prints the copy line;
//! - afterwards node 1 serves exactly the primary's rows, and the copies are gone from STATUS.

mod harness;

use std::time::{Duration, Instant};

use harness::cluster::expect_ok;
use harness::{within, Budget, Cluster, NodeOpts, LEASE_MS, SHARD};
use shardline_protocol::{
    ControlRequest, CopyDirection, CopyProgress, ReplicaRole, Request, Response, Route, Row, Schema, ShardSpec, Value,
    WriteBatch,
};
use shardline_storage_node::replica::room::{mark_size, row_size};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const TEST_TIMEOUT: Duration = Duration::from_secs(120);
const ROWS: i64 = 20_000;
const BATCH: i64 = 500;
const RATE: u64 = 250_000;
const MAX_PAYLOAD: usize = 65_536;
/// The writing client.
const CLIENT: u64 = 31;

fn spec() -> ShardSpec {
    ShardSpec { id: SHARD, low: 0, size: 1 << 20 }
}

fn row(key: i64) -> Row {
    Row::new(key, vec![Value::Str(format!("student-{key:08}-of-the-stream")), Value::Int(key % 100)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_streams_its_snapshot_at_the_rate_limit() {
    let opts = NodeOpts {
        snapshot_lag: Some(4),
        log_retain: Some(4),
        snapshot_rate: Some(RATE),
        max_payload: Some(MAX_PAYLOAD),
        metrics: true,
        ..NodeOpts::default()
    };
    let mut cluster = Cluster::start(2, opts).await;
    within(TEST_TIMEOUT, "snapshot_stream", scenario(&mut cluster)).await;
}

/// Every row node `i` serves, read a page at a time (a whole read is over the frame limit).
async fn rows(cluster: &Cluster, i: usize) -> Result<Vec<Row>, String> {
    let mut all = Vec::new();
    for low in (0..ROWS + 1000).step_by(1000) {
        let req = Request::Read { low, high: low + 999, consistency: shardline_protocol::Consistency::Any };
        match cluster.request(i, &req, Some(Route::Shard(SHARD.0))).await {
            Ok(Response::Rows { rows, .. }) => all.extend(rows),
            other => return Err(format!("read of {low}.. on node {i}: {other:?}")),
        }
    }
    Ok(all)
}

/// The copies node `i`'s STATUS shows for shard 1.
async fn copies(cluster: &Cluster, i: usize) -> Vec<CopyProgress> {
    cluster.state(i).await.map(|s| s.copies).unwrap_or_default()
}

/// Node `i`'s Prometheus metrics page (an HTTP/1.0 GET, the connection closed after it).
async fn metrics_page(cluster: &Cluster, i: usize) -> String {
    let addr = cluster.nodes[i].metrics_addr().expect("the node serves metrics");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect for /metrics");
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.expect("send GET");
    let mut page = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut page).await.expect("read /metrics");
    page
}

/// Node `i`'s STATUS in the text mode, as `nc` would show it.
async fn text_status(cluster: &Cluster, i: usize) -> String {
    let mut stream = tokio::net::TcpStream::connect(cluster.nodes[i].addr()).await.expect("connect for STATUS");
    stream.write_all(b"STATUS\n").await.expect("send STATUS");
    let mut lines = BufReader::new(stream).lines();
    let mut out = String::new();
    for _ in 0..1000 {
        let Some(line) = lines.next_line().await.expect("read STATUS") else { break };
        let last = line.starts_with("OK") || line.starts_with("ERR");
        out.push_str(&line);
        out.push('\n');
        if last {
            break;
        }
    }
    out
}

// A scenario reads top to bottom as the story it tests; split, it would not.
#[allow(clippy::too_many_lines)]
async fn scenario(cluster: &mut Cluster) {
    let (primary, learner, term) = (0, 1, 1);
    let configure = ControlRequest::ConfigureShard { shard: spec(), schema: Schema::seed() };
    expect_ok("ConfigureShard on the primary", cluster.control(primary, configure.clone()).await);
    cluster.control(primary, ControlRequest::ElectionQuery { shard: SHARD, term }).await.expect("election query");
    let lead = ControlRequest::BecomePrimary {
        shard: SHARD,
        term,
        followers: vec![],
        learners: vec![cluster.server(learner)],
        lease_ms: LEASE_MS,
    };
    expect_ok("BecomePrimary", cluster.control(primary, lead).await);

    for (seq, start) in (0..ROWS).step_by(BATCH as usize).enumerate() {
        let batch: Vec<Row> = (start..start + BATCH).map(row).collect();
        let req = Request::Write(WriteBatch::encode(CLIENT, seq as u64 + 1, &batch).expect("encodable batch"));
        match cluster.request(primary, &req, None).await {
            Ok(Response::Committed(_)) => {}
            other => panic!("batch from {start}: {other:?}"),
        }
    }
    let want = rows(cluster, primary).await.expect("the primary's rows");
    assert_eq!(want, (0..ROWS).map(row).collect::<Vec<_>>(), "the primary holds every row");
    // What the snapshot carries: every row, and a retry mark for each batch.
    let marks = ROWS / BATCH;
    let probe = shardline_protocol::ClientSeqMark {
        client: CLIENT,
        seq: marks as u64,
        entry: shardline_protocol::LogPosition { term, index: marks as u64 + 1 },
    };
    let bytes = want.iter().map(row_size).sum::<usize>() + marks as usize * mark_size(&probe);

    let started = Instant::now();
    expect_ok("ConfigureShard on the learner", cluster.control(learner, configure).await);
    expect_ok("BecomeFollower on the learner", cluster.become_follower(learner, term, primary).await);

    let (mut sending, mut receiving, mut text_line, mut metric_line) = (Vec::new(), Vec::new(), None, None);
    let mut budget = Budget::every("the learner to catch up", Duration::from_secs(60), Duration::from_millis(50));
    let finished = loop {
        let out = copies(cluster, primary).await;
        sending.extend(out.into_iter().filter(|c| c.direction == CopyDirection::Sending));
        let inbound = copies(cluster, learner).await;
        receiving.extend(inbound.into_iter().filter(|c| c.direction == CopyDirection::Receiving));
        if text_line.is_none() && sending.last().is_some_and(|c| c.copied.rows > 0) {
            let text = text_status(cluster, primary).await;
            text_line = text.lines().find(|l| l.starts_with("  copy sending to Server1")).map(str::to_owned);
        }
        if metric_line.is_none() && sending.last().is_some_and(|c| c.copied.rows > 0) {
            let page = metrics_page(cluster, primary).await;
            let copying = |l: &&str| {
                l.starts_with("shardline_snapshot_copied_rows{")
                    && l.contains("direction=\"sending\"")
                    && !l.ends_with(" 0")
            };
            metric_line = page.lines().find(copying).map(str::to_owned);
        }
        let state = cluster.state(learner).await;
        if state.as_ref().is_ok_and(|s| s.serving && s.role == ReplicaRole::Follower && s.copies.is_empty()) {
            let p = cluster.state(primary).await.expect("primary state");
            if state.as_ref().is_ok_and(|s| s.applied_index >= p.commit_index) {
                break started.elapsed();
            }
        }
        if !budget.retry().await {
            panic!("{}: learner {state:?}; seen sending {sending:?}", budget.spent());
        }
    };

    let floor = Duration::from_secs_f64(bytes.saturating_sub(MAX_PAYLOAD) as f64 / RATE as f64);
    eprintln!(
        "copy of {bytes} bytes in {finished:?} (rate {RATE} B/s: at least {floor:?}); {} sending and {} receiving \
         observations; text mode: {text_line:?}",
        sending.len(),
        receiving.len()
    );
    assert!(finished >= floor, "the copy took {finished:?}, faster than {RATE} B/s allows ({floor:?})");

    // Midway through a snapshot of every row (an attempt begun while the last batches were
    // still being written may have held fewer, and been followed by another).
    let midway = |c: &&CopyProgress| c.copied.rows > 0 && c.copied.rows < c.total.rows && c.total.rows == ROWS as u64;
    let seen = sending.iter().find(midway).unwrap_or_else(|| panic!("no progress midway: {sending:?}"));
    assert_eq!(seen.peer, "Server1", "{seen:?}");
    assert!(seen.total.bytes > 0 && seen.copied.bytes < seen.total.bytes, "{seen:?}");
    let got = receiving.iter().find(midway).unwrap_or_else(|| panic!("nothing received midway: {receiving:?}"));
    assert_eq!(got.peer, "Server0", "{got:?}");
    assert!(text_line.is_some(), "the text mode's STATUS never showed the copy");
    assert!(metric_line.is_some(), "the primary's /metrics never showed the copy's progress");
    eprintln!("metrics: {metric_line:?}");

    assert_eq!(rows(cluster, learner).await.expect("the learner's rows"), want, "the learner holds the same rows");
    assert!(copies(cluster, primary).await.is_empty(), "the copy is over on the primary too");
}
