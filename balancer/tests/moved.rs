//! A write in flight to a primary that hangs (it takes the request and never answers, as a
//! SIGSTOPped or cut-off process does) is moved to the new primary as soon as the topology
//! names one, instead of waiting out the balancer's call timeout; it is applied once.

mod harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use harness::{within, Budget, Cluster, Layout};
use shardline_protocol::{Request, Response, Row, ServerInfo, Value, WriteBatch};
use tokio::io::AsyncReadExt;

/// Far longer than the test may take: a write that waited it out would fail the test.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_hung_primary_moves_to_its_successor() {
    let mut cluster = Cluster::start(Layout::three_by_three(), |cfg| {
        cfg.call_timeout = CALL_TIMEOUT;
        cfg.retry_deadline = CALL_TIMEOUT;
    })
    .await;
    within(Duration::from_secs(60), "moved write", scenario(&mut cluster)).await;
}

/// A server that takes connections and requests and never answers; says when a request came.
async fn hung_server() -> (String, Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let got = Arc::new(AtomicBool::new(false));
    let seen = got.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    seen.store(true, Ordering::Relaxed);
                }
            });
        }
    });
    (addr, got)
}

async fn scenario(cluster: &mut Cluster) {
    let (hung_addr, got) = hung_server().await;
    let real = cluster.layout.shards[0].2;
    let version = cluster.coordinator.update(|t| {
        t.servers.push(ServerInfo { name: "Hung".into(), addr: hung_addr, healthy: true, last_heartbeat_ms: Some(0) });
        t.shards[0].primary = Some("Hung".into());
    });
    cluster.wait_for_topology(version).await;

    let mut client = cluster.client().await;
    let row = Row::new(7, vec![Value::Str("moved".into()), Value::Int(7)]);
    let batch = WriteBatch::encode(0, 0, std::slice::from_ref(&row)).expect("encodes");
    let write = tokio::spawn(async move { client.call(&Request::Write(batch)).await });

    let mut budget = Budget::new("the write reaching the hung primary", Duration::from_secs(10));
    while !got.load(Ordering::Relaxed) {
        assert!(budget.retry().await, "{}", budget.spent());
    }
    let name = cluster.nodes[real].name().to_owned();
    cluster.coordinator.update(|t| t.shards[0].primary = Some(name));

    let answer = within(Duration::from_secs(30), "the moved write", write).await.expect("write task");
    assert!(matches!(answer, Response::Committed(_)), "the write, moved: {answer:?}");
    let mut c = cluster.client().await;
    let all = c.call(&Request::Read { low: 0, high: 99, consistency: shardline_protocol::Consistency::Primary }).await;
    assert!(matches!(&all, Response::Rows { rows, .. } if rows == &vec![row]), "the row, once: {all:?}");
}
