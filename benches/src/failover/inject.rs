//! Faults on one storage node: kill, pause, partition, carried out on a process of a
//! `shardline up` cluster (found by the `<name>.pid` file the coordinator keeps beside its
//! data directory) or on a container of the Docker stack (found by its labels).
//!
//! A fault's time is when it is surely in effect: right after kill(2), or after the
//! `docker` command returns. A pause or a partition is held for the given time and then
//! healed; a guard heals it also when the run fails or is interrupted meanwhile.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::cluster;
use crate::error::BenchError;
use crate::failover::netcut::NetCut;
use crate::failover::window::FaultKind;

/// Longest a `docker` command may take.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(30);

/// When a fault took effect and, for pause and partition, when it was healed.
#[derive(Debug, Clone, Copy)]
pub struct Injected {
    /// The fault in effect.
    pub at: Instant,
    /// The node given back.
    pub healed: Option<Instant>,
}

/// Carries out faults on the nodes of one cluster.
#[derive(Debug)]
pub enum Injector {
    /// Nodes as local processes.
    Processes {
        /// The coordinator's nodes directory.
        nodes_dir: PathBuf,
        /// Ready for partitions, if they were asked for.
        netcut: Option<NetCut>,
    },
    /// Nodes as containers of the stack with this prefix.
    Docker {
        /// `SHARDLINE_PREFIX`.
        prefix: String,
    },
}

impl Injector {
    /// Faults on the processes under `nodes_dir`; checks now that a partition can be made
    /// if `kinds` has one.
    pub fn processes(nodes_dir: PathBuf, kinds: &[FaultKind]) -> Result<Injector, BenchError> {
        if !nodes_dir.is_dir() {
            return Err(BenchError::InvalidSpec(format!(
                "{} is not a directory: --nodes-dir must be the coordinator's nodes directory \
                 (<data-dir>/coordinator/nodes of `shardline up`)",
                nodes_dir.display()
            )));
        }
        let netcut = if kinds.contains(&FaultKind::Partition) { Some(NetCut::prepare()?) } else { None };
        Ok(Injector::Processes { nodes_dir, netcut })
    }

    /// Faults on the node containers of the Docker stack `prefix`.
    pub async fn docker(prefix: String) -> Result<Injector, BenchError> {
        docker(&["version", "--format", "{{.Server.Version}}"]).await?;
        Ok(Injector::Docker { prefix })
    }

    /// Carries out `kind` on server `name` (listening on `port`), holding a pause or a
    /// partition for `hold`.
    pub async fn inject(&self, kind: FaultKind, name: &str, port: u16, hold: Duration) -> Result<Injected, BenchError> {
        match self {
            Injector::Processes { nodes_dir, netcut } => {
                let pid = node_pid(nodes_dir, name)?;
                match kind {
                    FaultKind::Kill => {
                        cluster::signal(pid, libc::SIGKILL);
                        Ok(Injected { at: Instant::now(), healed: None })
                    }
                    FaultKind::Pause => {
                        let stopped = Stopped::new(pid);
                        let at = Instant::now();
                        tokio::time::sleep(hold).await;
                        drop(stopped);
                        Ok(Injected { at, healed: Some(Instant::now()) })
                    }
                    FaultKind::Partition => {
                        let netcut = netcut.as_ref().ok_or_else(|| {
                            BenchError::InvalidSpec("partition was not prepared (not in --kinds)".into())
                        })?;
                        let cut = netcut.cut(pid, port)?;
                        let at = Instant::now();
                        tokio::time::sleep(hold).await;
                        cut.heal()?;
                        Ok(Injected { at, healed: Some(Instant::now()) })
                    }
                }
            }
            Injector::Docker { prefix } => docker_fault(prefix, kind, name, hold).await,
        }
    }
}

/// A stopped process, continued on drop.
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        cluster::signal(pid, libc::SIGSTOP);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        cluster::signal(self.0, libc::SIGCONT);
    }
}

/// The pid of node `name`, from its pid file, checked against the process's command line
/// (a pid can be reused once the node is gone).
pub fn node_pid(nodes_dir: &Path, name: &str) -> Result<u32, BenchError> {
    let file = nodes_dir.join(format!("{name}.pid"));
    let text = std::fs::read_to_string(&file).map_err(|e| BenchError::io(file.display(), e))?;
    let pid: u32 = text
        .trim()
        .parse()
        .map_err(|_| BenchError::Cluster(format!("{} does not hold a pid: `{}`", file.display(), text.trim())))?;
    let data_dir = nodes_dir.join(name);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let runs_it = cmdline.split(|&b| b == 0).any(|arg| Path::new(std::str::from_utf8(arg).unwrap_or("")) == data_dir);
    if !runs_it {
        return Err(BenchError::Cluster(format!(
            "process {pid} (from {}) is not node {name} on {}",
            file.display(),
            data_dir.display()
        )));
    }
    Ok(pid)
}

async fn docker_fault(prefix: &str, kind: FaultKind, name: &str, hold: Duration) -> Result<Injected, BenchError> {
    let container = node_container(prefix, name).await?;
    let network = format!("{prefix}-net");
    let (start, undo): (Vec<&str>, Vec<&str>) = match kind {
        FaultKind::Kill => (vec!["kill", &container], vec![]),
        FaultKind::Pause => (vec!["pause", &container], vec!["unpause", &container]),
        FaultKind::Partition => {
            (vec!["network", "disconnect", &network, &container], vec!["network", "connect", &network, &container])
        }
    };
    docker(&start).await?;
    let at = Instant::now();
    if undo.is_empty() {
        return Ok(Injected { at, healed: None });
    }
    let guard = DockerUndo(undo.iter().map(|s| s.to_string()).collect());
    tokio::time::sleep(hold).await;
    docker(&undo).await?;
    std::mem::forget(guard);
    Ok(Injected { at, healed: Some(Instant::now()) })
}

/// A `docker` command run on drop, unless forgotten: heals a pause or a cut when the run
/// stops early.
struct DockerUndo(Vec<String>);

impl Drop for DockerUndo {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker").args(&self.0).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

/// The container of node `name` in the stack `prefix`, by the labels the Docker spawner
/// puts on it.
pub async fn node_container(prefix: &str, name: &str) -> Result<String, BenchError> {
    let by_prefix = format!("label=shardline.prefix={prefix}");
    let by_node = format!("label=shardline.node={name}");
    let out = docker(&["ps", "-a", "--filter", &by_prefix, "--filter", &by_node, "--format", "{{.Names}}"]).await?;
    out.lines().next().map(str::to_owned).ok_or_else(|| {
        BenchError::Cluster(format!("no container of node {name} in the Docker stack `{prefix}` (see docker ps)"))
    })
}

/// Runs `docker ARGS`; its stdout, or its stderr as the error.
pub async fn docker(args: &[&str]) -> Result<String, BenchError> {
    let run = tokio::process::Command::new("docker").args(args).stdin(Stdio::null()).kill_on_drop(true).output();
    let out = match tokio::time::timeout(DOCKER_TIMEOUT, run).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(BenchError::Process(format!("cannot run docker: {e}"))),
        Err(_) => return Err(BenchError::Process(format!("docker {} took over {DOCKER_TIMEOUT:?}", args.join(" ")))),
    };
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(BenchError::Process(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
