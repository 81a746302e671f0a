//! The topology subscription: it follows pushes, re-subscribes when the coordinator drops
//! the connection, and never goes back to an older version.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use shardline_balancer::config::BalancerConfig;
use shardline_balancer::topology::{follow, TopologyCache};
use shardline_protocol::{frame, Message, Request, Response, Topology, DEFAULT_MAX_PAYLOAD};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads one frame (the subscription request) and checks it.
async fn expect_subscribe(stream: &mut TcpStream) -> u64 {
    let mut buf = BytesMut::new();
    for _ in 0..100 {
        if let Some(f) = frame::decode(&mut buf, DEFAULT_MAX_PAYLOAD).unwrap() {
            assert_eq!(Request::from_frame(&f).unwrap(), Request::SubscribeTopology);
            return f.request_id;
        }
        assert!(stream.read_buf(&mut buf).await.unwrap() > 0, "closed");
    }
    panic!("no request");
}

async fn push(stream: &mut TcpStream, id: u64, version: u64) {
    let t = Topology { version, ..Topology::default() };
    let mut out = BytesMut::new();
    frame::encode(&Response::Topology(t).to_frame(id).unwrap(), &mut out);
    stream.write_all(&out).await.unwrap();
}

async fn wait_version(cache: &TopologyCache, version: u64) {
    let wait = cache.wait_newer(version - 1, Duration::from_secs(10));
    wait.await;
    assert_eq!(cache.current().version(), version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_pushes_across_reconnects_and_never_goes_back() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let cache = Arc::new(TopologyCache::new(&addr));
    let follower = tokio::spawn(follow(cache.clone(), BalancerConfig::new(&addr)));
    let scenario = async {
        // First subscription: version 1 at once, then a push of 2, then the coordinator
        // drops the connection.
        let (mut first, _) = listener.accept().await.unwrap();
        let id = expect_subscribe(&mut first).await;
        push(&mut first, id, 1).await;
        wait_version(&cache, 1).await;
        push(&mut first, id, 2).await;
        wait_version(&cache, 2).await;
        drop(first);

        // The balancer subscribes again; a restarted coordinator that answers an older
        // version is not followed back, a newer push is.
        let (mut second, _) = listener.accept().await.unwrap();
        let id = expect_subscribe(&mut second).await;
        push(&mut second, id, 1).await;
        push(&mut second, id + 1, 9).await; // another request's id: ignored
        push(&mut second, id, 3).await;
        wait_version(&cache, 3).await;
    };
    tokio::time::timeout(Duration::from_secs(30), scenario).await.expect("scenario in time");
    follower.abort();
}
