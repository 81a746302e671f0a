//! The coordinator's `/metrics`: its requests, and, read at scrape time, elections and
//! failovers (the core's counters), the topology version, servers and shards as the
//! published topology shows them, and node restarts.
//!
//! A scrape copies the core's counters under the core's lock, which the driver holds
//! only for a step (never across an await); the topology is the last one published.

use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::cluster::Coordinator;

/// Adds the coordinator's metrics to `registry`: its requests and the cluster's state.
pub fn register(coordinator: &Arc<Coordinator>, registry: &mut Registry) {
    coordinator.requests().register(registry);
    registry.register_collector(Box::new(Cluster(Arc::downgrade(coordinator))));
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Health {
    health: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Shard {
    shard: String,
}

/// Reads the coordinator at scrape time.
#[derive(Debug)]
struct Cluster(Weak<Coordinator>);

/// One unlabelled counter or gauge: its name, help, type and value.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, kind)?;
    match kind {
        MetricType::Counter => ConstCounter::new(value).encode(metric),
        _ => ConstGauge::new(value as i64).encode(metric),
    }
}

impl Collector for Cluster {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(c) = self.0.upgrade() else { return Ok(()) };
        let counters = c.counters();
        let t = c.topology();
        let mut elections = encoder.encode_descriptor(
            "shardline_elections",
            "Elections decided: won (a primary chosen) or no_quorum (too few votes; retried)",
            None,
            MetricType::Counter,
        )?;
        for (outcome, n) in [("won", counters.elections), ("no_quorum", counters.failed_elections)] {
            ConstCounter::new(n).encode(elections.encode_family(&Outcome { outcome })?)?;
        }
        single(
            &mut encoder,
            "shardline_failovers",
            "Elections that gave a shard another primary than the one it had (since this coordinator started)",
            MetricType::Counter,
            counters.failovers,
        )?;
        let last = encoder.encode_descriptor(
            "shardline_last_election_duration",
            "How long the last election took, from its new term to the winner leading",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        ConstGauge::new(counters.last_election_ms as f64 / 1000.0).encode(last)?;
        single(
            &mut encoder,
            "shardline_topology_version",
            "Version of the topology the coordinator publishes (bumped on every change)",
            MetricType::Gauge,
            t.version,
        )?;
        let mut servers =
            encoder.encode_descriptor("shardline_servers", "Storage nodes, by health", None, MetricType::Gauge)?;
        let healthy = t.servers.iter().filter(|s| s.healthy).count() as i64;
        for (health, n) in [("healthy", healthy), ("unhealthy", t.servers.len() as i64 - healthy)] {
            ConstGauge::new(n).encode(servers.encode_family(&Health { health })?)?;
        }
        single(
            &mut encoder,
            "shardline_node_restarts",
            "Storage nodes the coordinator started again after they stopped answering",
            MetricType::Counter,
            c.respawns(),
        )?;
        let mut terms = encoder.encode_descriptor(
            "shardline_coordinator_shard_term",
            "Each shard's term, as the coordinator persisted it",
            None,
            MetricType::Gauge,
        )?;
        for s in &t.shards {
            ConstGauge::new(s.term as i64).encode(terms.encode_family(&Shard { shard: s.spec.id.to_string() })?)?;
        }
        let mut has_primary = encoder.encode_descriptor(
            "shardline_shard_has_primary",
            "1 when the shard has a primary in the published topology, 0 while it has none",
            None,
            MetricType::Gauge,
        )?;
        for s in &t.shards {
            let labels = Shard { shard: s.spec.id.to_string() };
            ConstGauge::new(i64::from(s.primary.is_some())).encode(has_primary.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
