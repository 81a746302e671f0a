//! `shardline up`: a local cluster from the binaries next to this one.
//!
//! Starts `shardline-coordinator` and `shardline-balancer` as child processes (each in its
//! own process group, logs in `DIR/logs/`), waits until each answers Ping, initializes the
//! cluster if the coordinator has none (or resumes the one in the data directory), prints
//! where everything is, and supervises them: one that dies is started again (a restarted
//! coordinator adopts the storage nodes still running), a few times a minute at most. On
//! Ctrl-C (or SIGTERM) it stops the balancer, then the coordinator (which stops its storage
//! nodes, adopted ones included), each with SIGINT, and waits for them.

use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;
use shardline::{layout, Client, ClientConfig, InitRequest, Topology};

use crate::auth::LocalAuth;
use crate::certs::LocalTls;
use crate::output::print_json;
use shardline_protocol::net::{auth, tls};

/// Flags of `shardline up`.
#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// Where the cluster keeps its data and logs (reuse it to resume the cluster).
    #[arg(long, default_value = "./shardline-data")]
    data_dir: PathBuf,
    /// Port of the balancer (clients, the CLI, nc); further balancers take the next ports.
    #[arg(long, default_value_t = 7000)]
    balancer_port: u16,
    /// How many balancers to run (1 to 16), on --balancer-port and the ports after it; a
    /// client given several (`--addr a,b`) moves to another when one fails.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    balancers: u16,
    /// Port of the coordinator.
    #[arg(long, default_value_t = 7100)]
    coordinator_port: u16,
    /// First port given to storage nodes.
    #[arg(long, default_value_t = 7200)]
    node_base_port: u16,
    /// Init layout for a new cluster (the seed's /init JSON, or TOML). Default: the seed's
    /// schema and layout, 6 servers, 4 shards of 4096 keys, 3 replicas each.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Frame limit in bytes for the balancer and every node (at least 1024; default 16 MiB).
    /// An answer over it is answered TooLarge.
    #[arg(long)]
    max_payload: Option<usize>,
    /// Every process serves Prometheus /metrics at its own port plus this offset (balancer
    /// 8000, coordinator 8100, nodes 8200.. by default); 0 turns metrics off.
    #[arg(long, default_value_t = 1000)]
    metrics_offset: u16,
    /// Bytes a second each shard replica sends snapshots at, at most, when it catches up a
    /// new or wiped replica (0: unlimited; default the node's, 64 MiB/s).
    #[arg(long)]
    snapshot_rate: Option<u64>,
    /// Where the cluster's credentials are (users file, cluster secret, admin and app
    /// credentials); generated there if missing. Default: DATA_DIR/auth.
    #[arg(long)]
    auth_dir: Option<PathBuf>,
    /// Start every process open: no users file and no cluster secret, so anyone who reaches
    /// a port may do anything there (as before authentication existed). For a machine of
    /// your own, and for measuring what authentication costs; the credentials are still
    /// made, and an open server simply accepts them.
    #[arg(long)]
    no_auth: bool,
    /// Milliseconds a new connection to any process may take to send its first byte and
    /// authenticate (default the processes' own, 10 s).
    #[arg(long)]
    handshake_timeout_ms: Option<u64>,
    /// Milliseconds a connection may stay silent with nothing in flight (default the
    /// processes' own, 300 s).
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
    /// TLS everywhere: a local CA and a certificate for 127.0.0.1 (made in AUTH_DIR/tls if
    /// missing) on every port, and every process verifying its peers against the CA. The
    /// CLI then needs --tls-ca AUTH_DIR/tls/ca.pem.
    #[arg(long)]
    tls: bool,
    /// With --tls: the balancer also serves the text mode and frames in the clear on this
    /// port, for `nc` (default: no plaintext port).
    #[arg(long, requires = "tls")]
    plain_port: Option<u16>,
}

/// How long each process may take to answer its first Ping.
const READY: Duration = Duration::from_secs(30);
/// How long a stopping process may take before it is killed.
const STOP: Duration = Duration::from_secs(20);

/// Restarts of one process allowed within [`RESTART_WINDOW`] before `shardline up` gives up.
const MAX_RESTARTS: usize = 5;
/// The window [`MAX_RESTARTS`] counts restarts in.
const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// A child process with its name, how to start it again, and its log file.
struct Proc {
    name: &'static str,
    bin: PathBuf,
    args: Vec<String>,
    child: Child,
    log: PathBuf,
    /// When it was restarted lately (within [`RESTART_WINDOW`]).
    restarts: Vec<Instant>,
}

/// The processes started so far; killed on drop if not stopped cleanly.
#[derive(Default)]
struct Procs(Vec<Proc>);

impl Procs {
    /// Stops the processes, last started first: SIGINT, then wait; SIGKILL after `STOP`.
    async fn stop(&mut self) -> bool {
        let mut clean = true;
        while let Some(mut p) = self.0.pop() {
            signal(p.child.id(), libc::SIGINT);
            let deadline = Instant::now() + STOP;
            loop {
                match p.child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    _ => {
                        eprintln!("{} did not stop within {STOP:?}: killing it", p.name);
                        let _ = p.child.kill();
                        let _ = p.child.wait();
                        clean = false;
                        break;
                    }
                }
            }
        }
        clean
    }

    /// The first process that has exited, with its status.
    fn exited(&mut self) -> Option<(&'static str, String, PathBuf)> {
        self.first_exited().map(|(i, status)| (self.0[i].name, status, self.0[i].log.clone()))
    }

    fn first_exited(&mut self) -> Option<(usize, String)> {
        self.0.iter_mut().enumerate().find_map(|(i, p)| match p.child.try_wait() {
            Ok(Some(status)) => Some((i, status.to_string())),
            _ => None,
        })
    }

    /// Starts again every process that has exited, saying so; errs when one has been
    /// restarted [`MAX_RESTARTS`] times within [`RESTART_WINDOW`] already, or cannot start.
    fn restart_exited(&mut self, json: bool) -> anyhow::Result<()> {
        while let Some((i, status)) = self.first_exited() {
            let p = &mut self.0[i];
            p.restarts.retain(|t| t.elapsed() < RESTART_WINDOW);
            if p.restarts.len() >= MAX_RESTARTS {
                bail!(
                    "{} exited ({status}) after {MAX_RESTARTS} restarts within {RESTART_WINDOW:?}: giving up; its log \
                     ends: {}",
                    p.name,
                    tail(&p.log)
                );
            }
            let restarts = std::mem::take(&mut p.restarts);
            let fresh = spawn(p.name, &p.bin, &p.args, p.log.clone())?;
            let (name, pid) = (p.name, fresh.child.id());
            *p = Proc { restarts, ..fresh };
            p.restarts.push(Instant::now());
            if json {
                print_json(&json!({"restarted": name, "exited": status, "pid": pid}));
            } else {
                println!("{name} exited ({status}): started it again (pid {pid})");
            }
        }
        Ok(())
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for p in &mut self.0 {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Replaces this process with `shardline-bench`, aimed at `addr` unless `args` name one.
/// Its `seed` and `peer` subcommands start clusters of their own and take no address;
/// `failover` takes it after its name.
pub(crate) fn exec_bench(addr: &str, json: bool, tls_ca: Option<&Path>, mut args: Vec<String>) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let bench = sibling("shardline-bench")?;
    let at = match args.first().map(String::as_str) {
        Some("seed" | "peer") => None,
        Some("failover") => Some(1),
        _ => Some(0),
    };
    let named = args.iter().any(|a| a == "--addr" || a.starts_with("--addr=") || a == "--help");
    if let (Some(at), false) = (at, named) {
        args.splice(at..at, ["--addr".to_owned(), addr.to_owned()]);
    }
    if json && !args.iter().any(|a| a == "--json") {
        args.push("--json".into());
    }
    let mut command = std::process::Command::new(&bench);
    if let Some(ca) = tls_ca {
        command.env("SHARDLINE_TLS_CA", ca);
    }
    let error = command.args(&args).exec();
    Err(anyhow::Error::new(error).context(format!("running {}", bench.display())))
}

/// A sibling binary of this executable.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this executable's path")?;
    let path = exe.with_file_name(name);
    if !path.is_file() {
        bail!(
            "{name} not found next to {} (expected {}): run `cargo build --release` (or `make run`) first",
            exe.display(),
            path.display()
        );
    }
    Ok(path)
}

/// The metrics port of a process on `port`, or `None` when metrics are off (offset 0).
fn metrics_port(port: u16, offset: u16) -> anyhow::Result<Option<u16>> {
    if offset == 0 {
        return Ok(None);
    }
    match port.checked_add(offset) {
        Some(p) => Ok(Some(p)),
        None => bail!("port {port} plus --metrics-offset {offset} is past 65535: choose a smaller offset"),
    }
}

fn port_free(port: u16) -> anyhow::Result<()> {
    if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
        return Ok(());
    }
    let holder = holder_of(port).map_or_else(|| "another process".to_owned(), |h| format!("process {h}"));
    bail!("port {port} on 127.0.0.1 is in use by {holder}; stop it or choose other ports (see --help)")
}

/// Who listens on TCP `port`, as "PID (COMMAND LINE)", where this user may look (Linux).
fn holder_of(port: u16) -> Option<String> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let local_port = fields.get(1)?.rsplit_once(':')?.1;
                    let listening = fields.get(3) == Some(&"0A");
                    (listening && u16::from_str_radix(local_port, 16).ok()? == port).then(|| fields.get(9).copied())?
                })
                .map(|inode| format!("socket:[{inode}]"))
                .collect::<Vec<_>>()
        })
        .collect();
    if inodes.is_empty() {
        return None;
    }
    for proc_dir in std::fs::read_dir("/proc").ok()?.filter_map(Result::ok) {
        let Ok(pid) = proc_dir.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(fds) = std::fs::read_dir(proc_dir.path().join("fd")) else { continue };
        let holds = fds.filter_map(Result::ok).any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
        });
        if holds {
            let cmdline = std::fs::read(proc_dir.path().join("cmdline")).unwrap_or_default();
            let words: Vec<String> = cmdline
                .split(|&b| b == 0)
                .filter(|w| !w.is_empty())
                .map(|w| String::from_utf8_lossy(w).into())
                .collect();
            return Some(format!("{pid} ({})", words.join(" ")));
        }
    }
    None
}

/// The last lines of a log, for error messages.
fn tail(log: &Path) -> String {
    last_lines(&std::fs::read_to_string(log).unwrap_or_default())
}

/// The last lines of a log, one line: a backtrace that ends it (`RUST_BACKTRACE` set) is
/// left out, so the error it follows is what shows.
fn last_lines(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    if let Some(at) = lines.iter().position(|l| l.trim().eq_ignore_ascii_case("stack backtrace:")) {
        lines.truncate(at);
    }
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    lines[lines.len().saturating_sub(8)..].join(" | ")
}

fn open_log(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open log {}", path.display()))
}

fn spawn(name: &'static str, bin: &Path, args: &[String], log: PathBuf) -> anyhow::Result<Proc> {
    let file = open_log(&log)?;
    let mut command = Command::new(bin);
    command
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        // Own process group: a Ctrl-C at the terminal reaches `shardline up` only, which
        // then stops the processes in order.
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; the closure touches no other state. If this
    // process dies without stopping the child, the child gets SIGINT and stops cleanly.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT);
            Ok(())
        });
    }
    let child = command.spawn().with_context(|| format!("cannot start {}", bin.display()))?;
    Ok(Proc { name, bin: bin.to_owned(), args: args.to_vec(), child, log, restarts: Vec::new() })
}

/// Waits until `addr` answers Ping, failing early if the process exits.
async fn wait_ready(procs: &mut Procs, name: &str, addr: &str) -> anyhow::Result<()> {
    let config = ClientConfig {
        timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        retries: 0,
        ..ClientConfig::default()
    };
    let deadline = Instant::now() + READY;
    for _ in 0..(READY.as_millis() / 100 + 1) {
        if let Some((who, status, log)) = procs.exited() {
            bail!("{who} exited ({status}) while starting; its log ends: {}", tail(&log));
        }
        if let Ok(client) = Client::connect_with(addr, config.clone()).await {
            if client.ping().await.is_ok() {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = procs.0.last().map(|p| p.log.clone()).unwrap_or_default();
    bail!("{name} did not answer on {addr} within {READY:?}; its log ends: {}", tail(&log))
}

/// Waits (bounded) until every shard has a primary; returns the last topology seen.
async fn wait_primaries(client: &Client, limit: Duration) -> Option<Topology> {
    let deadline = Instant::now() + limit;
    let mut last = None;
    for _ in 0..(limit.as_millis() / 200 + 1) {
        if let Ok(t) = client.status().await {
            let ready = t.shards.iter().all(|s| s.primary.is_some());
            last = Some(t);
            if ready {
                return last;
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

/// Runs `shardline up` until Ctrl-C.
pub(crate) async fn run(args: UpArgs, json: bool) -> anyhow::Result<()> {
    let coordinator_bin = sibling("shardline-coordinator")?;
    let balancer_bin = sibling("shardline-balancer")?;
    let node_bin = sibling("shardline-node")?;
    let ports = Ports::check(&args)?;
    let init = match &args.config {
        Some(path) => Some(layout::load_init(path).with_context(|| format!("init layout {}", path.display()))?),
        None => None,
    };
    std::fs::create_dir_all(args.data_dir.join("logs"))
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let dir = args.data_dir.canonicalize()?;
    let logs = dir.join("logs");
    let local = LocalAuth::ensure(&args.auth_dir.clone().unwrap_or_else(|| dir.join("auth")))?;
    // This process's own calls (readiness, init) are the admin's.
    auth::set_outgoing(Some(local.admin.clone()));
    let local_tls = if args.tls { Some(LocalTls::ensure(&local.dir)?) } else { None };
    if let Some(local_tls) = &local_tls {
        tls::set_outgoing(Some(shardline::ClientTls::load(&local_tls.ca)?));
    }
    let coord_addr = format!("127.0.0.1:{}", args.coordinator_port);
    let balancer_addrs: Vec<String> = ports.balancers.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;

    let (coordinator_args, balancer_args) =
        server_args(&args, &dir, &node_bin, &local, local_tls.as_ref(), ports.coordinator_metrics);
    let mut procs = Procs::default();
    let log = logs.join("coordinator.log");
    procs.0.push(spawn("shardline-coordinator", &coordinator_bin, &coordinator_args, log)?);
    let started = async {
        wait_ready(&mut procs, "the coordinator", &coord_addr).await?;
        for (i, (addr, &port)) in balancer_addrs.iter().zip(&ports.balancers).enumerate() {
            // The first balancer's log keeps its name; the others are numbered.
            let log = logs.join(if i == 0 { "balancer.log".to_owned() } else { format!("balancer-{i}.log") });
            let mut own = vec!["--listen".to_owned(), addr.clone()];
            own.push(format!("--metrics-addr={}", metrics_flag(metrics_port(port, args.metrics_offset)?)));
            own.extend(balancer_args.iter().cloned());
            procs.0.push(spawn("shardline-balancer", &balancer_bin, &own, log)?);
            wait_ready(&mut procs, "the balancer", addr).await?;
        }
        init_or_resume(&coord_addr, &dir, init, args.config.is_some(), json).await
    };
    let (resumed, topology) = tokio::select! {
        r = started => match r {
            Ok(v) => v,
            Err(e) => {
                procs.stop().await;
                return Err(e);
            }
        },
        _ = sigint.recv() => { procs.stop().await; return Ok(()) }
        _ = sigterm.recv() => { procs.stop().await; return Ok(()) }
    };
    let balancer = balancer_addrs.join(",");
    let tls_ca = local_tls.as_ref().map(|t| t.ca.as_path());
    let a = Announce { balancer: &balancer, coordinator: &coord_addr, resumed, local: &local, tls_ca };
    announce(&args, &dir, &topology, json, a);

    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let failed = loop {
        tokio::select! {
            _ = sigint.recv() => break None,
            _ = sigterm.recv() => break None,
            _ = tick.tick() => {
                if let Err(e) = procs.restart_exited(json) {
                    break Some(e);
                }
            }
        }
    };
    stop(procs, failed, &dir, json).await
}

/// The ports `shardline up` will listen on, each checked free.
struct Ports {
    balancers: Vec<u16>,
    coordinator_metrics: Option<u16>,
}

impl Ports {
    fn check(args: &UpArgs) -> anyhow::Result<Ports> {
        port_free(args.coordinator_port)?;
        let balancers: Vec<u16> = (0..args.balancers)
            .map(|i| args.balancer_port.checked_add(i).context("balancer ports past 65535"))
            .collect::<anyhow::Result<_>>()?;
        let coordinator_metrics = metrics_port(args.coordinator_port, args.metrics_offset)?;
        let mut metrics_ports: Vec<u16> = coordinator_metrics.into_iter().collect();
        for &port in &balancers {
            port_free(port)?;
            metrics_ports.extend(metrics_port(port, args.metrics_offset)?);
        }
        for port in metrics_ports.into_iter().chain(args.plain_port) {
            port_free(port)?;
        }
        Ok(Ports { balancers, coordinator_metrics })
    }
}

/// `--metrics-addr`'s value for `port` (none: off).
fn metrics_flag(port: Option<u16>) -> String {
    port.map_or("off".to_owned(), |p| format!("127.0.0.1:{p}"))
}

/// The coordinator's flags (some passed on to the nodes it starts) and every balancer's.
fn server_args(
    args: &UpArgs,
    dir: &Path,
    node_bin: &Path,
    local: &LocalAuth,
    local_tls: Option<&LocalTls>,
    coordinator_metrics: Option<u16>,
) -> (Vec<String>, Vec<String>) {
    let coord_addr = format!("127.0.0.1:{}", args.coordinator_port);
    let mut coordinator_args = vec![
        "--data-dir".into(),
        dir.join("coordinator").display().to_string(),
        "--listen".into(),
        coord_addr.clone(),
        "--node-base-port".into(),
        args.node_base_port.to_string(),
        "--node-bin".into(),
        node_bin.display().to_string(),
    ];
    let mut balancer_args = vec!["--coordinator".into(), coord_addr];
    for server in [&mut coordinator_args, &mut balancer_args] {
        if !args.no_auth {
            server.push(format!("--users-file={}", local.users_file.display()));
            server.push(format!("--cluster-secret-file={}", local.cluster_secret_file.display()));
        }
        // The coordinator hands these on to the nodes it starts.
        if let Some(t) = local_tls {
            server.push(format!("--tls-cert={}", t.cert.display()));
            server.push(format!("--tls-key={}", t.key.display()));
            server.push(format!("--tls-ca={}", t.ca.display()));
        }
    }
    if let Some(port) = args.plain_port {
        balancer_args.push(format!("--plain-listen=127.0.0.1:{port}"));
    }
    coordinator_args.push(format!("--metrics-addr={}", metrics_flag(coordinator_metrics)));
    coordinator_args.push(match args.metrics_offset {
        0 => "--node-arg=--metrics-addr=off".to_owned(),
        n => format!("--node-arg=--metrics-addr=+{n}"),
    });
    if let Some(max) = args.max_payload {
        coordinator_args.push(format!("--node-arg=--max-payload={max}"));
        balancer_args.extend(["--max-payload".into(), max.to_string()]);
    }
    for (flag, value) in
        [("handshake-timeout-ms", args.handshake_timeout_ms), ("idle-timeout-ms", args.idle_timeout_ms)]
    {
        if let Some(ms) = value {
            coordinator_args.push(format!("--{flag}={ms}"));
            coordinator_args.push(format!("--node-arg=--{flag}={ms}"));
            balancer_args.push(format!("--{flag}={ms}"));
        }
    }
    if let Some(rate) = args.snapshot_rate {
        coordinator_args.push(format!("--node-arg=--snapshot-rate={rate}"));
    }
    (coordinator_args, balancer_args)
}

/// Initializes a new cluster (with `init`, or the seed's layout) or resumes the one the
/// data directory holds; whether it resumed, and the topology once primaries are elected.
async fn init_or_resume(
    coord_addr: &str,
    dir: &Path,
    init: Option<InitRequest>,
    config_given: bool,
    json: bool,
) -> anyhow::Result<(bool, Topology)> {
    let admin = Client::connect(coord_addr.to_owned()).await?;
    let existing = admin.status().await.context("asking the coordinator")?;
    let resumed = existing.schema.is_some();
    if resumed {
        if config_given {
            eprintln!("the data directory holds a cluster already: --config is ignored");
        }
        if !json {
            println!(
                "resuming the cluster in {} ({} shards, {} servers)",
                dir.display(),
                existing.shards.len(),
                existing.servers.len()
            );
        }
    } else {
        let request = init.unwrap_or_else(InitRequest::seed);
        if !json {
            println!("initializing a new cluster: {} servers, {} shards", request.n, request.shards.len());
        }
        admin.init(request).await.context("initializing the cluster")?;
    }
    let t = wait_primaries(&admin, Duration::from_secs(30)).await;
    Ok((resumed, t.unwrap_or_default()))
}

/// Stops every process, and says how that went (`failed`: why supervision gave up).
async fn stop(mut procs: Procs, failed: Option<anyhow::Error>, dir: &Path, json: bool) -> anyhow::Result<()> {
    if !json {
        println!("stopping the balancer and the coordinator (which stops the nodes)...");
    }
    let clean = procs.stop().await;
    if let Some(e) = failed {
        return Err(e);
    }
    if !clean {
        bail!("a process had to be killed; see the logs in {}", dir.join("logs").display());
    }
    if json {
        print_json(&json!({"stopped": true}));
    } else {
        println!("stopped; `shardline up --data-dir {}` resumes the cluster", dir.display());
    }
    Ok(())
}

/// What `shardline up` prints once the cluster serves: where to reach it, and how.
struct Announce<'a> {
    balancer: &'a str,
    coordinator: &'a str,
    resumed: bool,
    local: &'a LocalAuth,
    /// The CA clients verify against, with `--tls`.
    tls_ca: Option<&'a Path>,
}

fn announce(args: &UpArgs, dir: &Path, t: &Topology, json: bool, a: Announce<'_>) {
    let Announce { balancer, coordinator, resumed, local, tls_ca } = a;
    let no_primary: Vec<String> =
        t.shards.iter().filter(|s| s.primary.is_none()).map(|s| s.spec.id.to_string()).collect();
    if json {
        print_json(&json!({
            "ready": true,
            "resumed": resumed,
            "balancer": balancer,
            "coordinator": coordinator,
            "data_dir": dir,
            "shards": t.shards.len(),
            "servers": t.servers.len(),
            "without_primary": no_primary,
            "metrics_offset": args.metrics_offset,
            "credentials": local.admin_credentials,
            "authentication": !args.no_auth,
            "tls_ca": tls_ca,
            "plain_port": args.plain_port,
        }));
        return;
    }
    let mut addr =
        if args.balancer_port == 7000 && args.balancers == 1 { String::new() } else { format!(" --addr {balancer}") };
    if let Some(ca) = tls_ca {
        addr.push_str(&format!(" --tls-ca {}", ca.display()));
    }
    println!(
        "\nShardline is up: {} shards on {} servers{}\n",
        t.shards.len(),
        t.servers.len(),
        if no_primary.is_empty() { String::new() } else { format!(" (still electing: {})", no_primary.join(", ")) }
    );
    for b in balancer.split(',') {
        println!("  balancer     {b}   clients, the CLI, nc");
    }
    if args.no_auth {
        println!("  credentials  none asked (--no-auth): anyone who reaches a port may do anything");
    } else {
        println!(
            "  credentials  {} (admin; the CLI reads it with --credentials, or by itself from {})",
            local.admin_credentials.display(),
            crate::auth::DEFAULT_CREDENTIALS
        );
    }
    if let Some(ca) = tls_ca {
        println!("  TLS          on every port; clients verify against the CA {}", ca.display());
    }
    println!("  coordinator  {coordinator}   membership, elections, admin");
    println!(
        "  nodes        ports from {}; data and logs under {}",
        args.node_base_port,
        dir.join("coordinator/nodes").display()
    );
    println!("  logs         {}", dir.join("logs").display());
    if args.metrics_offset == 0 {
        println!("  metrics      off (--metrics-offset 0)\n");
    } else {
        let at = |port: u16| format!("http://127.0.0.1:{}/metrics", u32::from(port) + u32::from(args.metrics_offset));
        println!(
            "  metrics      {} (balancer), {} (coordinator), each node at its port + {}\n",
            at(args.balancer_port),
            at(args.coordinator_port),
            args.metrics_offset
        );
    }
    print_try(args, &addr, tls_ca);
    println!("\nCtrl-C stops the cluster; the same command resumes it with its data.");
}

/// The commands to try first, against this cluster (`addr`: the CLI's flags to reach it).
fn print_try(args: &UpArgs, addr: &str, tls_ca: Option<&Path>) {
    println!("Try:");
    println!("  shardline{addr} status");
    println!("  shardline{addr} write 42 alice 77");
    println!("  shardline{addr} read 0 100");
    println!("  shardline{addr} read-server Server0");
    println!("  shardline{addr} write --file rows.csv     (header: the schema's column names)");
    let nc_port = match (tls_ca, args.plain_port) {
        (None, _) => Some(args.balancer_port),
        (Some(_), plain) => plain,
    };
    match nc_port {
        Some(port) => {
            println!("  nc 127.0.0.1 {port}                          then HELP, and AUTH admin <the admin secret>")
        }
        None => println!(
            "  openssl s_client -quiet -CAfile {} -connect 127.0.0.1:{}   the text mode over TLS",
            tls_ca.map(|c| c.display().to_string()).unwrap_or_default(),
            args.balancer_port
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::last_lines;

    #[test]
    fn a_log_ending_in_a_backtrace_shows_the_error_before_it() {
        let log = "INFO starting\nError: binding 127.0.0.1:7000: address in use\n\nStack backtrace:\n   0: main\n   1: _start\n";
        assert_eq!(last_lines(log), "INFO starting | Error: binding 127.0.0.1:7000: address in use");
        let plain: String = (1..=10).map(|i| format!("line {i}\n")).collect();
        assert_eq!(last_lines(&plain), (3..=10).map(|i| format!("line {i}")).collect::<Vec<_>>().join(" | "));
    }
}
