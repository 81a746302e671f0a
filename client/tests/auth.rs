//! Who may do what, on a real `shardline up` cluster with its generated credentials: an
//! unauthenticated connection gets nothing but PING, HELP and AUTH; a client-only user runs
//! no admin operation; wrong secrets are refused, ever more slowly; and control or peer
//! messages from a process without the cluster secret change nothing on a node.

mod harness;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use harness::{cli, test_auth, Up};
use shardline::{Client, ClientConfig, Credential, ErrorCode, Row, ShardId, Value};
use shardline_protocol::{frame, ControlRequest, ControlResponse, Frame, Message, PeerRequest, PeerResponse, Request};
use shardline_protocol::{Response, Secret, ServerAddr};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const STEP: Duration = Duration::from_secs(10);

/// Sends `frame` on `stream` and reads the one frame that answers it, within [`STEP`].
async fn exchange(stream: &mut TcpStream, frame: &Frame) -> Frame {
    let mut out = BytesMut::new();
    frame::encode(frame, &mut out);
    stream.write_all(&out).await.expect("send a frame");
    let mut input = BytesMut::new();
    tokio::time::timeout(STEP, async {
        loop {
            if let Some(answer) = frame::decode(&mut input, usize::MAX).expect("a valid answer") {
                return answer;
            }
            assert!(stream.read_buf(&mut input).await.expect("read") > 0, "the server closed the connection");
        }
    })
    .await
    .expect("an answer in time")
}

fn credential(name: &str) -> Credential {
    Credential::load(&test_auth().join(format!("{name}.credentials"))).expect("a generated credential")
}

fn cluster_credential() -> Credential {
    let secret = std::fs::read_to_string(test_auth().join("cluster.secret")).expect("the cluster secret");
    Credential::cluster(secret.trim())
}

fn auth_frame(c: &Credential) -> Frame {
    Request::Auth { user: c.user.clone(), secret: c.secret.clone() }.to_frame(1).unwrap()
}

async fn client_as(addr: &str, credential: Credential) -> Client {
    let config = ClientConfig { credential: Some(credential), retries: 0, ..ClientConfig::default() };
    Client::connect_with(addr.to_owned(), config).await.expect("a client")
}

fn response(frame: &Frame) -> Response {
    Response::from_frame(frame).expect("a Response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_authenticated_users_get_their_own_permissions() {
    let up = Up::start().await;
    let addr = up.addr();

    // Binary, no credential: Ping answers, Status and a read do not.
    let mut raw = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(response(&exchange(&mut raw, &Request::Ping.to_frame(1).unwrap()).await), Response::Pong);
    for request in
        [Request::Status, Request::Read { low: 0, high: 10, consistency: shardline_protocol::Consistency::Any }]
    {
        let answer = response(&exchange(&mut raw, &request.to_frame(2).unwrap()).await);
        assert!(matches!(answer, Response::Error(ErrorCode::Unauthenticated(_))), "{request:?}: {answer:?}");
    }
    // ... and once authenticated on the same connection, it is served.
    let answer = response(&exchange(&mut raw, &auth_frame(&credential("app"))).await);
    assert!(matches!(&answer, Response::Authenticated { user, .. } if user == "app"), "{answer:?}");
    let answer = response(
        &exchange(
            &mut raw,
            &Request::Read { low: 0, high: 10, consistency: shardline_protocol::Consistency::Any }.to_frame(3).unwrap(),
        )
        .await,
    );
    assert!(matches!(answer, Response::Rows { .. }), "{answer:?}");

    // Text mode: PING and HELP, but not STATUS, until AUTH.
    let text = TcpStream::connect(&addr).await.unwrap();
    let (read, mut write) = text.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut ask = async |line: &str| -> String {
        write.write_all(format!("{line}\n").as_bytes()).await.unwrap();
        let mut answer = String::new();
        loop {
            let l = tokio::time::timeout(STEP, lines.next_line()).await.expect("an answer").unwrap().expect("a line");
            answer.push_str(&l);
            answer.push('\n');
            if l.starts_with("OK") || l.starts_with("ERR") {
                return answer;
            }
        }
    };
    assert!(ask("PING").await.starts_with("OK PONG"));
    assert!(ask("HELP").await.contains("AUTH <user> <secret>"));
    assert!(ask("STATUS").await.starts_with("ERR Unauthenticated"));
    assert!(ask("WRITE 5 alice 1").await.starts_with("ERR Unauthenticated"));
    let app = credential("app");
    let answer = ask(&format!("AUTH app {}", app.secret.0)).await;
    assert!(answer.starts_with("OK authenticated as app (client)"), "{answer}");
    assert!(ask("WRITE 5 alice 1").await.starts_with("OK"));
    assert!(ask("RM 1").await.starts_with("ERR Forbidden"), "a client-only user removed a server");

    // The client-only user through the Rust client and the CLI: data yes, admin no.
    let c = client_as(&addr, credential("app")).await;
    c.write(&[Row::new(7, vec![Value::Str("bo".into()), Value::Int(2)])]).await.expect("app writes");
    assert_eq!(c.read_primary(7..=7).await.expect("app reads").len(), 1);
    for result in [c.remove_servers(1, &[]).await.map(|_| ()), c.failover(ShardId(1), None).await.map(|_| ())] {
        let e = result.expect_err("a client-only user ran an admin operation");
        assert!(matches!(e.code(), Some(ErrorCode::Forbidden(_))), "{e}");
    }
    let app_file = test_auth().join("app.credentials");
    let run = cli(&["--addr", &addr, "--credentials", app_file.to_str().unwrap(), "rm", "1"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("Forbidden"), "{run:?}");
    assert_eq!(up.client().await.status().await.unwrap().servers.len(), 6, "a server was removed");
    // The admin may.
    let run = cli(&["--addr", &addr, "status"]);
    assert_eq!(run.code, Some(0), "{run:?}");

    // Wrong secrets: refused, each answer later than the one before, closed after three.
    let wrong = Credential { user: "admin".into(), secret: Secret("not-the-secret".into()) };
    let mut raw = TcpStream::connect(&addr).await.unwrap();
    let mut took = Vec::new();
    for _ in 0..shardline_protocol::net::MAX_ATTEMPTS {
        let started = Instant::now();
        let answer = response(&exchange(&mut raw, &auth_frame(&wrong)).await);
        took.push(started.elapsed());
        assert!(matches!(answer, Response::Error(ErrorCode::Unauthenticated(_))), "{answer:?}");
    }
    eprintln!("wrong secrets answered after {took:?}");
    // Each answer waits at least its penalty: 100 ms, 200 ms, 400 ms (argon2 adds its own
    // time, which a loaded machine stretches, so only the lower bounds are asserted).
    for (i, t) in took.iter().enumerate() {
        let penalty = shardline_protocol::net::auth::penalty(i as u32 + 1);
        assert!(*t >= penalty, "refusal {} answered after {t:?}, before its {penalty:?} penalty", i + 1);
    }
    let mut rest = [0u8; 64];
    let closed = tokio::time::timeout(STEP, raw.read(&mut rest)).await.expect("closed in time");
    assert!(matches!(closed, Ok(0) | Err(_)), "the connection stayed open after {} refusals", took.len());
    let refused =
        Client::connect_with(addr.clone(), ClientConfig { credential: Some(wrong), ..ClientConfig::default() }).await;
    assert!(matches!(refused, Err(shardline::ClientError::Refused { .. })), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_and_peer_messages_without_the_cluster_secret_change_nothing() {
    let up = Up::start().await;
    let t = up.client().await.status().await.unwrap();
    let sh1 = t.shards.iter().find(|s| s.spec.id == ShardId(1)).unwrap();
    let primary = sh1.primary.clone().expect("sh1 has a primary");
    let node_addr = t.server(&primary).unwrap().addr.clone();
    let insider = client_as(&node_addr, cluster_credential()).await;
    let node_status = async || match insider.request(&Request::Status).await.expect("the node's status") {
        Response::Node(n) => n,
        other => panic!("not a node status: {other:?}"),
    };
    let before = node_status().await;
    let state = before.shard(ShardId(1)).expect("the primary holds sh1").clone();

    // What a forger would send: step the primary down at a higher term, drop the shard,
    // append an entry at a higher term.
    let forged = [
        ControlRequest::BecomeFollower {
            shard: ShardId(1),
            term: state.term + 10,
            primary: ServerAddr { name: "Forger".into(), addr: "127.0.0.1:1".into() },
        }
        .to_frame(11)
        .unwrap(),
        ControlRequest::DropShard { shard: ShardId(1) }.to_frame(12).unwrap(),
        PeerRequest::Append {
            shard: ShardId(1),
            term: state.term + 10,
            primary: "Forger".into(),
            prev: state.last,
            entries: vec![],
            commit: state.commit_index + 100,
            echo: None,
        }
        .to_frame(13)
        .unwrap(),
    ];
    // Without any credential, and with the admin's (who is not the cluster).
    for who in [None, Some(credential("admin"))] {
        let mut raw = TcpStream::connect(&node_addr).await.unwrap();
        if let Some(c) = &who {
            let answer = response(&exchange(&mut raw, &auth_frame(c)).await);
            assert!(matches!(answer, Response::Authenticated { .. }), "{answer:?}");
        }
        for f in &forged {
            let answer = exchange(&mut raw, f).await;
            let code = match (ControlResponse::from_frame(&answer), PeerResponse::from_frame(&answer)) {
                (Ok(ControlResponse::Error(code)), _) | (_, Ok(PeerResponse::Error(code))) => code,
                other => panic!("a forged message was not refused: {other:?}"),
            };
            let expected = if who.is_none() { "Unauthenticated" } else { "Forbidden" };
            assert_eq!(code.name(), expected, "{code}");
        }
    }
    let after = node_status().await;
    let now = after.shard(ShardId(1)).expect("sh1 is still on its primary");
    assert_eq!((now.role, now.term), (state.role, state.term), "a forged message changed the replica");
    assert_eq!(after.shards.len(), before.shards.len());
    // The primary still takes writes.
    let c = up.client().await;
    c.write(&[Row::new(3, vec![Value::Str("ok".into()), Value::Int(1)])]).await.expect("a write after the forgeries");
}
