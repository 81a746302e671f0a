//! Routing in the client (the Redis Cluster and Kafka client model): the balancer's own
//! routing, retries and topology following, run inside the client process, so a request
//! goes straight to the storage node that serves it.
//!
//! The router subscribes to the coordinator's topology, sends writes to their shard's
//! primary and reads to one replica on the shard's ring (or the primary, for a
//! linearizable read), splits batches by shard, and on `NotPrimary`, a dead node or a
//! version change refreshes the topology and retries with the same (client id, sequence):
//! it is [`shardline_balancer::service::Balancer`], so the rules are the balancer's by
//! construction. Its node connections are pooled [`shardline_protocol::net::MuxConn`]s
//! shared by every clone of the client.

use std::sync::Arc;

use shardline_balancer::config::BalancerConfig;
use shardline_balancer::service::Balancer;
use shardline_balancer::topology;
use shardline_protocol::Frame;
use tokio::task::JoinHandle;

use crate::client::ClientConfig;
use crate::error::ClientError;

/// The in-process router and the task that follows the coordinator's topology.
#[derive(Debug)]
pub(crate) struct Router {
    balancer: Arc<Balancer>,
    follower: JoinHandle<()>,
}

impl Router {
    /// A router fed by the coordinator at `coordinator`, with `config`'s limits and
    /// `pool_size` connections per node.
    pub(crate) fn start(coordinator: &str, config: &ClientConfig, pool_size: usize) -> Result<Router, ClientError> {
        let cfg = BalancerConfig {
            max_payload: config.max_payload,
            connect_timeout: config.connect_timeout,
            retry_deadline: config.timeout,
            call_timeout: config.timeout,
            admin_timeout: config.admin_timeout,
            pool_size,
            credential: config.credential.clone(),
            tls: config.tls.clone(),
            ..BalancerConfig::new(coordinator)
        };
        cfg.validate().map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
        let balancer = Arc::new(Balancer::new(cfg.clone()));
        let follower = tokio::spawn(topology::follow(balancer.topology().clone(), cfg));
        Ok(Router { balancer, follower })
    }

    /// Routes `frame` and returns the answer (errors come back as `Error` frames).
    pub(crate) async fn call(&self, frame: Frame) -> Frame {
        self.balancer.handle(frame).await
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.follower.abort();
    }
}
