//! `shardline-node`: a Shardline storage node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::borrow::Cow;

use anyhow::Context;
use clap::Parser;
use prometheus_client::registry::Registry;
use shardline_metrics::{exporter, MetricsAddr};
use shardline_protocol::net;
use shardline_protocol::net::cli::ServerArgs;
use shardline_storage_node::config::NodeConfig;
use shardline_storage_node::failpoint::Failpoints;
use shardline_storage_node::node::Node;

/// A Shardline storage node: holds shard replicas (rows in redb, a checksummed replicated
/// log) and serves clients, peers and the coordinator on one port. The same port answers
/// a line-based text mode: try `nc HOST PORT` and type HELP.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// This node's server name, as the coordinator knows it (e.g. Server0).
    #[arg(long)]
    id: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7200")]
    listen: SocketAddr,
    /// Directory for shard replicas (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// Milliseconds a write may wait for a majority before it is answered Timeout.
    #[arg(long, default_value_t = 2000)]
    write_timeout_ms: u64,
    /// Milliseconds between a primary's appends to an idle follower.
    #[arg(long, default_value_t = 50)]
    sync_heartbeat_ms: u64,
    /// Milliseconds a primary waits for a follower before calling it unreachable.
    #[arg(long, default_value_t = 500)]
    peer_timeout_ms: u64,
    /// A follower further behind than this many entries is sent a snapshot.
    #[arg(long, default_value_t = 1000)]
    snapshot_lag: u64,
    /// Bytes a second a shard replica sends snapshots at, at most, to all the followers it
    /// is catching up together (0: unlimited; default 64 MiB/s).
    #[arg(long, default_value_t = shardline_storage_node::replica::DEFAULT_SNAPSHOT_RATE)]
    snapshot_rate: u64,
    /// Log entries kept behind the point every replica has applied.
    #[arg(long, default_value_t = 1000)]
    log_retain: u64,
    /// Largest frame payload accepted or sent, in bytes (at least 1024): an answer over it is
    /// answered TooLarge, and so is a write whose log entry could not be replicated under it.
    #[arg(long, default_value_t = shardline_protocol::DEFAULT_MAX_PAYLOAD)]
    max_payload: usize,
    /// Requests one connection may have in flight.
    #[arg(long, default_value_t = shardline_protocol::DEFAULT_MAX_IN_FLIGHT)]
    max_in_flight: usize,
    /// Where to serve Prometheus /metrics: HOST:PORT, +N (the --listen port plus N, on its
    /// host; a taken port then only costs the metrics) or off.
    #[arg(long, default_value_t = MetricsAddr::default())]
    metrics_addr: MetricsAddr,
    /// Credentials, timeouts, TLS.
    #[command(flatten)]
    server: ServerArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shardline_protocol::net::cli::init_tracing();
    let args = Args::parse();
    let mut cfg = NodeConfig::new(args.id, args.listen, args.data_dir);
    cfg.write_timeout = Duration::from_millis(args.write_timeout_ms);
    cfg.sync_heartbeat = Duration::from_millis(args.sync_heartbeat_ms);
    cfg.peer_timeout = Duration::from_millis(args.peer_timeout_ms);
    cfg.snapshot_lag = args.snapshot_lag;
    cfg.snapshot_rate = args.snapshot_rate;
    cfg.log_retain = args.log_retain;
    cfg.max_payload = args.max_payload;
    cfg.max_in_flight = args.max_in_flight;
    cfg.validate()?;
    let failpoints = Failpoints::from_env().map_err(anyhow::Error::msg)?;
    let listen = cfg.listen;
    let limits = args.server.limits(cfg.limits());
    let (gate, tls) = args.server.setup()?;
    let id = cfg.id.clone();
    let node = Node::open(cfg, failpoints).context("opening the data directory")?;
    let mut registry = Registry::with_labels([(Cow::from("node"), Cow::from(id))].into_iter());
    shardline_storage_node::metrics::register(&node, &mut registry);
    let _metrics = exporter::start(args.metrics_addr, listen, registry).await?;
    let ports = args.server.bind(listen, tls).await?;
    tracing::info!(%listen, tls = ports.tls.is_some(), "listening");
    let shutdown = net::stop_signal().context("cannot watch for SIGTERM")?;
    node.run(ports, limits, gate, shutdown).await;
    Ok(())
}
