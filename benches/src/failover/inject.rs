//! Faults on one storage node: kill, pause, partition, carried out on a process of a
//! `shardline up` cluster (found by the `<name>.pid` file the coordinator keeps beside its
//! data directory) or on a container of the Docker stack (found by its labels).
//!
//! A fault's time is when it is surely in effect: right after kill(2) or SIGSTOP, when the
//! rules are in place, when a `docker pause` or `network disconnect` returns, and for
//! `docker kill` the container's exit time as Docker recorded it (the command may return
//! well after). A pause or a partition is held for the given time and then
//! healed; a guard heals it also when the run fails or is interrupted meanwhile.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use crate::cluster;
use crate::error::BenchError;
use crate::failover::netcut::NetCut;
use crate::failover::window::FaultKind;

/// Attempts at a `docker` command that starts a fault.
const FAULT_TRIES: u32 = 3;

/// Longest a `docker` command may take.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(30);

/// When a fault took effect and, for pause and partition, when it was healed.
#[derive(Debug, Clone, Copy)]
pub struct Injected {
    /// The fault in effect.
    pub at: Instant,
    /// The node given back.
    pub healed: Option<Instant>,
    /// How long carrying the fault out took (the `docker` command; nothing for a signal).
    pub took: Duration,
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
                        Ok(Injected { at: Instant::now(), healed: None, took: Duration::ZERO })
                    }
                    FaultKind::Pause => {
                        let stopped = Stopped::new(pid);
                        let at = Instant::now();
                        tokio::time::sleep(hold).await;
                        drop(stopped);
                        Ok(Injected { at, healed: Some(Instant::now()), took: Duration::ZERO })
                    }
                    FaultKind::Partition => {
                        let netcut = netcut.as_ref().ok_or_else(|| {
                            BenchError::InvalidSpec("partition was not prepared (not in --kinds)".into())
                        })?;
                        let cut = netcut.cut(pid, port)?;
                        let at = Instant::now();
                        tokio::time::sleep(hold).await;
                        cut.heal()?;
                        Ok(Injected { at, healed: Some(Instant::now()), took: Duration::ZERO })
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
    let (mut began, mut wall) = (Instant::now(), SystemTime::now());
    // The engine sometimes fails a pause for a moment ("unable to freeze"): try again.
    for attempt in 1..=FAULT_TRIES {
        match docker(&start).await {
            Ok(_) => break,
            Err(e) if attempt == FAULT_TRIES => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
        (began, wall) = (Instant::now(), SystemTime::now());
    }
    let returned = Instant::now();
    let took = returned - began;
    if undo.is_empty() {
        // `docker kill` may return well after the process died (the failover can be over
        // by then): the container's own exit time is the fault's time.
        let exited = docker(&["inspect", "-f", "{{.State.FinishedAt}}", &container]).await.ok();
        let at = exited
            .as_deref()
            .and_then(parse_rfc3339)
            .and_then(|t| t.duration_since(wall).ok())
            .map_or(began, |since| (began + since).min(returned));
        return Ok(Injected { at, healed: None, took });
    }
    let guard = DockerUndo(undo.iter().map(|s| s.to_string()).collect());
    tokio::time::sleep(hold).await;
    docker(&undo).await?;
    std::mem::forget(guard);
    // A pause or a disconnect is complete when the daemon answers.
    Ok(Injected { at: returned, healed: Some(Instant::now()), took })
}

/// A UTC time as Docker prints it (`2026-12-01T02:44:12.123456789Z`).
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let (date, time) = text.trim().strip_suffix('Z')?.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    let nanos: u32 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = u64::try_from(days * 86_400 + h * 3600 + min * 60 + sec).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
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
        Err(BenchError::Process(format!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockers_times_parse() {
        let t = parse_rfc3339("2026-12-01T02:44:12.123456789Z").unwrap();
        let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!((since.as_secs(), since.subsec_nanos()), (1_796_093_052, 123_456_789));
        let t = parse_rfc3339("1970-01-02T00:00:01.5Z").unwrap();
        assert_eq!(t.duration_since(SystemTime::UNIX_EPOCH).unwrap(), Duration::from_millis(86_401_500));
        assert_eq!(
            parse_rfc3339("2000-03-01T00:00:00Z").unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(951_868_800)
        );
        assert!(parse_rfc3339("0001-01-01T00:00:00Z").is_none(), "before 1970: a container that never ran");
        assert!(parse_rfc3339("yesterday").is_none());
    }
}
