//! The coordinator's answers to balancers, the CLI and people at `nc`.

use std::sync::Arc;

use shardline_metrics::ops;
use shardline_protocol::net::Service;
use shardline_protocol::{kind, ErrorCode, Frame, Message, Request, Response};
use tokio::sync::mpsc;

use crate::cluster::Coordinator;

/// The coordinator as a network service.
#[derive(Debug, Clone)]
pub struct CoordinatorService(pub Arc<Coordinator>);

impl CoordinatorService {
    /// Answers one request.
    pub async fn request(&self, request: Request) -> Response {
        let c = &self.0;
        let result = match request {
            Request::Ping => Ok(Response::Pong),
            Request::Status | Request::SubscribeTopology => Ok(Response::Topology(c.topology())),
            Request::Stats => Ok(Response::Stats(c.stats())),
            Request::GetTopology { known_version } => {
                let t = c.topology();
                Ok(if t.version > known_version {
                    Response::Topology(t)
                } else {
                    Response::TopologyUnchanged { version: t.version }
                })
            }
            Request::Init(init) => c.init(init).await.map(Response::Topology),
            Request::AddServers(add) => c.add_servers(add).await.map(Response::Topology),
            Request::RemoveServers { n, servers } => c.remove_servers(n, servers).await.map(Response::Topology),
            Request::Failover { shard, to } => c.switchover(shard, to).await.map(Response::Topology),
            Request::Read { .. }
            | Request::ReadServer { .. }
            | Request::Write(_)
            | Request::Update { .. }
            | Request::Delete { .. }
            | Request::Log { .. } => Err(ErrorCode::BadRequest(
                "data operations go to the balancer (or a storage node), not to the coordinator".into(),
            )),
            Request::Auth { .. } => Err(ErrorCode::BadRequest("AUTH is answered by the connection, first".into())),
        };
        result.unwrap_or_else(Response::Error)
    }
}

impl CoordinatorService {
    /// Answers one request, counted and timed for `/metrics`.
    async fn counted(&self, request: Request) -> Response {
        let timer = self.0.requests().begin(ops::of_request(&request));
        let response = self.request(request).await;
        timer.finish(match &response {
            Response::Error(e) => e.name(),
            _ => shardline_metrics::OK,
        });
        response
    }
}

impl Service for CoordinatorService {
    async fn frame(&self, frame: Frame) -> Frame {
        let response = match Request::from_frame(&frame) {
            Ok(request) => self.counted(request).await,
            Err(e) => {
                self.0.requests().instant(ops::OTHER, "BadRequest");
                Response::Error(ErrorCode::BadRequest(e.to_string()))
            }
        };
        response.to_frame(frame.request_id).unwrap_or_else(|e| {
            Response::Error(ErrorCode::Internal(e.to_string())).to_frame(frame.request_id).expect("short error")
        })
    }

    async fn text(&self, request: Request) -> Response {
        self.counted(request).await
    }

    fn connection_opened(&self) {
        self.0.requests().connection_opened();
    }

    fn connection_closed(&self) {
        self.0.requests().connection_closed();
    }

    /// `SubscribeTopology`: the current topology at once, then every new version.
    fn stream(&self, frame: &Frame) -> Option<mpsc::Receiver<Frame>> {
        if frame.kind != kind::SUBSCRIBE_TOPOLOGY {
            return None;
        }
        let id = frame.request_id;
        let mut topology = self.0.subscribe();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut sent = None;
            loop {
                let t = topology.borrow_and_update().clone();
                if sent != Some(t.version) {
                    sent = Some(t.version);
                    let Ok(frame) = Response::Topology(t).to_frame(id) else {
                        break;
                    };
                    if tx.send(frame).await.is_err() {
                        break;
                    }
                }
                if topology.changed().await.is_err() {
                    break;
                }
            }
        });
        Some(rx)
    }
}
