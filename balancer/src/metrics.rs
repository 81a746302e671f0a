//! The balancer's `/metrics`: client requests by operation and outcome with their latency,
//! connections and requests in flight ([`crate::service`] counts them), and, read at
//! scrape time from [`Stats`](crate::stats::Stats) and the topology cache, retries,
//! topology refreshes, the topology version and reads per server.

use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use shardline_protocol::{kind, ErrorCode, Frame, Message, Response};

use crate::service::Balancer;

/// Adds the balancer's metrics to `registry`.
pub fn register(balancer: &Arc<Balancer>, registry: &mut Registry) {
    balancer.requests().register(registry);
    registry.register_collector(Box::new(Counts(Arc::downgrade(balancer))));
}

/// The `code` label of an answer: `ok`, or the name of the error it carries.
pub(crate) fn code(answer: &Result<Frame, ErrorCode>) -> &'static str {
    match answer {
        Err(e) => e.name(),
        // A node's error forwarded as it came: only then is the payload decoded.
        Ok(frame) if frame.kind == kind::ERROR => match Response::from_frame(frame) {
            Ok(Response::Error(e)) => e.name(),
            _ => "Internal",
        },
        Ok(_) => shardline_metrics::OK,
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Server {
    server: String,
}

/// Reads the balancer's counters and topology at scrape time.
#[derive(Debug)]
struct Counts(Weak<Balancer>);

impl Collector for Counts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(b) = self.0.upgrade() else { return Ok(()) };
        let stats = b.stats();
        for (name, help, value) in [
            (
                "shardline_balancer_retries",
                "Parts of requests sent again (after a failover, a lost connection)",
                stats.retries(),
            ),
            ("shardline_balancer_topology_refreshes", "Topology fetches from the coordinator", stats.refreshes()),
        ] {
            ConstCounter::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)?;
        }
        let version = b.topology().current().version();
        let metric = encoder.encode_descriptor(
            "shardline_topology_version",
            "Version of the topology the balancer routes by (the highest it has seen)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(version as i64).encode(metric)?;
        let mut reads = encoder.encode_descriptor(
            "shardline_balancer_reads",
            "Shard reads sent to each server (the spread of the read ring)",
            None,
            MetricType::Counter,
        )?;
        for (server, n) in stats.reads() {
            ConstCounter::new(n).encode(reads.encode_family(&Server { server })?)?;
        }
        Ok(())
    }
}
