//! The node connections on their own: many calls multiplexed over one connection with
//! answers out of order, a dead connection failing its pending calls at once, and the pool
//! replacing it on the next call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::future::join_all;
use shardline_balancer::error::CallError;
use shardline_balancer::pool::Pool;
use shardline_protocol::net::MuxConn;
use shardline_protocol::net::{self, Limits, Service};
use shardline_protocol::{frame, Frame, Message, Request, Response, Row, DEFAULT_MAX_PAYLOAD};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Answers `Read { low, high }` after `low` milliseconds with one row keyed `high`.
struct Slow;

impl Service for Slow {
    async fn frame(&self, frame: Frame) -> Frame {
        let id = frame.request_id;
        let answer = match Request::from_frame(&frame) {
            Ok(Request::Read { low, high, .. }) => {
                tokio::time::sleep(Duration::from_millis(low as u64)).await;
                Response::Rows { at: Vec::new(), rows: vec![Row::new(high, vec![])] }
            }
            _ => Response::Pong,
        };
        answer.to_frame(id).unwrap()
    }

    async fn text(&self, _: Request) -> Response {
        Response::Pong
    }
}

fn read(delay_ms: i64, tag: i64) -> Frame {
    Request::Read { low: delay_ms, high: tag, consistency: shardline_protocol::Consistency::Any }.to_frame(999).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_out_of_order_reach_their_callers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: Arc<str> = Arc::from(listener.local_addr().unwrap().to_string());
    let server = tokio::spawn(net::serve(listener, Arc::new(Slow), Limits::default(), std::future::pending()));
    let conn = MuxConn::connect(addr, Duration::from_secs(5), DEFAULT_MAX_PAYLOAD).await.unwrap();
    let started = Instant::now();
    // The first call is answered last.
    let calls = (0..50i64).map(|i| conn.call(read((50 - i) * 4, i), Duration::from_secs(10)));
    let answers = tokio::time::timeout(Duration::from_secs(20), join_all(calls)).await.expect("all answered");
    for (i, answer) in answers.into_iter().enumerate() {
        let answer = answer.unwrap();
        assert_eq!(
            Response::from_frame(&answer).unwrap(),
            Response::Rows { at: Vec::new(), rows: vec![Row::new(i as i64, vec![])] }
        );
    }
    // Concurrent, not one after another (that would take 50 * 102 ms).
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    assert_eq!(conn.in_flight(), 0);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_connection_fails_its_calls_and_is_replaced() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: Arc<str> = Arc::from(listener.local_addr().unwrap().to_string());
    // The first connection is dropped as soon as a request arrives; later ones answer Pong.
    let server = tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut stream, _)) = listener.accept().await {
            let drop_it = std::mem::take(&mut first);
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                loop {
                    match frame::decode(&mut buf, DEFAULT_MAX_PAYLOAD) {
                        Ok(Some(_)) if drop_it => return,
                        Ok(Some(f)) => {
                            let mut out = BytesMut::new();
                            frame::encode(&Response::Pong.to_frame(f.request_id).unwrap(), &mut out);
                            if stream.write_all(&out).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        Ok(None) => {}
                        Err(_) => return,
                    }
                    if matches!(stream.read_buf(&mut buf).await, Ok(0) | Err(_)) {
                        return;
                    }
                }
            });
        }
    });
    let pool = Pool::new(1, Duration::from_secs(5), DEFAULT_MAX_PAYLOAD);
    let ping = || Request::Ping.to_frame(7).unwrap();
    let started = Instant::now();
    let failed = pool.call(&addr, ping(), Duration::from_secs(10)).await;
    assert!(matches!(failed, Err(CallError::Closed { .. })), "{failed:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "failed only at the timeout");
    let mut answered = None;
    for _ in 0..100 {
        match pool.call(&addr, ping(), Duration::from_secs(10)).await {
            Ok(answer) => {
                answered = Some(answer);
                break;
            }
            // The old connection may still look open for a moment.
            Err(CallError::Closed { .. }) => tokio::task::yield_now().await,
            Err(e) => panic!("{e}"),
        }
    }
    let answer = answered.expect("the pool reconnected");
    assert_eq!(Response::from_frame(&answer).unwrap(), Response::Pong);
    server.abort();

    // Nobody listening: the connect error comes back, and fast.
    let nowhere: Arc<str> = Arc::from("127.0.0.1:1");
    let refused = pool.call(&nowhere, ping(), Duration::from_secs(10)).await;
    assert!(matches!(refused, Err(CallError::Connect { .. })), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_times_out_and_the_connection_carries_on() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: Arc<str> = Arc::from(listener.local_addr().unwrap().to_string());
    let server = tokio::spawn(net::serve(listener, Arc::new(Slow), Limits::default(), std::future::pending()));
    let conn = MuxConn::connect(addr, Duration::from_secs(5), DEFAULT_MAX_PAYLOAD).await.unwrap();
    // Expired by the connection's deadline sweep, not a timer of its own.
    let late = conn.call(read(2000, 1), Duration::from_millis(100));
    let late = tokio::time::timeout(Duration::from_secs(1), late).await.expect("the sweep fails it in time");
    assert!(matches!(late, Err(CallError::Timeout { .. })), "{late:?}");
    assert_eq!(conn.in_flight(), 0);
    let answer = conn.call(read(1, 7), Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        Response::from_frame(&answer).unwrap(),
        Response::Rows { at: Vec::new(), rows: vec![Row::new(7, vec![])] }
    );
    server.abort();
}
