//! The coordinator's answers to balancers, the CLI and people at `nc`.

use std::sync::Arc;

use shardline_metrics::ops;
use shardline_protocol::net::Service;
use shardline_protocol::{kind, ErrorCode, Frame, Message, Request, Response};
use tokio::sync::mpsc;

use crate::cluster::Coordinator;
use crate::error::CoordinatorError;

/// How often a coordinator elected through etcd repeats the topology to a subscriber when
/// nothing changed (a balancer gives up on one silent for a few of these).
pub const SUBSCRIPTION_REPEAT: std::time::Duration = std::time::Duration::from_millis(300);

/// The coordinator as a network service.
#[derive(Debug, Clone)]
pub struct CoordinatorService(pub Arc<Coordinator>);

impl CoordinatorService {
    /// Answers one request.
    pub async fn request(&self, request: Request) -> Response {
        let c = &self.0;
        // A standby answers PING, STATUS and STATS; the rest is the leader's.
        let leads = || if c.acting() { Ok(()) } else { Err(CoordinatorError::from(c.not_leader())) };
        let result = match request {
            Request::Ping => Ok(Response::Pong),
            Request::Status => Ok(Response::Topology(c.topology())),
            Request::SubscribeTopology => leads().map(|()| Response::Topology(c.topology())),
            Request::Stats => Ok(Response::Stats(c.stats())),
            Request::GetTopology { known_version } => leads().map(|()| {
                let t = c.topology();
                if t.version > known_version {
                    Response::Topology(t)
                } else {
                    Response::TopologyUnchanged { version: t.version }
                }
            }),
            Request::Init(_) | Request::AddServers(_) | Request::RemoveServers { .. } | Request::Failover { .. }
                if !c.acting() =>
            {
                Err(c.not_leader().into())
            }
            Request::Init(init) => c.init(init).await.map(Response::Topology),
            Request::AddServers(add) => c.add_servers(add).await.map(Response::Topology),
            Request::RemoveServers { n, servers } => c.remove_servers(n, servers).await.map(Response::Topology),
            Request::Failover { shard, to } => {
                c.switchover(shard, to).await.map(Response::Topology).map_err(Into::into)
            }
            Request::Read { .. }
            | Request::ReadServer { .. }
            | Request::Write(_)
            | Request::Update { .. }
            | Request::Delete { .. }
            | Request::Log { .. } => Err(ErrorCode::BadRequest(
                "data operations go to the balancer (or a storage node), not to the coordinator".into(),
            )
            .into()),
            Request::Auth { .. } => {
                Err(ErrorCode::BadRequest("AUTH is answered by the connection, first".into()).into())
            }
        };
        result.unwrap_or_else(|e| Response::Error(e.into()))
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
        let (tx, rx) = mpsc::channel(16);
        if !self.0.acting() {
            // A standby refuses: the subscriber moves on to the next coordinator it knows.
            let refusal = Response::Error(self.0.not_leader()).to_frame(id).ok()?;
            tx.try_send(refusal).ok()?;
            return Some(rx);
        }
        let mut topology = self.0.subscribe();
        let coordinator = self.0.clone();
        // One of several coordinators repeats the topology when nothing changed for a
        // while, so a subscriber notices a coordinator that went silent (paused, cut off)
        // and looks for the leader elsewhere.
        let repeat = coordinator.leadership().is_elected().then_some(SUBSCRIPTION_REPEAT);
        tokio::spawn(async move {
            let mut sent = None;
            loop {
                let t = topology.borrow_and_update().clone();
                if sent != Some(t.version) || repeat.is_some() {
                    sent = Some(t.version);
                    let Ok(frame) = Response::Topology(t).to_frame(id) else {
                        break;
                    };
                    if tx.send(frame).await.is_err() {
                        break;
                    }
                }
                let changed = match repeat {
                    Some(every) => tokio::time::timeout(every, topology.changed()).await.unwrap_or(Ok(())),
                    None => topology.changed().await,
                };
                if changed.is_err() || !coordinator.acting() {
                    // A coordinator that stood down ends its subscriptions.
                    break;
                }
            }
        });
        Some(rx)
    }
}
