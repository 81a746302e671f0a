//! The balancer as a [`Service`]: one `match` on the frame kind sends each request to its
//! path (writes in `write`, reads in `read`, admin operations to the coordinator).
//!
//! Only the header is read to dispatch. Write batches are split by their index, single-shard
//! answers are forwarded as they came (the client's request id restored), and the text mode
//! encodes its typed request into the same frame a binary client would send. Every answer
//! over the frame limit (a merged read, a forwarded one) becomes a `TooLarge` error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use shardline_metrics::{ops, RequestMetrics};
use shardline_protocol::net::{CallError, Service};
use shardline_protocol::{kind, ErrorCode, Frame, Message, Request, Response};
use tokio::time::Instant;
use tracing::{debug, debug_span, Instrument};

use crate::config::BalancerConfig;
use crate::pool::Pool;
use crate::stats::Stats;
use crate::topology::TopologyCache;

/// The balancer: configuration, topology cache, node connections and counters.
#[derive(Debug)]
pub struct Balancer {
    pub(crate) cfg: BalancerConfig,
    pub(crate) topology: Arc<TopologyCache>,
    pub(crate) pool: Pool,
    pub(crate) stats: Stats,
    client_id: u64,
    seq: AtomicU64,
    requests: AtomicU64,
    /// Requests by operation and outcome, for `/metrics`.
    metrics: RequestMetrics,
}

impl Balancer {
    /// A balancer with an empty topology cache (feed it with [`crate::topology::follow`]).
    pub fn new(cfg: BalancerConfig) -> Balancer {
        let topology = Arc::new(TopologyCache::new(&cfg.coordinator));
        let pool = Pool::new(cfg.pool_size, cfg.connect_timeout, cfg.max_payload).with_outgoing(cfg.outgoing());
        Balancer {
            cfg,
            topology,
            pool,
            stats: Stats::default(),
            client_id: shardline_protocol::quorum::random_client_id(),
            seq: AtomicU64::new(1),
            requests: AtomicU64::new(0),
            metrics: RequestMetrics::new(ops::CLIENT),
        }
    }

    /// The topology cache.
    pub fn topology(&self) -> &Arc<TopologyCache> {
        &self.topology
    }

    /// The client id the balancer stamps on writes that carry none.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The request metrics.
    pub fn requests(&self) -> &RequestMetrics {
        &self.metrics
    }

    /// A fresh sequence number under [`Balancer::client_id`].
    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// A per-request number for the read ring.
    pub(crate) fn next_request(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed)
    }

    /// When a request arriving now must be answered by.
    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.cfg.retry_deadline
    }

    /// Answers one client frame.
    pub async fn handle(&self, frame: Frame) -> Frame {
        self.stats.request();
        let timer = self.metrics.begin(ops::of_kind(frame.kind));
        let id = frame.request_id;
        let answer = match frame.kind {
            kind::PING => Ok(encode(&Response::Pong)),
            kind::STATS => Ok(self.stats_frame()),
            kind::WRITE => self.write(frame).await,
            kind::UPDATE | kind::DELETE => self.write_one(frame).await,
            kind::READ => self.read(frame).await,
            kind::READ_SERVER => self.read_server(frame).await,
            kind::STATUS
            | kind::INIT
            | kind::ADD_SERVERS
            | kind::REMOVE_SERVERS
            | kind::FAILOVER
            | kind::GET_TOPOLOGY => self.to_coordinator(frame).await,
            kind::SUBSCRIBE_TOPOLOGY => {
                Err(ErrorCode::BadRequest("subscribe at the coordinator: a balancer answers each request once".into()))
            }
            kind::LOG => Err(ErrorCode::BadRequest("LOG is served by storage nodes: connect to one".into())),
            other => Err(ErrorCode::BadRequest(format!("frame kind {other:#04x} is not a client request"))),
        };
        // Checked here, not only when the frame goes out, so the text mode and the error
        // counter see it too: a merged multi-shard read can outgrow every part.
        let max = self.cfg.max_payload;
        let answer = answer.and_then(|a| match a.payload.len() {
            len if len > max => Err(ErrorCode::too_large(len, max)),
            _ => Ok(a),
        });
        timer.finish(crate::metrics::code(&answer));
        let mut answer = answer.unwrap_or_else(|e| {
            self.stats.error();
            encode(&Response::Error(e))
        });
        answer.request_id = id;
        answer
    }

    /// Relays an admin or status request to the coordinator, once (admin operations are
    /// not idempotent, so a failed call is reported, not repeated).
    /// With several coordinators, a `NotLeader` refusal or a failed connection (nothing
    /// was sent) moves on to the next one, at most once round the list.
    async fn to_coordinator(&self, frame: Frame) -> Result<Frame, ErrorCode> {
        let timeout = match frame.kind {
            kind::STATUS | kind::GET_TOPOLOGY => self.cfg.call_timeout,
            _ => self.cfg.admin_timeout,
        };
        let mut attempts = self.topology.coordinators();
        loop {
            attempts -= 1;
            // With several coordinators, the one that answers as leader now: an admin
            // operation sent to a paused one would wait out the whole admin timeout.
            let Some(coordinator) = self.topology.leading(&self.pool).await else {
                return Err(ErrorCode::NotLeader { leader: None });
            };
            let answer = match self.pool.call(&coordinator, frame.clone(), timeout).await {
                Ok(answer) => answer,
                Err(e @ CallError::Connect { .. }) if attempts > 0 => {
                    debug!(%e, "coordinator unreachable: trying the next");
                    self.topology.next_coordinator(&coordinator);
                    continue;
                }
                Err(e) => {
                    return Err(match e.to_code(None) {
                        ErrorCode::Internal(m) => ErrorCode::Internal(format!("coordinator: {m}")),
                        other => other,
                    })
                }
            };
            match Response::from_frame(&answer) {
                Ok(Response::Topology(t)) => {
                    self.topology.offer(t);
                }
                Ok(Response::Error(ErrorCode::NotLeader { .. })) if attempts > 0 => {
                    self.topology.next_coordinator(&coordinator);
                    continue;
                }
                _ => {}
            }
            return Ok(answer);
        }
    }

    fn stats_frame(&self) -> Frame {
        let mut pairs = vec![
            ("role".to_owned(), "balancer".to_owned()),
            ("client_id".to_owned(), format!("{:016x}", self.client_id)),
            ("topology_version".to_owned(), self.topology.current().version().to_string()),
        ];
        pairs.extend(self.stats.snapshot());
        encode(&Response::Stats(pairs))
    }
}

/// Encodes a response the balancer makes itself (request id 0, set by the caller).
pub(crate) fn encode(response: &Response) -> Frame {
    response.to_frame(0).unwrap_or_else(|e| {
        Response::Error(ErrorCode::Internal(format!("answer does not encode: {e}")))
            .to_frame(0)
            .expect("a short error encodes")
    })
}

/// An answer frame of `kind` carrying `payload` (request id 0, set by the caller).
pub(crate) fn answer_with(kind: u8, payload: Bytes) -> Frame {
    Frame::new(kind, 0, payload)
}

impl Service for Balancer {
    async fn frame(&self, frame: Frame) -> Frame {
        let span = debug_span!("request", id = frame.request_id, kind = frame.kind);
        self.handle(frame).instrument(span).await
    }

    fn try_frame(&self, frame: Frame) -> Result<Frame, Frame> {
        let answer = match frame.kind {
            kind::PING => encode(&Response::Pong),
            kind::STATS => self.stats_frame(),
            _ => return Err(frame),
        };
        self.stats.request();
        self.metrics.instant(ops::of_kind(frame.kind), shardline_metrics::OK);
        Ok(Frame { request_id: frame.request_id, ..answer })
    }

    async fn text(&self, request: Request) -> Response {
        let frame = match request.to_frame(0) {
            Ok(frame) => frame,
            Err(e) => return Response::Error(ErrorCode::BadRequest(e.to_string())),
        };
        let answer = self.frame(frame).await;
        Response::from_frame(&answer).unwrap_or_else(|e| Response::Error(ErrorCode::Internal(e.to_string())))
    }

    fn connection_opened(&self) {
        self.metrics.connection_opened();
    }

    fn connection_closed(&self) {
        self.metrics.connection_closed();
    }
}
