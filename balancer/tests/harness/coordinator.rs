//! A fake coordinator: serves a topology the test sets, and pushes every change.
//!
//! `net::Service` answers each request once, and a subscription needs many answers on one
//! connection, so this serves frames itself: `SubscribeTopology` gets the topology at once
//! and then one push (same request id) per change; `GetTopology` and `Status` are answered
//! from the same topology; anything else is refused.

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use shardline_protocol::{ErrorCode, Frame, FrameCodec, Message, Request, Response, Topology};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};

/// The fake coordinator.
pub(crate) struct FakeCoordinator {
    addr: String,
    topology: watch::Sender<Topology>,
    server: JoinHandle<()>,
}

impl FakeCoordinator {
    /// Starts serving `topology` on a fresh `127.0.0.1:0` port.
    pub(crate) async fn start(topology: Topology) -> FakeCoordinator {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let (tx, _) = watch::channel(topology);
        let topology = tx.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, tx.subscribe()));
            }
        });
        FakeCoordinator { addr, topology, server }
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// The topology it serves now.
    pub(crate) fn topology(&self) -> Topology {
        self.topology.borrow().clone()
    }

    /// Changes the topology (the version is bumped) and pushes it to every subscriber.
    pub(crate) fn update(&self, change: impl FnOnce(&mut Topology)) -> u64 {
        let mut version = 0;
        self.topology.send_modify(|t| {
            change(t);
            t.version += 1;
            version = t.version;
        });
        version
    }
}

impl Drop for FakeCoordinator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(stream: TcpStream, mut topology: watch::Receiver<Topology>) {
    let (read, write) = stream.into_split();
    let mut frames = FramedRead::new(read, FrameCodec::default());
    let mut sink = FramedWrite::new(write, FrameCodec::default());
    let (tx, mut rx) = mpsc::channel::<Frame>(64);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if sink.send(&frame).await.is_err() {
                break;
            }
        }
    });
    let mut pusher: Option<JoinHandle<()>> = None;
    while let Some(Ok(frame)) = frames.next().await {
        let id = frame.request_id;
        let current = topology.borrow_and_update().clone();
        let answer = match Request::from_frame(&frame) {
            Ok(Request::SubscribeTopology) => {
                let (tx, mut updates) = (tx.clone(), topology.clone());
                pusher = Some(tokio::spawn(async move {
                    while updates.changed().await.is_ok() {
                        let t = updates.borrow_and_update().clone();
                        let push = Response::Topology(t).to_frame(id).expect("encodes");
                        if tx.send(push).await.is_err() {
                            break;
                        }
                    }
                }));
                Response::Topology(current)
            }
            Ok(Request::GetTopology { known_version }) if known_version >= current.version => {
                Response::TopologyUnchanged { version: current.version }
            }
            Ok(Request::GetTopology { .. }) | Ok(Request::Status) => Response::Topology(current),
            Ok(other) => {
                Response::Error(ErrorCode::BadRequest(format!("the fake coordinator does not serve {other:?}")))
            }
            Err(e) => Response::Error(ErrorCode::BadRequest(e.to_string())),
        };
        if tx.send(answer.to_frame(id).expect("encodes")).await.is_err() {
            break;
        }
    }
    if let Some(p) = pusher {
        p.abort();
    }
    drop(tx);
    let _ = writer.await;
}

/// Shared handle for tests that change the topology from several tasks.
pub(crate) type Coordinator = Arc<FakeCoordinator>;
