//! Nodes, a fake coordinator and a balancer, with the coordinator's moves played by the
//! test: configure shards, assign roles, elect a new primary after a kill, push topology.

use std::sync::Arc;
use std::time::Duration;

use shardline_balancer::config::BalancerConfig;
use shardline_protocol::net::Conn;
use shardline_protocol::{
    ControlRequest, ControlResponse, Request, Response, Schema, ServerInfo, ShardId, ShardSpec, ShardTopology,
    Topology, DEFAULT_MAX_PAYLOAD,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::coordinator::FakeCoordinator;
use super::node::TestNode;
use super::Budget;

/// A lease that never lapses during a test.
pub(crate) const LEASE_MS: u64 = 60_000;
/// Longest any single call in a test may take.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Which nodes hold which shards, and who leads each.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// How many nodes (`Server0..`).
    pub nodes: usize,
    /// Per shard: its spec, the nodes holding it, and the index of its primary.
    pub shards: Vec<(ShardSpec, Vec<usize>, usize)>,
}

impl Layout {
    /// Three nodes; shards sh1 `[0,100)`, sh2 `[100,200)`, sh3 `[200,300)` on every node,
    /// led by Server0, Server1 and Server2.
    pub(crate) fn three_by_three() -> Layout {
        Layout::three_of(100)
    }

    /// Like [`Layout::three_by_three`] with shards of `size` keys from 0.
    pub(crate) fn three_of(size: u64) -> Layout {
        let spec = |id: u32| ShardSpec { id: ShardId(id), low: i64::from(id - 1) * size as i64, size };
        Layout { nodes: 3, shards: (1..=3).map(|id| (spec(id), vec![0, 1, 2], id as usize - 1)).collect() }
    }
}

/// A running cluster behind a balancer.
pub(crate) struct Cluster {
    /// The storage nodes, by index.
    pub nodes: Vec<TestNode>,
    /// The fake coordinator.
    pub coordinator: Arc<FakeCoordinator>,
    /// Where the balancer listens.
    pub balancer_addr: String,
    /// The current layout (primaries change on failover).
    pub layout: Layout,
    terms: Vec<u64>,
    balancer: Option<JoinHandle<()>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Cluster {
    /// Starts the nodes, assigns roles at term 1, starts the coordinator and a balancer
    /// configured by `tweak`, and waits until the balancer holds the topology.
    pub(crate) async fn start(layout: Layout, tweak: impl FnOnce(&mut BalancerConfig)) -> Cluster {
        let nodes = (0..layout.nodes).map(|i| TestNode::start(&format!("Server{i}"))).collect();
        let terms = vec![1; layout.shards.len()];
        let mut cluster = Cluster {
            nodes,
            coordinator: Arc::new(FakeCoordinator::start(Topology::default()).await),
            balancer_addr: String::new(),
            layout,
            terms,
            balancer: None,
            stop: None,
        };
        for s in 0..cluster.layout.shards.len() {
            let (spec, replicas, primary) = cluster.layout.shards[s].clone();
            for &i in &replicas {
                let configure = ControlRequest::ConfigureShard { shard: spec, schema: Schema::seed() };
                cluster.expect_ok(i, configure).await;
            }
            cluster.assign(s, primary, 1).await;
        }
        let topology = cluster.topology_now();
        cluster.coordinator.update(|t| *t = topology);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        cluster.balancer_addr = listener.local_addr().expect("addr").to_string();
        let mut cfg = BalancerConfig::new(cluster.coordinator.addr());
        tweak(&mut cfg);
        let (stop, stopped) = oneshot::channel::<()>();
        cluster.stop = Some(stop);
        cluster.balancer = Some(tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            shardline_balancer::run(listener, cfg, shutdown).await.expect("balancer runs");
        }));
        cluster.wait_for_topology(1).await;
        cluster
    }

    /// Waits until the balancer reports topology version `version` or later.
    pub(crate) async fn wait_for_topology(&self, version: u64) {
        let mut client = self.client().await;
        let mut budget = Budget::new("the balancer taking the topology", Duration::from_secs(10));
        loop {
            if let Response::Stats(pairs) = client.call(&Request::Stats).await {
                let held = pairs.iter().find(|(k, _)| k == "topology_version").and_then(|(_, v)| v.parse::<u64>().ok());
                if held.is_some_and(|v| v >= version) {
                    return;
                }
            }
            assert!(budget.retry().await, "{}", budget.spent());
        }
    }

    /// A new client connection to the balancer.
    pub(crate) async fn client(&self) -> Client {
        Client::connect(&self.balancer_addr).await
    }

    /// Sends a control request to node `i`.
    pub(crate) async fn control(&self, i: usize, req: ControlRequest) -> ControlResponse {
        let mut conn = Conn::connect(self.nodes[i].addr(), CALL_TIMEOUT, DEFAULT_MAX_PAYLOAD)
            .await
            .unwrap_or_else(|e| panic!("connect to node {i}: {e}"));
        conn.call(&req, CALL_TIMEOUT).await.unwrap_or_else(|e| panic!("{req:?} on node {i}: {e}"))
    }

    async fn expect_ok(&self, i: usize, req: ControlRequest) {
        let what = format!("{req:?} on node {i}");
        match self.control(i, req).await {
            ControlResponse::Ok => {}
            other => panic!("{what}: {other:?}"),
        }
    }

    /// Makes node `primary` lead shard number `s` at `term`, every other live replica follow.
    async fn assign(&self, s: usize, primary: usize, term: u64) {
        let (spec, replicas, _) = self.layout.shards[s].clone();
        let followers = replicas.iter().filter(|&&i| i != primary).map(|&i| self.nodes[i].server()).collect();
        let lead =
            ControlRequest::BecomePrimary { shard: spec.id, term, followers, learners: vec![], lease_ms: LEASE_MS };
        // The first lease counts from the winner's answer to the election query.
        self.control(primary, ControlRequest::ElectionQuery { shard: spec.id, term }).await;
        self.expect_ok(primary, lead).await;
        for &i in replicas.iter().filter(|&&i| i != primary) {
            if self.nodes[i].alive() {
                let follow =
                    ControlRequest::BecomeFollower { shard: spec.id, term, primary: self.nodes[primary].server() };
                self.expect_ok(i, follow).await;
            }
        }
    }

    /// The topology the coordinator would publish now (version left to the coordinator).
    pub(crate) fn topology_now(&self) -> Topology {
        let name = |i: usize| self.nodes[i].name().to_owned();
        let shards = self
            .layout
            .shards
            .iter()
            .zip(&self.terms)
            .map(|((spec, replicas, primary), term)| ShardTopology {
                spec: *spec,
                term: *term,
                primary: Some(name(*primary)),
                replicas: replicas.iter().map(|&i| name(i)).collect(),
                readable: replicas.iter().filter(|&&i| self.nodes[i].alive()).map(|&i| name(i)).collect(),
            })
            .collect();
        let servers = self
            .nodes
            .iter()
            .map(|n| ServerInfo {
                name: n.name().to_owned(),
                addr: n.addr().to_owned(),
                healthy: n.alive(),
                last_heartbeat_ms: Some(0),
            })
            .collect();
        Topology { version: 0, schema: Some(Schema::seed()), shards, servers, copies: Vec::new() }
    }

    /// Kills the primary of shard number `s`, elects the live replica with the highest log
    /// at the next term (asking every live replica first, which fences the old primary),
    /// and pushes the new topology. Returns the new primary's index.
    pub(crate) async fn fail_over(&mut self, s: usize) -> usize {
        let (spec, replicas, old) = self.layout.shards[s].clone();
        self.nodes[old].kill();
        let term = self.terms[s] + 1;
        let mut best: Option<(u64, u64, usize)> = None;
        for &i in replicas.iter().filter(|&&i| self.nodes[i].alive()) {
            let query = ControlRequest::ElectionQuery { shard: spec.id, term };
            match self.control(i, query).await {
                ControlResponse::Vote(v) if v.electable && v.term == term => {
                    let mine = (v.last.term, v.last.index, i);
                    if best.is_none_or(|b| (mine.0, mine.1) > (b.0, b.1)) {
                        best = Some(mine);
                    }
                }
                other => panic!("election query on node {i}: {other:?}"),
            }
        }
        let winner = best.expect("a live replica to elect").2;
        self.assign(s, winner, term).await;
        self.layout.shards[s].2 = winner;
        self.terms[s] = term;
        let topology = self.topology_now();
        self.coordinator.update(|t| {
            let version = t.version;
            *t = topology;
            t.version = version;
        });
        winner
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(b) = self.balancer.take() {
            b.abort();
        }
    }
}

/// A client of the balancer: one call at a time, each with a deadline.
pub(crate) struct Client {
    conn: Conn,
}

impl Client {
    /// Connects to the balancer at `addr`.
    pub(crate) async fn connect(addr: &str) -> Client {
        let conn = Conn::connect(addr, CALL_TIMEOUT, DEFAULT_MAX_PAYLOAD)
            .await
            .unwrap_or_else(|e| panic!("connect to the balancer: {e}"));
        Client { conn }
    }

    /// Sends `req` and returns the answer (panics if none comes in time).
    pub(crate) async fn call(&mut self, req: &Request) -> Response {
        self.conn.call(req, CALL_TIMEOUT).await.unwrap_or_else(|e| panic!("{req:?}: {e}"))
    }
}
