//! `shardline-coordinator`: Shardline's cluster manager.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use prometheus_client::registry::Registry;
use shardline_coordinator::config::CoordinatorConfig;
use shardline_coordinator::etcd::{Elector, EtcdMeta, EtcdUrl};
use shardline_coordinator::leadership::Leadership;
use shardline_coordinator::service::CoordinatorService;
use shardline_coordinator::spawner::{DockerConfig, DockerSpawner, ExternalSpawner, ProcessSpawner, Spawner};
use shardline_coordinator::Coordinator;
use shardline_metrics::{exporter, MetricsAddr};
use shardline_protocol::net;
use shardline_protocol::net::cli::ServerArgs;

/// Shardline's coordinator: keeps the cluster configuration (schema, shards, servers,
/// terms) in redb, heartbeats the storage nodes, elects a new primary when one dies,
/// restarts dead nodes, and pushes the topology to balancers. Answers the text mode on
/// its port too: `nc 127.0.0.1 7100`, then STATUS.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7100")]
    listen: SocketAddr,
    /// Directory for the cluster metadata (and, with the process spawner, node data).
    #[arg(long)]
    data_dir: PathBuf,
    /// Where the cluster metadata lives: `redb` (a file in --data-dir; one coordinator) or
    /// `etcd://HOST:PORT,HOST:PORT[/PREFIX]` (any number of coordinators, one leading).
    #[arg(long, default_value = "redb")]
    meta: String,
    /// The etcd lease of the leading coordinator, in milliseconds (etcd rounds it up to
    /// whole seconds and to its own minimum); a standby takes over within about this.
    #[arg(long, default_value_t = 1000)]
    etcd_ttl_ms: u64,
    /// The address other processes reach this coordinator at, as a standby names the
    /// leader (default: --listen; set it when listening on 0.0.0.0).
    #[arg(long)]
    advertise: Option<String>,
    /// How storage nodes are run: as child processes, as Docker containers, or by someone else.
    #[arg(long, value_enum, default_value_t = SpawnerKind::Process)]
    spawner: SpawnerKind,
    /// The shardline-node binary (process spawner). Default: next to this binary.
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Host the process spawner binds nodes to.
    #[arg(long, default_value = "127.0.0.1")]
    node_host: String,
    /// First port the process spawner gives a node.
    #[arg(long, default_value_t = 7200)]
    node_base_port: u16,
    /// Image of the storage-node containers (docker spawner); built locally, never pulled.
    #[arg(long, default_value = "shardline:latest")]
    docker_image: String,
    /// Docker network the nodes join (docker spawner); the coordinator must be on it too.
    #[arg(long, default_value = "shardline")]
    docker_network: String,
    /// Prefix of node container and volume names, `<prefix>-node-<name>` (docker spawner).
    #[arg(long, default_value = "shardline")]
    docker_prefix: String,
    /// Extra argument passed to every spawned node (repeatable), e.g. --node-arg=--write-timeout-ms=5000.
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    node_args: Vec<String>,
    /// NAME=HOST:PORT of a node run by someone else (external spawner; repeatable).
    #[arg(long = "node")]
    nodes: Vec<String>,
    /// Milliseconds between heartbeats to each node.
    #[arg(long, default_value_t = 100)]
    heartbeat_ms: u64,
    /// A node is dead after this many milliseconds without a heartbeat answer.
    #[arg(long, default_value_t = 400)]
    dead_after_ms: u64,
    /// A primary's lease, in milliseconds from each heartbeat (shorter than dead-after).
    #[arg(long, default_value_t = 300)]
    lease_ms: u64,
    /// Where to serve Prometheus /metrics: HOST:PORT, +N (the --listen port plus N, on its
    /// host; a taken port then only costs the metrics) or off. Nodes have their own
    /// (--node-arg=--metrics-addr=...; by default their port plus 1000).
    #[arg(long, default_value_t = MetricsAddr::default())]
    metrics_addr: MetricsAddr,
    /// Credentials, timeouts, TLS.
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SpawnerKind {
    /// Child processes of the coordinator, each with a data directory under --data-dir.
    Process,
    /// Nodes run by someone else; give their addresses with --node.
    External,
    /// Docker containers on --docker-network from --docker-image, one volume each.
    Docker,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shardline_protocol::net::cli::init_tracing();
    let args = Args::parse();
    let mut cfg = CoordinatorConfig::new(args.listen, &args.data_dir);
    cfg.heartbeat_interval = Duration::from_millis(args.heartbeat_ms);
    cfg.dead_after = Duration::from_millis(args.dead_after_ms);
    cfg.lease = Duration::from_millis(args.lease_ms);
    cfg.limits = args.server.limits(cfg.limits);
    cfg.validate()?;
    let (gate, tls) = args.server.setup()?;
    // The nodes this coordinator starts check the same credentials and serve the same TLS.
    let mut node_args = args.node_args.clone();
    node_args.extend(args.server.passed_on().context("the credential and certificate paths")?);
    let spawner = make_spawner(&args, node_args).await?;
    let ports = args.server.bind(cfg.listen, tls).await?;
    let limits = cfg.limits;
    let mut elector = None;
    let coordinator = if args.meta == "redb" {
        Coordinator::open(cfg, spawner).context("opening the coordinator's data directory")?
    } else {
        let url = EtcdUrl::parse(&args.meta).map_err(anyhow::Error::msg)?;
        let ttl = Duration::from_millis(args.etcd_ttl_ms);
        let store = Arc::new(EtcdMeta::start(url.clone(), ttl / 2).context("starting the etcd client")?);
        let leadership = Arc::new(Leadership::elected());
        tracing::info!(endpoints = ?url.endpoints, prefix = %url.prefix, "metadata in etcd: standing by until elected");
        elector = Some(Elector::new(
            url,
            args.advertise.clone().unwrap_or_else(|| args.listen.to_string()),
            ttl,
            store.clone(),
            leadership.clone(),
        ));
        Coordinator::open_with(cfg, spawner, store, leadership).context("opening the coordinator")?
    };
    let elector = elector.map(|e| tokio::spawn(e.run(coordinator.clone())));
    tracing::info!(listen = %args.listen, "coordinator listening");
    let mut registry = Registry::default();
    shardline_coordinator::metrics::register(&coordinator, &mut registry);
    let _metrics = exporter::start(args.metrics_addr, args.listen, registry).await?;
    let reconcile = tokio::spawn(coordinator.clone().reconcile_loop());
    let shutdown = net::stop_signal().context("cannot watch for SIGTERM")?;
    net::serve_ports(ports, Arc::new(CoordinatorService(coordinator.clone())), limits, gate, shutdown).await;
    reconcile.abort();
    if let Some(elector) = elector {
        elector.abort();
    }
    coordinator.shutdown().await;
    Ok(())
}

/// The spawner `--spawner` names, set up from the flags; `node_args` go to every node.
async fn make_spawner(args: &Args, node_args: Vec<String>) -> anyhow::Result<Box<dyn Spawner>> {
    Ok(match args.spawner {
        SpawnerKind::Process => {
            let node_bin = match args.node_bin.clone() {
                Some(p) => p,
                None => std::env::current_exe()?.with_file_name("shardline-node"),
            };
            if !node_bin.exists() {
                bail!("node binary {} not found: build it (cargo build) or pass --node-bin", node_bin.display());
            }
            let nodes_dir = args.data_dir.join("nodes");
            Box::new(
                ProcessSpawner::new(node_bin, args.node_host.clone(), args.node_base_port, node_args)
                    .adopting(nodes_dir),
            )
        }
        SpawnerKind::External => {
            let mut addresses = BTreeMap::new();
            for node in &args.nodes {
                let (name, addr) =
                    node.split_once('=').with_context(|| format!("--node {node}: want NAME=HOST:PORT"))?;
                addresses.insert(name.to_owned(), addr.to_owned());
            }
            Box::new(ExternalSpawner::new(addresses))
        }
        SpawnerKind::Docker => {
            // The nodes read the same files, at the same paths, through read-only mounts.
            let mut shared_dirs: Vec<String> = (args.server.files()?.into_iter())
                .filter_map(|(_, path)| path.parent().map(|d| d.display().to_string()))
                .collect();
            shared_dirs.sort();
            shared_dirs.dedup();
            let docker = DockerConfig {
                image: args.docker_image.clone(),
                network: args.docker_network.clone(),
                prefix: args.docker_prefix.clone(),
                node_args,
                shared_dirs,
            };
            Box::new(DockerSpawner::connect(docker).await.context("setting up the docker spawner")?)
        }
    })
}
