//! Answers over the frame limit, with real processes (issue 11, scenario 8): a `shardline
//! up` cluster (3 servers, 2 shards, 3 replicas each) whose balancer and nodes run with a
//! 64 KiB frame limit. A read whose merged answer, or one shard's answer, would be over it,
//! and a read-server that would be, each get `TooLarge` at once, not a hang; right after,
//! the same client connection (and the balancer's pooled node connections behind it)
//! serve a normal read and a write. A row that fits a request but whose log entry could not
//! fit an append is refused `TooLarge` before it is logged, and the shard keeps taking
//! writes.

mod harness;

use std::time::{Duration, Instant};

use harness::Up;
use shardline::{Client, ClientError, ErrorCode, Row, Value};
use shardline_protocol::net::MuxConn;
use shardline_protocol::{Message, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAX: usize = 64 * 1024;
/// Bytes of name per wide row: 40 of them (about 40 KB) fit an answer, 80 do not.
const WIDE: usize = 1000;
/// How long an answer may take: far below every timeout (5 s), so a hang cannot pass.
const PROMPT: Duration = Duration::from_secs(2);

const LAYOUT: &str = r#"{
  "N": 3,
  "schema": {"columns": ["Stud_id", "Stud_name", "Stud_marks"], "dtypes": ["Number", "String", "Number"]},
  "shards": [
    {"Stud_id_low": 0, "Shard_id": "sh1", "Shard_size": 1000},
    {"Stud_id_low": 1000, "Shard_id": "sh2", "Shard_size": 1000}
  ],
  "servers": {"Server0": ["sh1", "sh2"], "Server1": ["sh1", "sh2"], "Server2": ["sh1", "sh2"]}
}"#;

fn wide(key: i64, len: usize) -> Row {
    Row::new(key, vec![Value::Str("w".repeat(len)), Value::Int(key % 100)])
}

/// The server's `TooLarge`, within [`PROMPT`].
async fn too_large<T>(what: &str, call: impl std::future::Future<Output = Result<T, ClientError>>) {
    let started = Instant::now();
    let result = tokio::time::timeout(PROMPT, call).await.unwrap_or_else(|_| panic!("{what}: no answer in {PROMPT:?}"));
    match result {
        Err(ClientError::Server(ErrorCode::TooLarge { len, max })) => {
            // A log entry is held to the room an append leaves under the frame limit.
            assert!(max <= MAX as u64 && max > MAX as u64 - 200, "{what}: {max}");
            assert!(len > max, "{what}: {len}");
        }
        Err(other) => panic!("{what}: expected TooLarge, got {other:?}"),
        Ok(_) => panic!("{what}: expected TooLarge, got an answer"),
    }
    assert!(started.elapsed() < PROMPT, "{what}");
}

/// Like [`too_large`], for reads that a replica may serve before it has applied the last
/// writes (replica reads trail the primary by a sync heartbeat): every answer must come
/// within [`PROMPT`], and within 20 tries one must be `TooLarge`.
async fn soon_too_large<T, F, Fut>(what: &str, mut call: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    for _ in 0..20 {
        let result = tokio::time::timeout(PROMPT, call()).await.unwrap_or_else(|_| panic!("{what}: no answer in time"));
        match result {
            Err(ClientError::Server(ErrorCode::TooLarge { max, .. })) if max == MAX as u64 => return,
            Err(other) => panic!("{what}: expected TooLarge, got {other:?}"),
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("{what}: never TooLarge");
}

/// A normal read and a write on `c`, each answered within [`PROMPT`].
async fn still_serves(c: &Client, key: i64) {
    let started = Instant::now();
    let rows = tokio::time::timeout(PROMPT, c.read(0..=2)).await.expect("a small read in time").expect("reads");
    assert_eq!(rows.len(), 3);
    tokio::time::timeout(PROMPT, c.write(&[wide(key, 10)])).await.expect("a write in time").expect("writes");
    assert!(started.elapsed() < PROMPT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_answers_are_typed_errors_and_connections_serve_on() {
    let layout = tempfile::Builder::new().suffix(".json").tempfile().expect("layout file");
    std::fs::write(layout.path(), LAYOUT).expect("write the layout");
    let config = layout.path().to_string_lossy().into_owned();
    let max = MAX.to_string();
    let up = Up::start_with(&["--config", &config, "--max-payload", &max]).await;
    let c = up.client().await;
    tokio::time::timeout(Duration::from_secs(60), scenario(&up, &c)).await.expect("the scenario finishes in 60 s");
}

async fn scenario(up: &Up, c: &Client) {
    // 40 wide rows in each shard: each shard's answer fits, the two together do not.
    for shard in [0, 1000] {
        let rows: Vec<Row> = (0..40).map(|k| wide(shard + k, WIDE)).collect();
        c.write(&rows).await.expect("a batch under the limit commits");
    }
    assert_eq!(c.read_primary(0..=39).await.expect("one shard's rows fit").len(), 40);
    assert_eq!(c.read_primary(1000..=1039).await.expect("the other shard's rows fit").len(), 40);
    too_large("a linearizable read merged from two shards", c.read_primary(0..=1999)).await;
    soon_too_large("a read merged from two shards", || c.read(0..=1999)).await;
    still_serves(c, 500).await;

    // 40 more in sh1: now one node's answer for that shard is over the limit.
    let rows: Vec<Row> = (40..80).map(|k| wide(k, WIDE)).collect();
    c.write(&rows).await.expect("commits");
    too_large("a linearizable read of one shard", c.read_primary(0..=999)).await;
    soon_too_large("a read of one shard", || c.read(0..=999)).await;
    still_serves(c, 501).await;

    for server in ["Server0", "Server1", "Server2"] {
        soon_too_large("a read-server", || c.read_server(server)).await;
    }
    still_serves(c, 502).await;

    // A row whose request fits the frame but whose log entry, wrapped in an append, would
    // not: refused before it is logged, not left to stall replication.
    too_large("a row near the limit", c.write(&[wide(600, MAX - 60)])).await;
    assert!(c.read_primary(600..=600).await.expect("reads").is_empty(), "the refused row is not there");
    still_serves(c, 503).await;

    // One raw multiplexed connection to the balancer: the TooLarge answer leaves it open,
    // and the next read on it is answered.
    let addr: std::sync::Arc<str> = up.addr().into();
    let mux = MuxConn::connect(addr, PROMPT, MAX).await.expect("connect");
    let read = |low, high| {
        Request::Read { low, high, consistency: shardline_protocol::Consistency::Primary }.to_frame(0).expect("encodes")
    };
    let big = mux.call(read(0, 1999), PROMPT).await.expect("answered");
    assert!(matches!(Response::from_frame(&big), Ok(Response::Error(ErrorCode::TooLarge { .. }))), "{big:?}");
    assert!(mux.is_open(), "the connection stays open after a TooLarge answer");
    let small = mux.call(read(0, 2), PROMPT).await.expect("answered on the same connection");
    assert!(matches!(Response::from_frame(&small), Ok(Response::Rows { rows, .. }) if rows.len() == 3), "{small:?}");

    // The text mode answers the same way on the same port.
    let mut nc = tokio::net::TcpStream::connect(up.addr()).await.expect("connect for the text mode");
    let lines = format!("{}READ 0 1999 PRIMARY\nREAD 0 1 PRIMARY\nQUIT\n", harness::auth_line());
    nc.write_all(lines.as_bytes()).await.expect("send lines");
    let mut text = String::new();
    tokio::time::timeout(PROMPT, nc.read_to_string(&mut text)).await.expect("text answers in time").expect("read");
    let lines: Vec<&str> = text.lines().skip_while(|l| l.starts_with("OK authenticated")).collect();
    assert!(lines[0].starts_with("ERR TooLarge: "), "{text}");
    // The count, then the position each shard was read at (`at sh1=7`).
    assert!(lines.last().is_some_and(|l| l.starts_with("OK 2 rows at sh1=")), "{text}");
}
