//! SIGTERM under load, to each server binary in turn: a storage node (sh1's primary, with
//! writers going through the balancer and readers on the node itself), the coordinator and
//! the balancer (binary and text-mode clients). On every connection, every request the
//! server read is answered, and the rest are refused by its closing notice (`ShuttingDown`:
//! not read, so not carried out). No connection is cut mid-frame or reset, and the process
//! is gone within the drain bound. The writers see no error, and afterwards every
//! acknowledged write is readable, once.

mod harness;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::writers::{assert_rows_are, Writers};
use harness::{poll, signal, Up};
use shardline::{Client, ShardId};
use shardline_protocol::net::{CallError, MuxConn};
use shardline_protocol::{Consistency, Frame, Message, Request, Response};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::task::JoinHandle;

/// Connections per server under load, and concurrent callers on each.
const CONNECTIONS: usize = 3;
const CALLERS: usize = 16;
/// A caller stops after this many calls, or this long, whatever comes first.
const MAX_CALLS: u64 = 200_000;
const MAX_LOAD: Duration = Duration::from_secs(90);
/// How long a call may wait for its answer; far above any drain.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a stopped server may take to be gone: its drain bound (5 s) and room.
const GONE_WITHIN: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_or_refuses_every_request_and_never_cuts_a_frame() {
    let mut up = Up::start().await;
    let c = up.client().await;
    tokio::time::timeout(Duration::from_secs(400), scenario(&mut up, &c))
        .await
        .expect("the scenario finishes within 400 s");
}

async fn scenario(up: &mut Up, c: &Client) {
    // A storage node: sh1's primary, written through the balancer, read directly.
    let t = c.status().await.expect("status");
    let sh1 = t.shards.iter().find(|s| s.spec.id == ShardId(1)).expect("sh1");
    let primary = sh1.primary.clone().expect("sh1 has a primary");
    let node_addr = t.server(&primary).expect("the primary's address").addr.clone();
    let node = Client::connect(node_addr.clone()).await.expect("connect to the node");
    let node_pid = harness::stats_pid(&node).await;
    drop(node);
    let writers = Writers::start(c, 4, 2_000);
    let read = Request::Read { low: 0, high: 31, consistency: Consistency::Any };
    let readers = Load::start(&node_addr, &read, "a read on the node").await;
    stop_under_load(node_pid, "the storage node", &readers, &[writers.acked_counter()]).await;
    readers.check("the storage node").await;
    let at_stop = writers.acked();
    poll("writes acknowledged after the node stopped", Duration::from_secs(60), || async {
        (writers.acked() >= at_stop + 100).then_some(())
    })
    .await;
    let written = writers.stop("a storage node's graceful stop").await;
    assert_rows_are(c, &written).await;

    // The coordinator, asked for the topology.
    let coordinator = format!("127.0.0.1:{}", up.coordinator_port);
    let coordinator_pid = pid_running(up, "shardline-coordinator");
    let status = Load::start(&coordinator, &Request::Status, "a status request").await;
    stop_under_load(coordinator_pid, "the coordinator", &status, &[]).await;
    status.check("the coordinator").await;
    up.wait_settled(Duration::from_secs(90)).await;

    // The balancer: binary callers reading, and a text-mode client in lockstep.
    let balancer_pid = harness::stats_pid(&up.client().await).await;
    let balancer = up.addr();
    let readers = Load::start(&balancer, &read, "a read through the balancer").await;
    let pings = Arc::new(AtomicU64::new(0));
    let text = tokio::spawn(text_client(balancer.clone(), pings.clone()));
    stop_under_load(balancer_pid, "the balancer", &readers, &[pings]).await;
    readers.check("the balancer").await;
    let lines = tokio::time::timeout(CALL_TIMEOUT, text).await.expect("the text client ends").expect("text task");
    match lines {
        Ok(answered) => eprintln!("the balancer's text client: {answered} lines answered, then the closing notice"),
        Err(e) => panic!("the balancer's text client: {e}"),
    }
    // `shardline up` starts the balancer again, and the cluster serves.
    up.wait_settled(Duration::from_secs(90)).await;
}

/// Waits until `load` and each of the `others` counters have moved, sends SIGTERM to
/// `pid`, and waits until the process is gone.
async fn stop_under_load(pid: i32, what: &str, load: &Load, others: &[Arc<AtomicU64>]) {
    let calls = load.answered();
    let before: Vec<u64> = others.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    poll(&format!("load on {what}"), Duration::from_secs(30), || async {
        let moved = others.iter().zip(&before).all(|(c, b)| c.load(Ordering::Relaxed) >= b + 10);
        (load.answered() >= calls + 200 && moved).then_some(())
    })
    .await;
    let sent = Instant::now();
    signal(pid, libc::SIGTERM);
    poll(&format!("{what} (pid {pid}) gone after SIGTERM"), GONE_WITHIN, || async { gone(pid).then_some(()) }).await;
    eprintln!("{what}: gone {:?} after SIGTERM, {} calls answered before", sent.elapsed(), load.answered());
}

/// The pid of the process of this cluster whose program is `program`.
fn pid_running(up: &Up, program: &str) -> i32 {
    let pids = up.spawned_pids();
    let found = pids.iter().copied().find(|pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        argv0.ends_with(program.as_bytes())
    });
    found.unwrap_or_else(|| panic!("no {program} among this cluster's processes {pids:?}"))
}

/// Whether process `pid` has exited (no longer listed, or a zombie not yet reaped).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command's closing parenthesis.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// How one caller's calls ended.
#[derive(Debug, Default)]
struct Outcome {
    answered: u64,
    /// The answers that were errors, by name (an answer all the same).
    errors: Vec<String>,
    /// The call refused by the closing notice, if one was.
    refused: bool,
    /// The call that failed otherwise (cut off, timed out, undecodable), if one did.
    failed: Option<String>,
}

/// [`CONNECTIONS`] connections to one server, [`CALLERS`] concurrent callers on each,
/// each sending the same request again as soon as it is answered.
struct Load {
    answered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    callers: Vec<JoinHandle<Outcome>>,
}

impl Load {
    async fn start(addr: &str, request: &Request, what: &'static str) -> Load {
        let frame = request.to_frame(0).expect("the request encodes");
        let (answered, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let mut callers = Vec::new();
        for _ in 0..CONNECTIONS {
            let conn = MuxConn::connect(addr.into(), CALL_TIMEOUT, shardline_protocol::DEFAULT_MAX_PAYLOAD)
                .await
                .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
            let conn = Arc::new(conn);
            for _ in 0..CALLERS {
                let (conn, frame, answered, stop) = (conn.clone(), frame.clone(), answered.clone(), stop.clone());
                callers
                    .push(tokio::spawn(async move { call_until_refused(&conn, frame, &answered, &stop, what).await }));
            }
        }
        Load { answered, stop, callers }
    }

    fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Every caller ended refused by the closing notice, none failed otherwise.
    async fn check(self, server: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut refused, mut answered, mut errors) = (0, 0, Vec::new());
        for caller in self.callers {
            let outcome = tokio::time::timeout(CALL_TIMEOUT * 2, caller)
                .await
                .unwrap_or_else(|_| panic!("a caller of {server} still waits"))
                .expect("caller task");
            if let Some(failure) = outcome.failed {
                panic!("a call to {server} failed rather than being answered or refused: {failure}");
            }
            assert!(outcome.refused, "a caller of {server} stopped without the closing notice");
            refused += 1;
            answered += outcome.answered;
            errors.extend(outcome.errors);
        }
        errors.sort();
        errors.dedup();
        eprintln!("{server}: {answered} calls answered (error answers: {errors:?}), {refused} refused by the notice");
    }
}

async fn call_until_refused(
    conn: &MuxConn,
    frame: Frame,
    answered: &AtomicU64,
    stop: &AtomicBool,
    what: &str,
) -> Outcome {
    let mut outcome = Outcome::default();
    let started = Instant::now();
    while outcome.answered < MAX_CALLS && started.elapsed() < MAX_LOAD {
        match conn.call(frame.clone(), CALL_TIMEOUT).await {
            Ok(answer) => match Response::from_frame(&answer) {
                Ok(Response::Error(e)) => outcome.errors.push(e.name().to_owned()),
                Ok(_) => {}
                Err(e) => {
                    outcome.failed = Some(format!("{what}: the answer does not decode: {e}"));
                    return outcome;
                }
            },
            Err(CallError::ShuttingDown { .. }) => {
                outcome.refused = true;
                return outcome;
            }
            Err(e) => {
                outcome.failed = Some(format!("{what}: {e}"));
                return outcome;
            }
        }
        outcome.answered += 1;
        answered.fetch_add(1, Ordering::Relaxed);
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    outcome.failed = Some(format!("{what}: still answered when the load ended, no closing notice"));
    outcome
}

/// A text-mode client sending `PING` in lockstep until the server says it is stopping;
/// how many lines were answered before, or what went wrong. After the notice, the
/// connection must end cleanly (no reset, nothing more).
async fn text_client(addr: String, pings: Arc<AtomicU64>) -> Result<u64, String> {
    let stream = tokio::net::TcpStream::connect(&addr).await.map_err(|e| format!("connect: {e}"))?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = String::new();
    write.write_all(harness::auth_line().as_bytes()).await.map_err(|e| format!("send AUTH: {e}"))?;
    lines.read_line(&mut line).await.map_err(|e| format!("read AUTH's answer: {e}"))?;
    let mut answered = 0;
    let started = Instant::now();
    while answered < MAX_CALLS && started.elapsed() < MAX_LOAD {
        line.clear();
        if let Err(e) = write.write_all(b"PING\n").await {
            return Err(format!("after {answered} answers, sending failed: {e}"));
        }
        match lines.read_line(&mut line).await {
            Ok(0) => return Err(format!("after {answered} answers, the connection ended without a notice")),
            Ok(_) if line == "OK PONG\n" => {
                answered += 1;
                pings.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) if line.starts_with("ERR ShuttingDown") => {
                let mut rest = Vec::new();
                return match lines.read_to_end(&mut rest).await {
                    Ok(_) if rest.is_empty() => Ok(answered),
                    Ok(_) => Err(format!("after the notice: {:?}", String::from_utf8_lossy(&rest))),
                    Err(e) => Err(format!("after the notice, the connection was not closed cleanly: {e}")),
                };
            }
            Ok(_) => return Err(format!("unexpected answer {line:?}")),
            Err(e) => return Err(format!("after {answered} answers, reading failed: {e}")),
        }
    }
    Err("the load ended before the balancer stopped".into())
}
