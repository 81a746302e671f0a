//! TLS end to end on a `shardline up --tls` cluster: the CLI writes and reads back over
//! TLS; a CLI or client trusting another CA is refused with a clear error; a plaintext
//! client on the TLS port is refused at once (no hang); the plaintext port the operator
//! asked for (`--plain-port`) serves `nc`, still behind AUTH; and the peer links are TLS:
//! the nodes and the coordinator refuse plaintext, so the replication and control traffic
//! the cluster needed to settle and to acknowledge writes went over TLS.

mod harness;

use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use harness::{cli, free_port, test_auth, Up};
use shardline::{Client, ClientConfig, ClientError, ClientTls, Credential, ErrorCode};
use shardline_protocol::{frame, Message, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const STEP: Duration = Duration::from_secs(10);

/// `shardline auth init DIR --tls`: the CA of the certificates made in DIR/tls.
fn tls_init(dir: &std::path::Path) -> PathBuf {
    let run = cli(&["auth", "init", dir.to_str().unwrap(), "--tls"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    dir.join("tls/ca.pem")
}

/// Sends `bytes` in the clear and reads until the server closes (within [`STEP`]).
async fn plaintext_exchange(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(bytes).await.unwrap();
    let mut all = Vec::new();
    let read = tokio::time::timeout(STEP, raw.read_to_end(&mut all)).await;
    assert!(read.is_ok(), "{addr} neither answered nor closed within {STEP:?}");
    all
}

/// What a TLS port answers a plaintext `Ping` frame: the one error frame's code.
async fn plaintext_ping(addr: &str) -> ErrorCode {
    let mut ping = BytesMut::new();
    frame::encode(&Request::Ping.to_frame(1).unwrap(), &mut ping);
    let mut answer = BytesMut::from(&plaintext_exchange(addr, &ping).await[..]);
    let refusal = frame::decode(&mut answer, 1 << 20).unwrap().expect("an error frame before the close");
    match Response::from_frame(&refusal) {
        Ok(Response::Error(code)) => code,
        other => panic!("{addr} answered a plaintext Ping with {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_over_tls_and_every_port_refusing_plaintext() {
    let ca = tls_init(test_auth());
    let ca_arg = ca.to_str().unwrap().to_owned();
    // This process's own clients (the harness's readiness checks) trust the local CA.
    shardline_protocol::net::tls::set_outgoing(Some(ClientTls::load(&ca).unwrap()));
    let plain_port = free_port();
    let up = Up::start_with(&["--tls", "--plain-port", &plain_port.to_string()]).await;
    let addr = up.addr();

    // The CLI over TLS writes, then reads the row back.
    let run = cli(&["--addr", &addr, "--tls-ca", &ca_arg, "write", "42", "alice", "77"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let run = cli(&["--addr", &addr, "--tls-ca", &ca_arg, "--json", "read", "42", "42"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("alice") && run.stdout.contains("77"), "{run:?}");

    // Another CA: refused, saying why, by the CLI and by the Rust client.
    let stranger = tempfile::tempdir().unwrap();
    let other_ca = tls_init(stranger.path());
    let run = cli(&["--addr", &addr, "--tls-ca", other_ca.to_str().unwrap(), "read", "42", "42"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("TLS with") && run.stderr.contains("UnknownIssuer"), "{run:?}");
    assert!(run.stderr.contains("hint: give --tls-ca"), "{run:?}");
    let config = ClientConfig { tls: Some(ClientTls::load(&other_ca).unwrap()), ..ClientConfig::default() };
    let refused = Client::connect_with(addr.clone(), config).await.map(|_| ());
    assert!(matches!(refused, Err(ClientError::Tls { .. })), "{refused:?}");

    // Plaintext on the TLS port: the CLI fails at once with the reason, raw frames and
    // text get one refusal and the close.
    let run = cli(&["--addr", &addr, "--timeout", "30", "read", "42", "42"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("this port speaks TLS"), "{run:?}");
    let code = plaintext_ping(&addr).await;
    assert!(matches!(&code, ErrorCode::BadRequest(why) if why.contains("speaks TLS")), "{code:?}");
    let line = String::from_utf8(plaintext_exchange(&addr, b"PING\n").await).unwrap();
    assert!(line.starts_with("ERR BadRequest") && line.contains("speaks TLS"), "{line:?}");

    // The plaintext port the operator opened: nc works there, behind AUTH as everywhere.
    let plain = format!("127.0.0.1:{plain_port}");
    let answer = String::from_utf8(plaintext_exchange(&plain, b"PING\nSTATUS\nQUIT\n").await).unwrap();
    let lines: Vec<&str> = answer.lines().collect();
    assert_eq!(lines.first(), Some(&"OK PONG"), "{answer}");
    assert!(lines.get(1).is_some_and(|l| l.starts_with("ERR Unauthenticated")), "{answer}");

    // Peer links: every node and the coordinator speak TLS only; with TLS and the cluster
    // secret, a node answers.
    let t = up.client().await.status().await.unwrap();
    assert!(!t.servers.is_empty());
    let secret = std::fs::read_to_string(test_auth().join("cluster.secret")).unwrap();
    for server in &t.servers {
        let code = plaintext_ping(&server.addr).await;
        assert!(matches!(&code, ErrorCode::BadRequest(why) if why.contains("speaks TLS")), "{}: {code:?}", server.name);
    }
    let coordinator = format!("127.0.0.1:{}", up.coordinator_port);
    let code = plaintext_ping(&coordinator).await;
    assert!(matches!(&code, ErrorCode::BadRequest(why) if why.contains("speaks TLS")), "coordinator: {code:?}");
    let insider = ClientConfig { credential: Some(Credential::cluster(secret.trim())), ..ClientConfig::default() };
    let node = Client::connect_with(t.servers[0].addr.clone(), insider).await.expect("a TLS client of a node");
    let answer = node.request(&Request::Status).await.expect("the node's status over TLS");
    assert!(matches!(answer, Response::Node(_)), "{answer:?}");
}
