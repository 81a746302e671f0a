//! Bad input at the door: a flood of silent connections, slow-loris clients trickling a
//! frame header or a text line a byte at a time, and an authenticated client that pipelines
//! requests without ever reading its answers. The balancer cuts the first two off at its
//! handshake timeout, stops reading from the third at its output limit, keeps serving a
//! well-behaved client meanwhile, and its memory stays bounded.

mod harness;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use harness::Up;
use shardline::{Row, Value};
use shardline_protocol::{frame, Message, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SILENT: usize = 300;
const LORIS_BINARY: usize = 100;
const LORIS_TEXT: usize = 100;
const HANDSHAKE_MS: u64 = 1000;

/// The balancer's resident memory, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the balancer's /proc status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("a VmRSS line");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS in kB")
}

/// The pid of the balancer listening on `addr` (its command line names the address).
fn balancer_pid(addr: &str) -> i32 {
    let wanted = format!("\0{addr}\0");
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("shardline-balancer") && cmdline.contains(&wanted) {
            return pid;
        }
    }
    panic!("no balancer process listens on {addr}");
}

/// Whether the server closed `stream` (reads up to what it sent first, e.g. an error line).
async fn closed_by_server(mut stream: TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + limit;
    for _ in 0..64 {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
    false
}

/// Writes `bytes` one at a time, `gap` apart, until the server closes the connection; the
/// stream is given back for [`closed_by_server`].
async fn trickle(mut stream: TcpStream, bytes: Vec<u8>, gap: Duration) -> TcpStream {
    for b in bytes {
        if stream.write_all(&[b]).await.is_err() {
            break;
        }
        tokio::time::sleep(gap).await;
    }
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_and_slow_loris_are_cut_off_while_others_are_served() {
    let up = Up::start_with(&["--handshake-timeout-ms", &HANDSHAKE_MS.to_string()]).await;
    let addr = up.addr();
    let pid = balancer_pid(&addr);
    let client = up.client().await;
    let row = |k: i64| Row::new(k, vec![Value::Str("flood".into()), Value::Int(k)]);
    client.write(&[row(1)]).await.expect("a first write");
    let before = rss_kib(pid);

    // The flood: silent connections, and slow-loris ones trickling a frame header or a
    // text command a byte every 200 ms (past the handshake timeout).
    let started = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..SILENT {
        silent.push(TcpStream::connect(&addr).await.expect("a flood connection"));
    }
    let header = {
        let mut b = BytesMut::new();
        frame::encode(&Request::Status.to_frame(1).unwrap(), &mut b);
        b.to_vec()
    };
    let mut loris = Vec::new();
    for i in 0..LORIS_BINARY + LORIS_TEXT {
        let stream = TcpStream::connect(&addr).await.expect("a slow-loris connection");
        let bytes = if i < LORIS_BINARY { header.clone() } else { b"STATUS and more and more\n".to_vec() };
        loris.push(tokio::spawn(trickle(stream, bytes, Duration::from_millis(200))));
    }

    // A well-behaved client keeps writing and reading meanwhile.
    let mut peak = before;
    let mut slowest = Duration::ZERO;
    for k in 2..=40 {
        let asked = Instant::now();
        client.write(&[row(k)]).await.expect("a write during the flood");
        let rows = client.read_primary(k..=k).await.expect("a read during the flood");
        assert_eq!(rows.len(), 1);
        slowest = slowest.max(asked.elapsed());
        peak = peak.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // Every flood connection is closed by the balancer, within the handshake timeout and
    // a margin.
    let limit = Duration::from_millis(HANDSHAKE_MS) + Duration::from_secs(5);
    for s in silent {
        assert!(closed_by_server(s, limit).await, "a silent connection was left open");
    }
    for t in loris {
        let stream = t.await.expect("a trickle task");
        assert!(closed_by_server(stream, limit).await, "a slow-loris connection was left open");
    }
    let cut_after = started.elapsed();

    // An authenticated client that pipelines reads and never reads an answer: the balancer
    // stops reading from it at its output limit instead of buffering without end. (Its
    // requests in flight, up to --max-in-flight, share the node connections with everyone
    // else's: how much that delays others is not asserted here.)
    let mut greedy = harness_authenticated(&addr).await;
    let mut burst = BytesMut::new();
    for id in 0..20_000u64 {
        frame::encode(
            &Request::Read { low: 0, high: 40, consistency: shardline_protocol::Consistency::Any }
                .to_frame(id + 10)
                .unwrap(),
            &mut burst,
        );
    }
    let writer = tokio::spawn(async move {
        // Blocks once the kernel buffers fill, if the balancer has stopped reading.
        let _ = tokio::time::timeout(Duration::from_secs(5), greedy.write_all(&burst)).await;
        greedy
    });
    for _ in 0..30 {
        peak = peak.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let greedy = writer.await.expect("the greedy writer");
    peak = peak.max(rss_kib(pid));
    drop(greedy);
    // Its requests in flight may delay others while they drain (they share the balancer's
    // node connections); once it is gone, the others are served.
    client.write(&[row(41)]).await.expect("a write once the greedy client is gone");
    let after = rss_kib(pid);
    eprintln!(
        "flood: {SILENT} silent + {LORIS_BINARY} binary + {LORIS_TEXT} text slow-loris connections, cut within \
         {cut_after:?}; balancer RSS {before} KiB before, {peak} KiB at peak, {after} KiB after; slowest \
         well-behaved request {slowest:?}"
    );
    assert!(slowest < Duration::from_secs(2), "a well-behaved client waited {slowest:?}");
    assert!(peak < before + 64 * 1024, "the balancer grew from {before} KiB to {peak} KiB");
}

/// A raw connection authenticated as the test admin.
async fn harness_authenticated(addr: &str) -> shardline_protocol::net::Stream {
    let outgoing = shardline_protocol::net::Outgoing::process();
    assert!(outgoing.credential.is_some(), "the harness sets a credential");
    shardline_protocol::net::open_stream(addr, Duration::from_secs(5), 1 << 20, &outgoing)
        .await
        .expect("an authenticated connection")
}
