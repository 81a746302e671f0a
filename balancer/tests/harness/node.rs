//! A storage node running in-process, in a runtime of its own so it can be killed.

use std::sync::Arc;

use shardline_protocol::net;
use shardline_protocol::ServerAddr;
use shardline_storage_node::{config::NodeConfig, failpoint::Failpoints, node::Node};
use tokio::runtime::Runtime;

/// One storage node: name, address, data directory and the runtime it runs in.
pub(crate) struct TestNode {
    name: String,
    addr: String,
    runtime: Option<Runtime>,
    _dir: tempfile::TempDir,
}

impl TestNode {
    /// Opens a node called `name` on a fresh `127.0.0.1:0` port and a temporary directory.
    pub(crate) fn start(name: &str) -> TestNode {
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("node-{name}"))
            .enable_all()
            .build()
            .expect("node runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("local addr");
        let cfg = NodeConfig::new(name, addr, dir.path());
        let limits = cfg.limits();
        {
            // Shard tasks and the listener belong to the node's runtime, not the test's.
            let _inside = runtime.enter();
            let node: Arc<Node> = Node::open(cfg, Failpoints::none()).expect("open node");
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            runtime.spawn(node.serve(listener, limits, std::future::pending()));
        }
        TestNode { name: name.to_owned(), addr: addr.to_string(), runtime: Some(runtime), _dir: dir }
    }

    /// The node's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The node's `host:port`.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Name and address, as control messages carry them.
    pub(crate) fn server(&self) -> ServerAddr {
        ServerAddr { name: self.name.clone(), addr: self.addr.clone() }
    }

    /// Whether the node still runs.
    pub(crate) fn alive(&self) -> bool {
        self.runtime.is_some()
    }

    /// Kills the node: every task, connection and the listener go at once.
    pub(crate) fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}
