//! `net::serve_ports` with TLS on real sockets: pipelined calls and the text mode over
//! TLS, a client trusting another CA refused, plaintext on a TLS port refused at once (in
//! the peer's own language), a TLS client on a plaintext port failing at once, and the
//! plaintext port an operator may open beside a TLS one.
#![cfg(feature = "net")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use shardline_protocol::net::tls::{ClientTls, ServerTls};
use shardline_protocol::net::{self, CallError, Limits, MuxConn, Outgoing, Ports, Service, Stream};
use shardline_protocol::{frame, ErrorCode, Frame, Message, Request, Response, Row};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const STEP: Duration = Duration::from_secs(5);

/// Answers `Read { high, .. }` with one row keyed `high`, and `Ping` with `Pong`.
struct Echo;

impl Service for Echo {
    async fn frame(&self, frame: Frame) -> Frame {
        let answer = match Request::from_frame(&frame) {
            Ok(Request::Read { high, .. }) => Response::Rows { at: Vec::new(), rows: vec![Row::new(high, vec![])] },
            Ok(Request::Ping) => Response::Pong,
            _ => Response::Error(ErrorCode::BadRequest("no".into())),
        };
        answer.to_frame(frame.request_id).unwrap()
    }

    async fn text(&self, request: Request) -> Response {
        match request {
            Request::Ping => Response::Pong,
            _ => Response::Error(ErrorCode::BadRequest("no".into())),
        }
    }
}

/// A CA (its certificate written to `dir/<name>-ca.pem`) and, if `server`, a certificate
/// it signed for 127.0.0.1 (`dir/<name>.pem`, `dir/<name>.key`).
fn make_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, format!("{name} CA"));
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &issuer).unwrap();
    let paths = (dir.join(format!("{name}-ca.pem")), dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shardline-tls-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Serves [`Echo`] with TLS (and a plaintext port beside it if `plain`); the CA to trust.
async fn start_tls(dir: &Path, plain: bool) -> (String, Option<String>, ClientTls) {
    let (ca, cert, key) = make_ca(dir, "good");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let plain = if plain { Some(TcpListener::bind("127.0.0.1:0").await.unwrap()) } else { None };
    let plain_addr = plain.as_ref().map(|l| l.local_addr().unwrap().to_string());
    let ports = Ports { listener, tls: Some(ServerTls::load(&cert, &key).unwrap()), plain };
    let gate = Arc::new(net::auth::Gate::open());
    tokio::spawn(net::serve_ports(ports, Arc::new(Echo), Limits::default(), gate, std::future::pending()));
    (addr, plain_addr, ClientTls::load(&ca).unwrap())
}

fn with_tls(tls: ClientTls) -> Outgoing {
    Outgoing { tls: Some(tls), credential: None }
}

/// Sends `bytes` on a plaintext connection and reads everything until the server closes.
async fn plaintext_exchange(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(bytes).await.unwrap();
    let mut all = Vec::new();
    let read = tokio::time::timeout(STEP, raw.read_to_end(&mut all)).await;
    assert!(read.is_ok(), "the server neither answered nor closed within {STEP:?}");
    all
}

/// Writes a text line and reads the answer line.
async fn text_line(stream: &mut Stream, line: &str) -> String {
    stream.write_all(line.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\n") {
        let n = tokio::time::timeout(STEP, stream.read(&mut byte)).await.expect("an answer in time").unwrap();
        assert!(n > 0, "closed before the answer ended: {:?}", String::from_utf8_lossy(&got));
        got.push(byte[0]);
    }
    String::from_utf8(got).unwrap()
}

#[tokio::test]
async fn calls_and_the_text_mode_work_over_tls() {
    let dir = temp_dir("calls");
    let (addr, _, tls) = start_tls(&dir, false).await;
    let mux = Arc::new(
        MuxConn::connect_as(Arc::from(addr.as_str()), STEP, 1 << 20, 64, &with_tls(tls.clone())).await.unwrap(),
    );
    let calls = (0..200i64).map(|i| {
        let mux = mux.clone();
        async move {
            let ask = Request::Read { low: 0, high: i, consistency: shardline_protocol::Consistency::Any }
                .to_frame(0)
                .unwrap();
            (i, Response::from_frame(&mux.call(ask, STEP).await.unwrap()).unwrap())
        }
    });
    for (i, answer) in futures::future::join_all(calls).await {
        assert_eq!(answer, Response::Rows { at: Vec::new(), rows: vec![Row::new(i, vec![])] }, "call {i}");
    }
    net::tls::set_outgoing(Some(tls.clone()));
    let mut conn = net::Conn::connect(&addr, STEP, 1 << 20).await.expect("a Conn over this process's TLS");
    let pong: Response = conn.call(&Request::Ping, STEP).await.unwrap();
    assert_eq!(pong, Response::Pong);
    let mut text = tls.connect(&addr, TcpStream::connect(&addr).await.unwrap()).await.unwrap();
    assert!(text.is_tls());
    assert_eq!(text_line(&mut text, "PING\n").await, "OK PONG\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_client_trusting_another_ca_is_refused() {
    let dir = temp_dir("wrong-ca");
    let (addr, _, _) = start_tls(&dir, false).await;
    let (other_ca, _, _) = make_ca(&dir, "other");
    let other = ClientTls::load(&other_ca).unwrap();
    let refused = MuxConn::connect_as(Arc::from(addr.as_str()), STEP, 1 << 20, 64, &with_tls(other)).await;
    match refused {
        Err(CallError::Tls { reason, .. }) => assert!(reason.contains("UnknownIssuer"), "{reason}"),
        other => panic!("a server whose certificate another CA signed was trusted: {other:?}"),
    }
    assert!(!CallError::Tls { addr, reason: String::new() }.is_retryable());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn plaintext_on_a_tls_port_is_refused_at_once_in_its_own_language() {
    let dir = temp_dir("plaintext");
    let (addr, _, _) = start_tls(&dir, false).await;
    // Frames: one error frame that says why, then the close.
    let mut ping = BytesMut::new();
    frame::encode(&Request::Ping.to_frame(1).unwrap(), &mut ping);
    let mut answer = BytesMut::from(&plaintext_exchange(&addr, &ping).await[..]);
    let refusal = frame::decode(&mut answer, 1 << 20).unwrap().expect("an error frame");
    match Response::from_frame(&refusal).unwrap() {
        Response::Error(ErrorCode::BadRequest(why)) => assert!(why.contains("speaks TLS"), "{why}"),
        other => panic!("a plaintext frame on a TLS port was answered {other:?}"),
    }
    assert!(answer.is_empty(), "more than the refusal: {answer:?}");
    // Text: one line that says why, then the close.
    let line = String::from_utf8(plaintext_exchange(&addr, b"PING\n").await).unwrap();
    assert!(line.starts_with("ERR BadRequest") && line.contains("this port speaks TLS"), "{line:?}");
    assert_eq!(line.lines().count(), 1, "more than the refusal: {line:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_tls_client_on_a_plaintext_port_fails_at_once() {
    let dir = temp_dir("tls-on-plain");
    let (_, plain, tls) = start_tls(&dir, true).await;
    let plain = plain.expect("a plaintext port");
    // A hang would end in the connect timeout (`Connect`), not in a failed handshake.
    let failed = MuxConn::connect_as(Arc::from(plain.as_str()), STEP, 1 << 20, 64, &with_tls(tls)).await;
    assert!(matches!(failed, Err(CallError::Tls { .. })), "{failed:?}");
    // The plaintext port itself serves in the clear: `nc` works there.
    let mut raw = Stream::Plain(TcpStream::connect(&plain).await.unwrap());
    assert_eq!(text_line(&mut raw, "PING\n").await, "OK PONG\n");
    std::fs::remove_dir_all(&dir).unwrap();
}
