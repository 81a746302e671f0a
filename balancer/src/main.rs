//! `shardline-balancer`: parses flags, sets up tracing, and runs the balancer until Ctrl-C
//! or SIGTERM.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use shardline_balancer::config::BalancerConfig;
use shardline_metrics::MetricsAddr;
use shardline_protocol::net::cli::ServerArgs;

/// Shardline's balancer: routes client requests (binary frames, or text lines from `nc`)
/// to the storage nodes by key, following the coordinator's topology.
///
/// Writes go to each shard's primary (a batch is split by shard), reads to one replica on
/// the shard's consistent-hash ring (or the primary with READ ... PRIMARY), admin
/// operations to the coordinator. Requests that meet a failover are retried until
/// --retry-deadline-ms. Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Address to serve clients on.
    #[arg(long, env = "SHARDLINE_LISTEN", default_value = "127.0.0.1:7000")]
    listen: String,
    /// The coordinator's address (topology and admin operations); several, comma-separated,
    /// when coordinators run on etcd (the balancer follows whichever leads).
    #[arg(long, env = "SHARDLINE_COORDINATOR", default_value = "127.0.0.1:7100")]
    coordinator: String,
    /// Client connections served at once; more are refused with Overloaded.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Requests one client connection may have in flight; more get Overloaded.
    #[arg(long, default_value_t = shardline_protocol::DEFAULT_MAX_IN_FLIGHT)]
    max_in_flight: usize,
    /// How long to keep retrying a request across a failover before answering its error.
    #[arg(long, default_value_t = 5000)]
    retry_deadline_ms: u64,
    /// Multiplexed connections kept open to each storage node.
    #[arg(long, default_value_t = 2)]
    pool_size: usize,
    /// Largest frame payload accepted or sent, in bytes (at least 1024); give the nodes the
    /// same --max-payload. An answer over it is answered TooLarge.
    #[arg(long, default_value_t = shardline_protocol::DEFAULT_MAX_PAYLOAD)]
    max_payload: usize,
    /// Where to serve Prometheus /metrics: HOST:PORT, +N (the --listen port plus N, on its
    /// host; a taken port then only costs the metrics) or off.
    #[arg(long, env = "SHARDLINE_METRICS_ADDR", default_value_t = MetricsAddr::default())]
    metrics_addr: MetricsAddr,
    /// Credentials, timeouts, TLS.
    #[command(flatten)]
    server: ServerArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shardline_protocol::net::cli::init_tracing();
    let args = Args::parse();
    let (gate, tls) = args.server.setup()?;
    let config = BalancerConfig {
        max_connections: args.max_connections,
        max_in_flight: args.max_in_flight,
        retry_deadline: Duration::from_millis(args.retry_deadline_ms),
        pool_size: args.pool_size,
        max_payload: args.max_payload,
        handshake_timeout: Duration::from_millis(args.server.handshake_timeout_ms),
        idle_timeout: Duration::from_millis(args.server.idle_timeout_ms),
        gate,
        ..BalancerConfig::new(args.coordinator)
    };
    config.validate()?;
    let listen = tokio::net::lookup_host(&args.listen)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .with_context(|| format!("cannot resolve --listen {}", args.listen))?;
    let ports = args.server.bind(listen, tls).await?;
    let shutdown = shardline_protocol::net::stop_signal().context("cannot watch for SIGTERM")?;
    shardline_balancer::run_with_metrics(ports, config, args.metrics_addr, shutdown).await?;
    Ok(())
}
