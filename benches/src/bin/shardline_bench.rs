//! `shardline-bench`: load for a Shardline cluster, with HdrHistogram latency reports;
//! `shardline-bench seed` reproduces the course system's table on local clusters;
//! `shardline-bench peer` runs Redis Cluster and Shardline side by side;
//! `shardline-bench failover` faults primaries under load and times the failovers. Flags are parsed
//! here; the work is in the `shardline_benches` library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use shardline_benches::failover::{self, FailoverSpec, FaultKind, Target};
use shardline_benches::peer::{self, PeerSpec};
use shardline_benches::report::Report;
use shardline_benches::seed::{self, SeedSpec};
use shardline_benches::spec::{parse_duration, BenchSpec, KeyDist, Mix, Stop};
use shardline_benches::{runner, BenchError};

/// Load generator for a Shardline cluster. Sends a mix of reads, range reads, inserts,
/// updates and deletes through the balancer from several connections, closed loop or at a
/// fixed rate (open loop, latency from each operation's due time, so stalls are not hidden),
/// and reports throughput and latency percentiles per operation (HdrHistogram), the spread of
/// reads over each shard's replicas, and the memory of the balancer and the nodes. Writes
/// `.hgrm` files, `latency.svg`, `spread.svg` and `report.json` to --out.
#[derive(Debug, Parser)]
#[command(
    name = "shardline-bench",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  shardline-bench --mix read=80,write=20 --keys zipfian --connections 16 --pipeline 4 --duration 30s\n  \
                  shardline-bench --rate 5000 --requests 100000 --mix read=90,update=10 --json > report.json\n  \
                  shardline-bench seed     (make bench-seed)\n  shardline-bench peer     (make bench-peer)\n  shardline-bench failover (make bench-failover)"
)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Reproduce the course system's table: its three layouts on local clusters (`shardline
    /// up`), 10,000 writes and 10,000 reads from 20 workers, beside its published figures.
    Seed(SeedArgs),
    /// Redis Cluster (3 masters + 3 replicas, redis-benchmark --cluster) and Shardline (6
    /// nodes, 3 shards × 2 replicas) on this machine, same concurrency, pipelining and value
    /// size, side by side. Needs redis-server, redis-cli and redis-benchmark (make bench-peer).
    Peer(PeerArgs),
    /// Kill, pause or cut off a shard's primary N times under a steady mixed load through
    /// the balancer; report per fault kind how long until the shard acknowledged a write and
    /// served a read again (p50/p99/max), then read everything back: acknowledged writes
    /// lost, refused writes present. Writes report.json and timeline.svg to --out.
    Failover(FailoverArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The balancer's address.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: String,
    /// Operation weights: read (one key), range (a range read of --range-len keys), write
    /// (insert a fresh key), update, delete. E.g. read=80,write=20.
    #[arg(long, default_value = "read=80,write=20")]
    mix: String,
    /// How keys are chosen over the cluster's key space (the shards' ranges).
    #[arg(long, value_enum, default_value = "uniform")]
    keys: KeyDist,
    /// Bytes in each string column of written rows (the schema comes from the cluster).
    #[arg(long, default_value_t = 64)]
    row_size: usize,
    /// Keys per range read.
    #[arg(long, default_value_t = 100)]
    range_len: u64,
    /// Client connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// How long to measure, after the warm-up (10s, 500ms, 2m).
    #[arg(long, default_value = "10s", conflicts_with = "requests")]
    duration: String,
    /// Measure this many operations instead of a duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Load sent but not measured first.
    #[arg(long, default_value = "2s")]
    warmup: String,
    /// Open loop: this many operations per second over all connections, latency measured
    /// from when each was due. Default: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Where the .hgrm files, the SVG charts and report.json go.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// Print the report as JSON on stdout (and no progress bar).
    #[arg(long)]
    json: bool,
    /// Seconds one call may take before it counts as an error.
    #[arg(long, default_value = "10s")]
    timeout: String,
    /// Use at most this many keys of the cluster's key space, spread over its shards.
    #[arg(long, default_value_t = 1_000_000)]
    key_space: u64,
    /// Rows to have before the run, inserted if missing (default: up to 10,000 when the mix
    /// reads, updates or deletes; 0 for write-only mixes).
    #[arg(long)]
    preload: Option<u64>,
    /// Seed for key and operation choices.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Route in the client, straight to the nodes, on the topology of the coordinator at
    /// this address (the workers share one routing client) instead of through --addr.
    #[arg(long, value_name = "COORDINATOR")]
    direct: Option<String>,
    /// CA certificate (PEM) to verify the servers against: with it, every connection is
    /// TLS (as for the CLI; `shardline up --tls` prints where its CA is).
    #[arg(long, env = "SHARDLINE_TLS_CA")]
    tls_ca: Option<PathBuf>,
}

/// The flags of every bench that starts its own `shardline up` cluster.
#[derive(Debug, Args)]
struct OwnCluster {
    /// The `shardline` binary, to start a cluster (default: next to this one).
    #[arg(long)]
    shardline: Option<PathBuf>,
    /// Print the results as JSON on stdout (and no progress bar).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct SeedArgs {
    /// Reads, and writes, per layout.
    #[arg(long, default_value_t = 10_000)]
    requests: u64,
    /// Concurrent workers.
    #[arg(long, default_value_t = 20)]
    workers: usize,
    /// Bytes of the Stud_name column.
    #[arg(long, default_value_t = 16)]
    row_size: usize,
    /// Where each run's files go.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    #[command(flatten)]
    own: OwnCluster,
}

#[derive(Debug, Args)]
struct PeerArgs {
    /// Concurrent clients (redis-benchmark -c, shardline-bench --connections).
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Pipeline depths to compare.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pipelines: Vec<usize>,
    /// Value bytes (redis-benchmark -d, shardline-bench --row-size).
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// redis-benchmark SET requests per run (GET runs send 5 times as many).
    #[arg(long, default_value_t = 200_000)]
    redis_requests: u64,
    /// Length of each Shardline run.
    #[arg(long, default_value = "10s")]
    duration: String,
    /// Where Shardline's runs leave their files.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// A flag for the Shardline cluster's `shardline up`, repeatable: `--up-arg=--tls` (TLS
    /// on every port), `--up-arg=--no-auth` (no credentials asked), to see what each costs.
    #[arg(long = "up-arg", allow_hyphen_values = true)]
    up_args: Vec<String>,
    #[command(flatten)]
    own: OwnCluster,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  shardline-bench failover --events 20 --kinds kill,pause,partition   (own cluster; partition needs root)\n  \
                  shardline-bench failover --addr 127.0.0.1:7000 --nodes-dir shardline-data/coordinator/nodes\n  \
                  shardline-bench failover --docker --prefix shardline --addr 127.0.0.1:7000"
)]
struct FailoverArgs {
    /// Faults per kind.
    #[arg(long, default_value_t = 20)]
    events: usize,
    /// Fault kinds, taken in turn: kill (SIGKILL / docker kill), pause (SIGSTOP / docker
    /// pause, for --pause), partition (iptables on the node's cgroup, as root / docker
    /// network disconnect, for --pause).
    #[arg(long, value_delimiter = ',', default_value = "kill,pause,partition")]
    kinds: Vec<String>,
    /// How long a pause or a partition lasts.
    #[arg(long, default_value = "3s")]
    pause: String,
    /// A running cluster's balancer. Without it (and without --docker) the bench starts its
    /// own `shardline up` cluster in a temporary directory.
    #[arg(long)]
    addr: Option<String>,
    /// With --addr: the coordinator's nodes directory, where `shardline up` keeps each
    /// node's `<name>.pid`.
    #[arg(long, default_value = "shardline-data/coordinator/nodes")]
    nodes_dir: PathBuf,
    /// The nodes are containers of the Docker stack (`make up`) named by --prefix.
    #[arg(long)]
    docker: bool,
    /// The Docker stack's SHARDLINE_PREFIX.
    #[arg(long, default_value = "shardline")]
    prefix: String,
    /// Client connections, one worker each.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Calls per second over all connections.
    #[arg(long, default_value_t = 800.0)]
    rate: f64,
    /// Percent of calls that are writes of fresh keys (the rest read a few keys).
    #[arg(long, default_value_t = 50)]
    write_percent: u32,
    /// Read from each shard's primary (linearizable) instead of any replica.
    #[arg(long)]
    primary_reads: bool,
    /// Steady load before the first fault and after each recovery.
    #[arg(long, default_value = "1s")]
    interval: String,
    /// Longest wait for the cluster to be healthy again after a fault.
    #[arg(long, default_value = "60s")]
    recover_timeout: String,
    /// Where report.json and timeline.svg go.
    #[arg(long, default_value = "bench-out/failover")]
    out: PathBuf,
    #[command(flatten)]
    own: OwnCluster,
    /// Seed for the load's choices.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn main() -> ExitCode {
    let cli: Cli = match shardline::cli::parse_or_exit("shardline-bench") {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(interruptible(run(cli))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = if e.downcast_ref::<BenchError>().is_some_and(|b| matches!(b, BenchError::InvalidSpec(_))) {
                2
            } else {
                1
            };
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(code)
        }
    }
}

/// Runs `work` until it ends or Ctrl-C / SIGTERM arrives; dropping it then stops every
/// process it started (their guards kill them by pid).
async fn interruptible(work: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        _ = term.recv() => bail!("terminated"),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // A cluster that asks for credentials: SHARDLINE_CREDENTIALS names the file (as for the CLI).
    if let Some(path) = std::env::var_os("SHARDLINE_CREDENTIALS") {
        let credential = shardline::Credential::load(std::path::Path::new(&path))?;
        shardline_protocol::net::auth::set_outgoing(Some(credential));
    }
    if let Some(ca) = &cli.run.tls_ca {
        shardline_protocol::net::tls::set_outgoing(Some(shardline::ClientTls::load(ca)?));
    }
    match cli.command {
        None => bench(cli.run).await,
        Some(Command::Seed(args)) => seed_table(args).await,
        Some(Command::Peer(args)) => peer_table(args).await,
        Some(Command::Failover(args)) => failover_table(args).await,
    }
}

fn spec_from(a: RunArgs) -> Result<BenchSpec, BenchError> {
    let stop = match a.requests {
        Some(n) => Stop::Requests(n),
        None => Stop::Duration(parse_duration(&a.duration)?),
    };
    let spec = BenchSpec {
        addr: a.addr,
        mix: a.mix.parse::<Mix>()?,
        keys: a.keys,
        row_size: a.row_size,
        range_len: a.range_len,
        connections: a.connections,
        pipeline: a.pipeline,
        stop,
        warmup: parse_duration(&a.warmup)?,
        rate: a.rate,
        out: a.out,
        timeout: parse_duration(&a.timeout)?,
        key_space: a.key_space,
        preload: a.preload,
        seed: a.seed,
        progress: !a.json,
        direct: a.direct,
    };
    spec.validate()?;
    Ok(spec)
}

async fn bench(args: RunArgs) -> anyhow::Result<()> {
    let json = args.json;
    let spec = spec_from(args)?;
    let outcome = runner::run(&spec).await?;
    let mut report = Report::new(&spec, &outcome);
    report.write_files(&outcome, &spec.out)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// The `shardline` CLI binary: `given`, or the one next to this executable.
fn shardline_bin(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(p) => p,
        None => std::env::current_exe().context("cannot find this executable's path")?.with_file_name("shardline"),
    };
    if !path.is_file() {
        bail!("{} not found: build it first (cargo build --release --workspace)", path.display());
    }
    Ok(path)
}

async fn seed_table(a: SeedArgs) -> anyhow::Result<()> {
    if a.requests == 0 || a.workers == 0 {
        return Err(BenchError::InvalidSpec("--requests and --workers must be above zero".into()).into());
    }
    let spec = SeedSpec {
        shardline_bin: shardline_bin(a.own.shardline)?,
        requests: a.requests,
        workers: a.workers,
        row_size: a.row_size,
        out: a.out,
        progress: !a.own.json,
    };
    let json = a.own.json;
    let rows = seed::run(&spec, |row| {
        if !json {
            eprintln!("done: {}", row.layout.name());
        }
    })
    .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", seed::table(&spec, &rows));
    }
    Ok(())
}

async fn peer_table(a: PeerArgs) -> anyhow::Result<()> {
    if a.clients == 0 || a.pipelines.is_empty() || a.pipelines.contains(&0) || a.redis_requests == 0 {
        return Err(
            BenchError::InvalidSpec("--clients, --pipelines and --redis-requests must be above zero".into()).into()
        );
    }
    let duration: Duration = parse_duration(&a.duration)?;
    let spec = PeerSpec {
        shardline_bin: shardline_bin(a.own.shardline)?,
        clients: a.clients,
        pipelines: a.pipelines,
        value_size: a.value_size,
        redis_requests: a.redis_requests,
        duration,
        out: a.out,
        progress: !a.own.json,
        up_args: a.up_args,
    };
    let rows = peer::run(&spec).await?;
    if a.own.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", peer::table(&spec, &rows));
    }
    Ok(())
}

fn failover_spec(a: FailoverArgs) -> anyhow::Result<FailoverSpec> {
    let kinds = a
        .kinds
        .iter()
        .map(|k| k.parse::<FaultKind>().map_err(BenchError::InvalidSpec))
        .collect::<Result<Vec<_>, _>>()?;
    let target = match (a.docker, a.addr) {
        (true, addr) => Target::Docker { addr: addr.unwrap_or_else(|| "127.0.0.1:7000".into()), prefix: a.prefix },
        (false, Some(addr)) => Target::Processes { addr, nodes_dir: a.nodes_dir },
        (false, None) => Target::OwnCluster { shardline_bin: shardline_bin(a.own.shardline)? },
    };
    let spec = FailoverSpec {
        target,
        kinds,
        events: a.events,
        hold: parse_duration(&a.pause)?,
        connections: a.connections,
        rate: a.rate,
        write_percent: a.write_percent,
        interval: parse_duration(&a.interval)?,
        recover_timeout: parse_duration(&a.recover_timeout)?,
        primary_reads: a.primary_reads,
        out: a.out,
        progress: !a.own.json,
        seed: a.seed,
    };
    spec.validate()?;
    Ok(spec)
}

async fn failover_table(a: FailoverArgs) -> anyhow::Result<()> {
    let json = a.own.json;
    let spec = failover_spec(a)?;
    let mut report = failover::driver::run(&spec).await?;
    report.write_files(&spec.out)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    if !report.verdict.holds() {
        bail!("the read-back found violations (see the report)");
    }
    Ok(())
}
