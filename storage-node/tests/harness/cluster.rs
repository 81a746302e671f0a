//! A set of nodes holding shard 1, and the test playing the coordinator: configure the
//! shard, assign roles, and read each replica's state, rows and log. Elections are in
//! [`super::election`], convergence checks in [`super::converge`].

use std::time::Duration;

use shardline_protocol::{
    ControlRequest, ControlResponse, ErrorCode, LogLine, Message, Request, Response, Route, Row, Schema, ServerAddr,
    ShardId, ShardSpec, ShardState,
};

use super::client::{call_once, CallError};
use super::node::{NodeOpts, NodeProc};

/// The shard every test uses.
pub(crate) const SHARD: ShardId = ShardId(1);
/// A lease long enough never to lapse in a test that is not about leases.
pub(crate) const LEASE_MS: u64 = 60_000;
/// Per-call timeout: longer than the node's write timeout, so a write's own `Timeout`
/// answer arrives before the client gives up.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(6);

/// Shard 1: keys `[0, 4096)`.
pub(crate) fn shard_spec() -> ShardSpec {
    ShardSpec { id: SHARD, low: 0, size: 4096 }
}

/// Why reading a replica's rows gave no rows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ReadError {
    /// The node answered with an error.
    Refused(ErrorCode),
    /// The call failed.
    Call(CallError),
}

/// Nodes `Server0..` each holding a replica of shard 1.
pub(crate) struct Cluster {
    /// The node processes, by index.
    pub nodes: Vec<NodeProc>,
}

impl Cluster {
    /// Starts `n` nodes and waits until each answers `Ping`.
    pub(crate) async fn start(n: usize, opts: NodeOpts) -> Cluster {
        Cluster::start_with_env(n, opts, &[]).await
    }

    /// Starts `n` nodes with extra environment `env` and waits until each answers `Ping`.
    pub(crate) async fn start_with_env(n: usize, opts: NodeOpts, env: &[(&str, &str)]) -> Cluster {
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("Server{i}");
            nodes.push(NodeProc::spawn(&name, opts.clone(), env).expect("spawn shardline-node"));
        }
        let mut cluster = Cluster { nodes };
        for node in &mut cluster.nodes {
            if let Err(e) = node.wait_ready().await {
                panic!("node did not start: {e}");
            }
        }
        cluster
    }

    /// Node `i`'s name and address.
    pub(crate) fn server(&self, i: usize) -> ServerAddr {
        ServerAddr { name: self.nodes[i].name().to_owned(), addr: self.nodes[i].addr() }
    }

    /// Index of the node called `name`.
    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name() == name)
    }

    /// Restarts node `i` (without any failpoint) and waits until it answers `Ping`.
    pub(crate) async fn restart(&mut self, i: usize) {
        self.restart_with_env(i, &[]).await;
    }

    /// Restarts node `i` with environment `env` and waits until it answers `Ping`.
    pub(crate) async fn restart_with_env(&mut self, i: usize, env: &[(&str, &str)]) {
        self.nodes[i].restart(env).expect("respawn shardline-node");
        if let Err(e) = self.nodes[i].wait_ready().await {
            panic!("node did not restart: {e}");
        }
    }

    /// Kills node `i`, deletes its data directory, restarts it empty and waits until it
    /// answers `Ping`. It holds no shard until configured again.
    pub(crate) async fn wipe_and_restart(&mut self, i: usize) {
        self.nodes[i].wipe_and_restart().expect("wipe and respawn shardline-node");
        if let Err(e) = self.nodes[i].wait_ready().await {
            panic!("node did not restart after the wipe: {e}");
        }
    }

    /// Sends a client request to node `i` and waits up to [`CALL_TIMEOUT`].
    pub(crate) async fn request(&self, i: usize, req: &Request, route: Option<Route>) -> Result<Response, CallError> {
        call_once(&self.nodes[i].addr(), req, route, CALL_TIMEOUT).await
    }

    /// Sends a control request to node `i` and waits up to [`CALL_TIMEOUT`].
    pub(crate) async fn control(&self, i: usize, req: ControlRequest) -> Result<ControlResponse, CallError> {
        let route = Some(req.route());
        call_once(&self.nodes[i].addr(), &req, route, CALL_TIMEOUT).await
    }

    /// `ConfigureShard` shard 1 with the seed schema on node `i`.
    pub(crate) async fn configure(&self, i: usize) -> Result<ControlResponse, CallError> {
        let req = ControlRequest::ConfigureShard { shard: shard_spec(), schema: Schema::seed() };
        self.control(i, req).await
    }

    /// `BecomePrimary` at `term` on node `i`, every other node its follower. As the
    /// coordinator does, node `i` first answers the election query of `term`: a primary's
    /// first lease counts from that answer.
    pub(crate) async fn become_primary(
        &self,
        i: usize,
        term: u64,
        lease_ms: u64,
    ) -> Result<ControlResponse, CallError> {
        self.control(i, ControlRequest::ElectionQuery { shard: SHARD, term }).await?;
        let followers = (0..self.nodes.len()).filter(|&j| j != i).map(|j| self.server(j)).collect();
        let req = ControlRequest::BecomePrimary { shard: SHARD, term, followers, learners: vec![], lease_ms };
        self.control(i, req).await
    }

    /// `BecomeFollower` at `term` on node `i`, following node `primary`.
    pub(crate) async fn become_follower(
        &self,
        i: usize,
        term: u64,
        primary: usize,
    ) -> Result<ControlResponse, CallError> {
        let req = ControlRequest::BecomeFollower { shard: SHARD, term, primary: self.server(primary) };
        self.control(i, req).await
    }

    /// Configures shard 1 on every node, makes `primary` lead at `term` (with a long lease)
    /// and the others follow. Panics on any answer but `Ok`.
    pub(crate) async fn setup_shard(&self, primary: usize, term: u64) {
        for i in 0..self.nodes.len() {
            expect_ok(&format!("ConfigureShard on node {i}"), self.configure(i).await);
        }
        expect_ok("BecomePrimary", self.become_primary(primary, term, LEASE_MS).await);
        for i in (0..self.nodes.len()).filter(|&i| i != primary) {
            expect_ok(&format!("BecomeFollower on node {i}"), self.become_follower(i, term, primary).await);
        }
    }

    /// Configures shard 1 on every node, makes the others follow `primary` at `term`, then
    /// makes it lead with a lease of `lease_ms` (followers first, so a short lease is not
    /// spent waiting for them). Panics on any answer but `Ok`.
    pub(crate) async fn setup_shard_with_lease(&self, primary: usize, term: u64, lease_ms: u64) {
        for i in 0..self.nodes.len() {
            expect_ok(&format!("ConfigureShard on node {i}"), self.configure(i).await);
        }
        for i in (0..self.nodes.len()).filter(|&i| i != primary) {
            expect_ok(&format!("BecomeFollower on node {i}"), self.become_follower(i, term, primary).await);
        }
        expect_ok("BecomePrimary with a short lease", self.become_primary(primary, term, lease_ms).await);
    }

    /// Node `i`'s state for shard 1, from `Request::Status`.
    pub(crate) async fn state(&self, i: usize) -> Result<ShardState, String> {
        match self.request(i, &Request::Status, None).await {
            Ok(Response::Node(status)) => {
                status.shard(SHARD).cloned().ok_or_else(|| format!("node {i} reports no {SHARD}: {status:?}"))
            }
            Ok(other) => Err(format!("Status on node {i} answered {other:?}")),
            Err(e) => Err(format!("Status on node {i}: {e}")),
        }
    }

    /// Every row of shard 1 that node `i` serves, in key order.
    pub(crate) async fn rows(&self, i: usize) -> Result<Vec<Row>, ReadError> {
        let spec = shard_spec();
        let req = Request::Read {
            low: spec.low,
            high: spec.high().expect("non-empty shard"),
            consistency: shardline_protocol::Consistency::Any,
        };
        match self.request(i, &req, Some(Route::Shard(SHARD.0))).await {
            Ok(Response::Rows { rows, .. }) => Ok(rows),
            Ok(Response::Error(code)) => Err(ReadError::Refused(code)),
            Ok(other) => Err(ReadError::Call(CallError::Unexpected(format!("{other:?}")))),
            Err(e) => Err(ReadError::Call(e)),
        }
    }

    /// The last `count` entries of node `i`'s log of shard 1.
    pub(crate) async fn log(&self, i: usize, count: u32) -> Result<Vec<LogLine>, String> {
        match self.request(i, &Request::Log { shard: SHARD, count }, None).await {
            Ok(Response::Log(lines)) => Ok(lines),
            Ok(other) => Err(format!("Log on node {i} answered {other:?}")),
            Err(e) => Err(format!("Log on node {i}: {e}")),
        }
    }

    /// The tail of every node's stderr.
    pub(crate) fn stderr_tails(&self, lines: usize) -> String {
        self.nodes.iter().map(|n| n.stderr_tail(lines)).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.stderr_tails(40));
        }
    }
}

/// Panics unless `answer` is `ControlResponse::Ok`.
pub(crate) fn expect_ok(what: &str, answer: Result<ControlResponse, CallError>) {
    match answer {
        Ok(ControlResponse::Ok) => {}
        other => panic!("{what}: expected Ok, got {other:?}"),
    }
}
