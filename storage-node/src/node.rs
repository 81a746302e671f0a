//! The node: the shard replicas it holds, and one `match` that sends every message to
//! the right one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use futures::future::join_all;
use shardline_protocol::frame::FLAG_LINEARIZABLE;
use shardline_protocol::net;
use shardline_protocol::rows::RowsWriter;
use shardline_protocol::Consistency;
use shardline_protocol::{
    error_frame, kind, ControlRequest, ControlResponse, ErrorCode, Frame, Message, MessageError, NodeStatus, Operation,
    PeerRequest, PeerResponse, ReplicaRole, Request, Response, Route, Row, Schema, ShardCommit, ShardId, ShardRows,
    ShardSpec,
};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use shardline_metrics::{ops, RequestMetrics};

use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::failpoint::Failpoints;
use crate::heartbeats::HeardBeats;
use crate::metrics;
use crate::replica::{AppendRequest, SnapshotChunk};
use crate::shard::{self, Command, ShardHandle, ShardMetrics, ShardRunner};
use crate::store::StoreError;

/// How long a read waits for this replica to learn that the session's position committed
/// before answering `Behind`: a follower a few milliseconds behind catches up within it
/// (once known committed, the apply gets [`shard::APPLY_WAIT`]).
pub const SESSION_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// A storage node: its configuration and shard replicas.
#[derive(Debug)]
pub struct Node {
    cfg: Arc<NodeConfig>,
    failpoints: Arc<Failpoints>,
    shards: RwLock<BTreeMap<ShardId, ShardHandle>>,
    /// The tasks of the replicas found at open, until [`Node::start`].
    unstarted: Mutex<Vec<ShardRunner>>,
    started: Instant,
    /// When recent heartbeats were handled, by number: lease grants count from these.
    heard: Mutex<HeardBeats<Instant>>,
    /// Requests by operation and outcome, for `/metrics`.
    requests: RequestMetrics,
}

impl Node {
    /// Opens every shard replica found under the data directory.
    pub fn open(cfg: NodeConfig, failpoints: Failpoints) -> Result<Arc<Node>, StoreError> {
        let cfg = Arc::new(cfg);
        let failpoints = Arc::new(failpoints);
        let (mut shards, mut unstarted) = (BTreeMap::new(), Vec::new());
        let root = cfg.data_dir.join("shards");
        std::fs::create_dir_all(&root)?;
        for entry in std::fs::read_dir(&root)? {
            let entry = entry?;
            let Some(id) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let opened = match shard::open_shard(&cfg.data_dir, cfg.clone(), failpoints.clone(), ShardId(id), None) {
                Ok(opened) => opened,
                Err(e) if e.is_damage() => {
                    // One damaged replica must not keep the node's other shards down. Its files
                    // are kept aside, never deleted; the coordinator re-creates the replica
                    // (as a learner, from its primary) once the shard has one.
                    let aside = set_aside(&root, id)?;
                    error!(shard = id, %e, aside = %aside.display(), "shard replica cannot be opened: set aside");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (handle, runner) = opened;
            shards.insert(ShardId(id), handle);
            unstarted.push(runner);
        }
        info!(node = %cfg.id, shards = shards.len(), "node opened");
        Ok(Arc::new(Node {
            cfg,
            failpoints,
            shards: RwLock::new(shards),
            unstarted: Mutex::new(unstarted),
            started: Instant::now(),
            heard: Mutex::new(HeardBeats::default()),
            requests: RequestMetrics::new(ops::NODE),
        }))
    }

    /// Starts the tasks of the shard replicas [`Node::open`] found (once; later calls do
    /// nothing). Until then their commands wait.
    pub fn start(&self) {
        for runner in std::mem::take(&mut *self.unstarted.lock().expect("unstarted lock")) {
            runner.start();
        }
    }

    /// Starts the shard replicas and serves `ports` until `shutdown` completes, then drains
    /// (see [`net::serve_ports`]).
    pub async fn run(
        self: Arc<Self>,
        ports: net::Ports,
        limits: net::Limits,
        gate: Arc<net::auth::Gate>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        self.start();
        net::serve_ports(ports, self, limits, gate, shutdown).await;
    }

    /// [`Node::run`] on one plaintext listener, open to anyone (tests, benchmarks).
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        limits: net::Limits,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        self.start();
        net::serve(listener, self, limits, shutdown).await;
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    fn shard(&self, id: ShardId) -> Result<ShardHandle, NodeError> {
        let shards = self.shards.read().expect("shards lock");
        shards.get(&id).cloned().ok_or(NodeError::Refused(ErrorCode::UnknownShard { shard: id }))
    }

    fn shard_for_key(&self, key: i64) -> Result<ShardHandle, NodeError> {
        let shards = self.shards.read().expect("shards lock");
        shards
            .values()
            .find(|s| s.spec().contains(key))
            .cloned()
            .ok_or(NodeError::Refused(ErrorCode::KeyOutOfRange { key }))
    }

    fn all_shards(&self) -> Vec<ShardHandle> {
        self.shards.read().expect("shards lock").values().cloned().collect()
    }

    /// The node's request metrics.
    pub fn requests(&self) -> &RequestMetrics {
        &self.requests
    }

    /// Every shard replica's facts for `/metrics`.
    pub fn shard_metrics(&self) -> Vec<ShardMetrics> {
        self.all_shards().iter().map(ShardHandle::metrics).collect()
    }

    /// The node's state, as heartbeats and STATUS report it.
    pub fn status(&self) -> NodeStatus {
        NodeStatus { node: self.cfg.id.clone(), shards: self.all_shards().iter().map(|s| s.state()).collect() }
    }

    /// Answers one frame with one frame.
    pub async fn handle_frame(&self, frame: Frame) -> Frame {
        let (id, kind) = (frame.request_id, frame.kind);
        let encoded = if Request::owns_kind(frame.kind) {
            let response = match Request::from_frame(&frame) {
                Ok(request) => {
                    let timer = self.requests.begin(ops::of_request(&request));
                    let response = self.request(request, frame.route(), frame.has_flag(FLAG_LINEARIZABLE)).await;
                    timer.finish(metrics::response_code(&response));
                    response
                }
                Err(e) => Response::Error(self.undecodable(e)),
            };
            response.to_frame(id)
        } else if ControlRequest::owns_kind(frame.kind) {
            let response = match ControlRequest::from_frame(&frame) {
                Ok(request) => {
                    let timer = self.requests.begin(ops::of_control(&request));
                    let response = self.control(request).await;
                    timer.finish(metrics::control_code(&response));
                    response
                }
                Err(e) => ControlResponse::Error(self.undecodable(e)),
            };
            response.to_frame(id)
        } else if PeerRequest::owns_kind(frame.kind) {
            let response = match PeerRequest::from_frame(&frame) {
                Ok(request) => {
                    let timer = self.requests.begin(ops::of_peer(&request));
                    let response = self.peer(request).await;
                    timer.finish(metrics::peer_code(&response));
                    response
                }
                Err(e) => PeerResponse::Error(self.undecodable(e)),
            };
            response.to_frame(id)
        } else {
            self.requests.instant(ops::OTHER, "BadRequest");
            Response::Error(ErrorCode::BadRequest(format!("frame kind {:#04x} is not a request", frame.kind)))
                .to_frame(id)
        };
        encoded_or_error(kind, id, encoded)
    }

    /// The error for a frame whose payload does not decode, counted.
    fn undecodable(&self, e: MessageError) -> ErrorCode {
        self.requests.instant(ops::OTHER, "BadRequest");
        ErrorCode::BadRequest(e.to_string())
    }

    /// Answers at once, with no waiting, the client requests that need none (reads, which
    /// read the table directly, pings, status, stats); gives any other frame back.
    pub fn try_handle_frame(&self, frame: Frame) -> Result<Frame, Frame> {
        if !matches!(frame.kind, kind::READ | kind::READ_SERVER | kind::PING | kind::STATUS | kind::STATS) {
            return Err(frame);
        }
        let id = frame.request_id;
        let response = match Request::from_frame(&frame) {
            Ok(Request::Read { low, high, consistency }) => {
                let level = if frame.has_flag(FLAG_LINEARIZABLE) { Consistency::Primary } else { consistency };
                let answer = self.read_frame(id, low, high, &level, frame.route()).map_err(ErrorCode::from);
                if matches!(answer, Err(ErrorCode::Behind { .. })) {
                    // Behind a session's position, or a primary still applying what it
                    // acknowledged: `handle_frame` waits briefly for it.
                    return Err(frame);
                }
                let timer = self.requests.begin("read");
                timer.finish(match &answer {
                    Ok(_) => shardline_metrics::OK,
                    Err(e) => e.name(),
                });
                return Ok(answer.unwrap_or_else(|e| encoded_or_error(frame.kind, id, Response::Error(e).to_frame(id))));
            }
            Ok(request) => {
                let timer = self.requests.begin(ops::of_request(&request));
                match self.request_now(request, frame.route(), frame.has_flag(FLAG_LINEARIZABLE)) {
                    Ok(response) => {
                        timer.finish(metrics::response_code(&response));
                        response
                    }
                    // Not finished: counted when `handle_frame` answers it.
                    Err(_) => return Err(frame),
                }
            }
            Err(e) => Response::Error(self.undecodable(e)),
        };
        Ok(encoded_or_error(frame.kind, id, response.to_frame(id)))
    }

    /// Serves a client request (from the balancer, a test, or the text mode).
    pub async fn request(&self, request: Request, route: Route, linearizable: bool) -> Response {
        let request = match self.request_now(request, route, linearizable) {
            Ok(response) => return response,
            Err(request) => request,
        };
        let write = matches!(request, Request::Write(_) | Request::Update { .. } | Request::Delete { .. });
        if let (true, Route::Shard(id)) = (write, route) {
            // Routed to a shard this node does not hold (not yet configured, or its replica
            // failed to open): not a definite refusal of the key, which a retry elsewhere
            // may commit, or an earlier attempt may have.
            if let Err(e) = self.shard(ShardId(id)) {
                return Response::Error(e.into());
            }
        }
        let result = match request {
            Request::Ping | Request::Status | Request::Stats | Request::ReadServer { .. } => {
                unreachable!("answered by request_now")
            }
            Request::Read { low, high, consistency } => {
                let level = if linearizable { Consistency::Primary } else { consistency };
                self.read_in_session(low, high, &level, route).await
            }
            Request::Write(batch) => match batch.rows() {
                Ok(rows) => self.insert(batch.client_id(), batch.seq(), rows).await,
                Err(e) => Err(ErrorCode::BadRequest(e.to_string()).into()),
            },
            Request::Update { client_id, seq, row } => {
                self.write_one(row.key, Operation::Update { client_id, seq, row }).await
            }
            Request::Delete { client_id, seq, key } => {
                self.write_one(key, Operation::Delete { client_id, seq, key }).await
            }
            Request::Log { shard, count } => match self.shard(shard) {
                Ok(s) => s
                    .ask(|reply| Command::Log { count, reply })
                    .await
                    .map(Response::Log)
                    .ok_or(NodeError::ShardStopped(shard)),
                Err(e) => Err(e),
            },
            Request::Init(_) | Request::AddServers(_) | Request::RemoveServers { .. } | Request::Failover { .. } => {
                Err(ErrorCode::BadRequest(
                    "admin operations go to the coordinator (or the balancer), not to a storage node".into(),
                )
                .into())
            }
            Request::GetTopology { .. } | Request::SubscribeTopology => {
                Err(ErrorCode::BadRequest("storage nodes hold no topology; ask the coordinator".into()).into())
            }
            Request::Auth { .. } => {
                Err(ErrorCode::BadRequest("AUTH is answered by the connection, first".into()).into())
            }
        };
        result.unwrap_or_else(|e| Response::Error(e.into()))
    }

    /// Answers the requests that need no waiting; gives the others back.
    fn request_now(&self, request: Request, route: Route, linearizable: bool) -> Result<Response, Request> {
        let result = match request {
            Request::Ping => Ok(Response::Pong),
            Request::Status => Ok(Response::Node(self.status())),
            Request::Stats => Ok(Response::Stats(self.stats())),
            Request::Read { low, high, consistency } => {
                let level = if linearizable { Consistency::Primary } else { consistency };
                match self.read(low, high, &level, route) {
                    // Behind a session's position, or applying: `request` waits briefly for it.
                    Err(NodeError::Refused(ErrorCode::Behind { .. })) => {
                        return Err(Request::Read { low, high, consistency: level })
                    }
                    other => other,
                }
            }
            Request::ReadServer { server } if server == self.cfg.id => self.read_all(),
            Request::ReadServer { server } => Err(ErrorCode::UnknownServer { name: server }.into()),
            other => return Err(other),
        };
        Ok(result.unwrap_or_else(|e| Response::Error(e.into())))
    }

    /// The shards a read of `[low, high]` routed by `route` touches, in key order.
    fn read_shards(&self, low: i64, high: i64, route: Route) -> Result<Vec<ShardHandle>, NodeError> {
        if low > high {
            return Err(ErrorCode::BadRequest(format!("read range low {low} is above high {high}")).into());
        }
        Ok(match route {
            Route::Shard(id) => vec![self.shard(ShardId(id))?],
            _ => {
                let mut shards: Vec<ShardHandle> =
                    self.all_shards().into_iter().filter(|s| s.spec().overlaps(low, high)).collect();
                shards.sort_by_key(|s| s.spec().low);
                shards
            }
        })
    }

    fn read(&self, low: i64, high: i64, level: &Consistency, route: Route) -> Result<Response, NodeError> {
        self.read_from(low, high, level, route, &[])
    }

    /// [`Node::read`], each shard in `floors` needing only that applied index at a primary
    /// (see [`ShardHandle::read_from`]).
    fn read_from(
        &self,
        low: i64,
        high: i64,
        level: &Consistency,
        route: Route,
        floors: &[(ShardId, u64)],
    ) -> Result<Response, NodeError> {
        let mut rows: Vec<Row> = Vec::new();
        let mut at = Vec::new();
        for s in self.read_shards(low, high, route)? {
            let floor = floors.iter().find(|(id, _)| *id == s.spec().id).map(|&(_, f)| f);
            let (part, position) = s.read_from(low, high, level, floor)?;
            rows.extend(part);
            at.push(position);
        }
        Ok(Response::Rows { at, rows })
    }

    /// A read this replica was behind for: waits for each shard to apply the read's floor
    /// (the session's position; at a primary, whatever the level, and at a follower for a
    /// bounded read, the commit index it knew when the read came), asking its task to apply
    /// at once rather than with its next batch ([`ShardHandle::applied_reaches`]), then
    /// reads once more (still behind: `Behind`, which a router answers by asking the
    /// primary).
    async fn read_in_session(
        &self,
        low: i64,
        high: i64,
        level: &Consistency,
        route: Route,
    ) -> Result<Response, NodeError> {
        let mut floors = Vec::new();
        for s in self.read_shards(low, high, route)? {
            let state = s.state();
            let floor = match (state.role, level) {
                (ReplicaRole::Primary, _) | (_, Consistency::Bounded { .. }) => {
                    state.commit_index.max(level.floor(s.spec().id))
                }
                _ => level.floor(s.spec().id),
            };
            floors.push((s.spec().id, floor));
            if !s.applied_reaches(floor, SESSION_WAIT).await {
                break;
            }
        }
        // Read once more, each primary needing only what it had committed when the read came:
        // under steady writes its commit index has moved on meanwhile, and always will.
        self.read_from(low, high, level, route, &floors)
    }

    /// Answers a read with the stored row bytes spliced into the answer (the binary fast
    /// path; [`Node::read`] is the typed one the text mode takes). The answer is the same.
    fn read_frame(&self, id: u64, low: i64, high: i64, level: &Consistency, route: Route) -> Result<Frame, NodeError> {
        let mut out = RowsWriter::new();
        // Shards own disjoint ranges: in range order, their rows are in key order.
        for s in self.read_shards(low, high, route)? {
            s.read_encoded(low, high, level, &mut out)?;
        }
        // An answer over the frame limit becomes `TooLarge` where it is written out.
        Ok(out.into_frame(id))
    }

    fn read_all(&self) -> Result<Response, NodeError> {
        let mut out = Vec::new();
        for s in self.all_shards() {
            let spec = s.spec();
            let (rows, _) = s.read(spec.low, spec.high().unwrap_or(i64::MIN), &Consistency::Any)?;
            out.push(ShardRows { shard: spec.id, rows });
        }
        Ok(Response::ServerRows(out))
    }

    /// Inserts rows, each shard's part as one atomic entry.
    async fn insert(&self, client_id: u64, seq: u64, rows: Vec<Row>) -> Result<Response, NodeError> {
        if rows.is_empty() {
            return Err(ErrorCode::BadRequest("a write needs at least one row".into()).into());
        }
        let mut parts: BTreeMap<ShardId, (ShardHandle, Vec<Row>)> = BTreeMap::new();
        for row in rows {
            let shard = self.shard_for_key(row.key)?;
            parts.entry(shard.spec().id).or_insert_with(|| (shard, Vec::new())).1.push(row);
        }
        let writes = parts
            .into_values()
            .map(|(shard, rows)| async move { shard.write(Operation::Write { client_id, seq, rows }).await });
        let results: Vec<Result<ShardCommit, NodeError>> = join_all(writes).await;
        let mut commits = Vec::with_capacity(results.len());
        for r in results {
            commits.push(r?);
        }
        Ok(Response::Committed(commits))
    }

    async fn write_one(&self, key: i64, op: Operation) -> Result<Response, NodeError> {
        let shard = self.shard_for_key(key)?;
        Ok(Response::Committed(vec![shard.write(op).await?]))
    }

    fn stats(&self) -> Vec<(String, String)> {
        let mut out = vec![
            ("node".to_owned(), self.cfg.id.clone()),
            ("pid".to_owned(), std::process::id().to_string()),
            ("uptime_s".to_owned(), self.started.elapsed().as_secs().to_string()),
        ];
        for s in self.all_shards() {
            out.extend(s.stats());
        }
        out
    }

    /// Serves the coordinator.
    pub async fn control(&self, request: ControlRequest) -> ControlResponse {
        match request {
            ControlRequest::ConfigureShard { shard, schema } => done(self.configure_shard(shard, schema)),
            ControlRequest::DropShard { shard } => done(self.drop_shard(shard).await),
            ControlRequest::BecomePrimary { shard, term, followers, learners, lease_ms } => {
                self.ask_shard(shard, |reply| Command::BecomePrimary { term, followers, learners, lease_ms, reply })
                    .await
            }
            ControlRequest::BecomeFollower { shard, term, primary } => {
                self.ask_shard(shard, |reply| Command::BecomeFollower { term, primary, reply }).await
            }
            ControlRequest::ElectionQuery { shard, term } => {
                self.ask_shard(shard, |reply| Command::ElectionQuery { term, reply }).await
            }
            ControlRequest::Handoff { shard, term, for_ms } => {
                self.ask_shard(shard, |reply| Command::Handoff { term, for_ms, reply }).await
            }
            ControlRequest::Heartbeat { seq, lease_ms, grant } => {
                let since = self.heard.lock().expect("heard lock").handled(seq, Instant::now(), grant.as_ref());
                if let (Some(grant), Some(since)) = (grant, since) {
                    for (shard, term) in grant.shards {
                        if let Ok(s) = self.shard(shard) {
                            s.tell(Command::RenewLease { since, lease_ms, term }).await;
                        }
                    }
                }
                ControlResponse::Status(self.status())
            }
        }
    }

    /// Asks `shard`'s task the command `make` builds around the reply channel.
    async fn ask_shard(
        &self,
        shard: ShardId,
        make: impl FnOnce(oneshot::Sender<ControlResponse>) -> Command,
    ) -> ControlResponse {
        match self.shard(shard) {
            Ok(s) => s.ask(make).await.unwrap_or_else(|| ControlResponse::Error(NodeError::ShardStopped(shard).into())),
            Err(e) => ControlResponse::Error(e.into()),
        }
    }

    /// Opens a new shard replica here (again: fine if the range is the same).
    fn configure_shard(&self, shard: ShardSpec, schema: Schema) -> Result<(), NodeError> {
        if let Err(e) = schema.validate() {
            return Err(ErrorCode::SchemaViolation(e.to_string()).into());
        }
        if let Ok(existing) = self.shard(shard.id) {
            if existing.spec() == shard {
                return Ok(());
            }
            let why = format!("{} is already configured with another range", shard.id);
            return Err(ErrorCode::BadRequest(why).into());
        }
        let config = Some((shard, schema));
        let (handle, runner) =
            shard::open_shard(&self.cfg.data_dir, self.cfg.clone(), self.failpoints.clone(), shard.id, config)?;
        runner.start();
        info!(shard = %shard.id, low = shard.low, size = shard.size, "shard configured");
        self.shards.write().expect("shards lock").insert(shard.id, handle);
        Ok(())
    }

    /// Stops `shard`'s replica here and removes its files (fine if there is none).
    async fn drop_shard(&self, shard: ShardId) -> Result<(), NodeError> {
        let Some(handle) = self.shards.write().expect("shards lock").remove(&shard) else {
            return Ok(());
        };
        handle.ask(|reply| Command::Stop { reply }).await;
        let dir = shard::shard_dir(&self.cfg.data_dir, shard);
        std::fs::remove_dir_all(&dir).map_err(|source| {
            warn!(%source, dir = %dir.display(), "could not remove a dropped shard's files");
            NodeError::RemoveFiles { dir, source }
        })
    }

    /// Serves another replica (this node as a follower).
    pub async fn peer(&self, request: PeerRequest) -> PeerResponse {
        let answer = match request {
            PeerRequest::Append { shard, term, primary, prev, entries, commit, echo } => match self.shard(shard) {
                Ok(s) => {
                    let request = AppendRequest { term, primary, prev, entries, commit, echo };
                    s.ask(|reply| Command::Append(request, reply)).await.ok_or(shard)
                }
                Err(e) => return PeerResponse::Error(e.into()),
            },
            PeerRequest::Snapshot { shard, term, primary, last_included, chunk, rows, marks, done, total } => {
                match self.shard(shard) {
                    Ok(s) => {
                        let chunk = SnapshotChunk { term, primary, last_included, chunk, rows, marks, done, total };
                        s.ask(|reply| Command::Snapshot(chunk, reply)).await.ok_or(shard)
                    }
                    Err(e) => return PeerResponse::Error(e.into()),
                }
            }
            PeerRequest::FetchEntries { .. } => {
                return PeerResponse::Error(ErrorCode::BadRequest(
                    "FetchEntries is not served: damaged entries are repaired by the primary's appends".into(),
                ))
            }
        };
        answer.unwrap_or_else(|shard| PeerResponse::Error(NodeError::ShardStopped(shard).into()))
    }
}

/// An encoded answer, or an `Internal` error in its place (in the enum the request's sender
/// expects) when it does not encode. Size is checked where the frame goes out.
fn encoded_or_error(kind: u8, id: u64, encoded: Result<Frame, MessageError>) -> Frame {
    encoded.unwrap_or_else(|e| error_frame(kind, id, NodeError::Encode(e).into()))
}

/// A control request's answer when it has nothing to say but done.
fn done(result: Result<(), NodeError>) -> ControlResponse {
    match result {
        Ok(()) => ControlResponse::Ok,
        Err(e) => ControlResponse::Error(e.into()),
    }
}

impl net::Service for Node {
    async fn frame(&self, frame: Frame) -> Frame {
        self.handle_frame(frame).await
    }

    fn try_frame(&self, frame: Frame) -> Result<Frame, Frame> {
        self.try_handle_frame(frame)
    }

    async fn text(&self, request: Request) -> Response {
        let timer = self.requests.begin(ops::of_request(&request));
        let response = self.request(request, Route::None, false).await;
        timer.finish(metrics::response_code(&response));
        response
    }

    fn connection_opened(&self) {
        self.requests.connection_opened();
    }

    fn connection_closed(&self) {
        self.requests.connection_closed();
    }
}

/// Moves shard `id`'s directory under `root` aside, to `<id>.damaged[-N]`; returns where.
fn set_aside(root: &std::path::Path, id: u32) -> std::io::Result<std::path::PathBuf> {
    let from = root.join(id.to_string());
    let mut to = root.join(format!("{id}.damaged"));
    let mut n = 1;
    while to.exists() {
        n += 1;
        to = root.join(format!("{id}.damaged-{n}"));
    }
    std::fs::rename(&from, &to)?;
    Ok(to)
}
