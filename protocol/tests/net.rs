//! `net::serve` on real sockets: pipelined frames answered inline and deferred on one
//! connection, the in-flight limit, a corrupt stream, the text mode, and answers and
//! requests over the frame limit (typed errors; a connection that fails is closed).
#![cfg(feature = "net")]

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use shardline_protocol::net::{self, CallError, Limits, MuxConn, Service};
use shardline_protocol::{frame, ErrorCode, Frame, Message, Request, Response, Row, Value, DEFAULT_MAX_PAYLOAD};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Pings are answered inline; `Read { low, high }` after `low` ms with one row keyed `high`;
/// a `Read` with a negative `low` at once, with one row of `-low` bytes.
struct Echo;

/// One row of about `bytes` bytes.
fn wide(key: i64, bytes: i64) -> Response {
    Response::Rows { at: Vec::new(), rows: vec![Row::new(key, vec![Value::Str("x".repeat(bytes as usize))])] }
}

impl Service for Echo {
    async fn frame(&self, frame: Frame) -> Frame {
        let id = frame.request_id;
        let answer = match Request::from_frame(&frame) {
            Ok(Request::Read { low, high, .. }) if low < 0 => wide(high, -low),
            Ok(Request::Read { low, high, .. }) => {
                tokio::time::sleep(Duration::from_millis(low as u64)).await;
                Response::Rows { at: Vec::new(), rows: vec![Row::new(high, vec![])] }
            }
            _ => Response::Error(ErrorCode::BadRequest("no".into())),
        };
        answer.to_frame(id).unwrap()
    }

    fn try_frame(&self, frame: Frame) -> Result<Frame, Frame> {
        match Request::from_frame(&frame) {
            Ok(Request::Ping) => Ok(Response::Pong.to_frame(frame.request_id).unwrap()),
            _ => Err(frame),
        }
    }

    async fn text(&self, request: Request) -> Response {
        match request {
            Request::Ping => Response::Pong,
            Request::Read { low, high, .. } if low < 0 => wide(high, -low),
            _ => Response::Error(ErrorCode::BadRequest("no".into())),
        }
    }
}

async fn start(limits: Limits) -> (String, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(net::serve(listener, Arc::new(Echo), limits, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

fn read(delay_ms: i64, tag: i64, id: u64) -> Frame {
    Request::Read { low: delay_ms, high: tag, consistency: shardline_protocol::Consistency::Any }.to_frame(id).unwrap()
}

/// Reads frames until `n` have arrived or the peer closes; at most 10 s.
async fn answers(stream: &mut TcpStream, n: usize) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        while let Some(f) = frame::decode(&mut buf, DEFAULT_MAX_PAYLOAD).unwrap() {
            out.push(f);
        }
        if out.len() >= n {
            break;
        }
        let read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await.expect("answers in time");
        if read.unwrap() == 0 {
            break;
        }
    }
    out
}

async fn send(stream: &mut TcpStream, frames: &[Frame]) {
    let mut buf = BytesMut::new();
    for f in frames {
        frame::encode(f, &mut buf);
    }
    stream.write_all(&buf).await.unwrap();
}

#[tokio::test]
async fn a_pipelined_batch_is_answered_inline_and_deferred() {
    let (addr, _stop) = start(Limits::default()).await;
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    // Slow reads first, pings after them: the pings are answered at once, ahead.
    let mut batch: Vec<Frame> = (0..20).map(|i| read(60 - 2 * i, i, 100 + i as u64)).collect();
    batch.extend((0..20).map(|i| Request::Ping.to_frame(i).unwrap()));
    send(&mut stream, &batch).await;
    let got = answers(&mut stream, 40).await;
    assert_eq!(got.len(), 40);
    for f in &got[..20] {
        assert!(f.request_id < 20, "pings come first: {}", f.request_id);
        assert_eq!(Response::from_frame(f).unwrap(), Response::Pong);
    }
    for f in &got[20..] {
        let tag = f.request_id as i64 - 100;
        assert_eq!(
            Response::from_frame(f).unwrap(),
            Response::Rows { at: Vec::new(), rows: vec![Row::new(tag, vec![])] }
        );
    }
}

#[tokio::test]
async fn past_the_in_flight_limit_requests_are_refused_at_once() {
    let limits = Limits { max_in_flight: 4, ..Limits::default() };
    let (addr, _stop) = start(limits).await;
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let batch: Vec<Frame> = (0..10).map(|i| read(200, i, i as u64)).collect();
    send(&mut stream, &batch).await;
    let got = answers(&mut stream, 10).await;
    assert_eq!(got.len(), 10);
    let busy =
        got.iter().filter(|f| matches!(Response::from_frame(f), Ok(Response::Error(ErrorCode::Overloaded(_))))).count();
    assert_eq!(busy, 6);
    // A ping is still answered inline: the limit counts waiting requests only.
    send(&mut stream, &[Request::Ping.to_frame(77).unwrap()]).await;
    assert_eq!(answers(&mut stream, 1).await[0].request_id, 77);
}

#[tokio::test]
async fn a_corrupt_stream_gets_its_answers_then_an_error_then_is_closed() {
    let (addr, _stop) = start(Limits::default()).await;
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let mut buf = BytesMut::new();
    frame::encode(&read(30, 5, 9), &mut buf);
    let mut bad = BytesMut::new();
    frame::encode(&Request::Ping.to_frame(1).unwrap(), &mut bad);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    buf.extend_from_slice(&bad);
    stream.write_all(&buf).await.unwrap();
    let got = answers(&mut stream, 3).await;
    assert_eq!(got.len(), 2, "the deferred answer and one error, then the end");
    assert!(matches!(Response::from_frame(&got[0]), Ok(Response::Error(ErrorCode::BadRequest(_)))));
    assert_eq!(got[1].request_id, 9);
}

#[tokio::test]
async fn the_text_mode_still_answers_on_the_same_port() {
    let (addr, _stop) = start(Limits::default()).await;
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream.write_all(b"PING\nQUIT\n").await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut text)).await.unwrap().unwrap();
    assert!(text.starts_with("OK"), "{text}");
}

const SMALL: usize = 4096;

#[tokio::test]
async fn an_answer_over_the_limit_is_too_large_and_the_connection_serves_on() {
    let (addr, _stop) = start(Limits { max_payload: SMALL, ..Limits::default() }).await;
    let conn = MuxConn::connect(Arc::from(addr.as_str()), Duration::from_secs(5), SMALL).await.unwrap();
    let started = std::time::Instant::now();
    let big = conn.call(read(-10_000, 1, 0), Duration::from_secs(5)).await.unwrap();
    match Response::from_frame(&big) {
        Ok(Response::Error(ErrorCode::TooLarge { len, max })) => assert!(len > 10_000 && max == SMALL as u64),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2), "answered at once, not after a timeout");
    // The same connection carries on: a small answer and a ping.
    let small = conn.call(read(-100, 2, 0), Duration::from_secs(5)).await.unwrap();
    assert_eq!(Response::from_frame(&small).unwrap(), wide(2, 100));
    let pong = conn.call(Request::Ping.to_frame(0).unwrap(), Duration::from_secs(5)).await.unwrap();
    assert_eq!(Response::from_frame(&pong).unwrap(), Response::Pong);
    assert!(conn.is_open());
}

#[tokio::test]
async fn an_answer_over_the_callers_limit_fails_its_call_and_closes_the_connection() {
    // The server allows more than the caller does (mismatched limits).
    let (addr, _stop) = start(Limits::default()).await;
    let conn = Arc::new(MuxConn::connect(Arc::from(addr.as_str()), Duration::from_secs(5), SMALL).await.unwrap());
    let slow = tokio::spawn({
        let conn = conn.clone();
        async move { conn.call(read(2_000, 3, 0), Duration::from_secs(10)).await }
    });
    // Let the slow call go out first, so it is in flight when the connection closes.
    for _ in 0..100 {
        if conn.in_flight() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = std::time::Instant::now();
    let big = conn.call(read(-10_000, 1, 0), Duration::from_secs(10)).await;
    assert!(matches!(big, Err(CallError::AnswerTooLarge { max: SMALL, .. })), "{big:?}");
    let slow = slow.await.unwrap();
    assert!(matches!(slow, Err(CallError::Closed { .. })), "the other call fails at once: {slow:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "no call waited for its timeout");
    assert!(!conn.is_open(), "the connection is closed, so a pool replaces it");
    let later = conn.call(Request::Ping.to_frame(0).unwrap(), Duration::from_secs(10)).await;
    assert!(matches!(later, Err(CallError::Closed { .. })), "{later:?}");
    let code = big.unwrap_err().to_code(None);
    assert!(matches!(code, ErrorCode::TooLarge { max, .. } if max == SMALL as u64), "{code:?}");
}

#[tokio::test]
async fn a_request_over_the_limit_is_answered_too_large_then_closed() {
    let (addr, _stop) = start(Limits { max_payload: SMALL, ..Limits::default() }).await;
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let big = Request::Update { client_id: 1, seq: 1, row: Row::new(5, vec![Value::Str("y".repeat(2 * SMALL))]) }
        .to_frame(42)
        .unwrap();
    send(&mut stream, &[big]).await;
    let got = answers(&mut stream, 2).await;
    assert_eq!(got.len(), 1, "one answer, then the end of the stream");
    assert_eq!(got[0].request_id, 42, "the answer names the request");
    let answer = Response::from_frame(&got[0]);
    assert!(
        matches!(answer, Ok(Response::Error(ErrorCode::TooLarge { max, .. })) if max == SMALL as u64),
        "{answer:?}"
    );
}

#[tokio::test]
async fn the_text_mode_answers_too_large_under_the_same_limit() {
    let (addr, _stop) = start(Limits { max_payload: SMALL, ..Limits::default() }).await;
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream.write_all(b"READ -10000 1\nREAD -10 2\nQUIT\n").await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut text)).await.unwrap().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("ERR TooLarge: "), "{text}");
    assert_eq!(lines[1..], ["2 xxxxxxxxxx", "OK 1 row"], "{text}");
}
