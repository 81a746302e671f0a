//! Storage nodes as child processes, each with its own data directory and log file.
//!
//! Nodes outlive a coordinator that is killed (replica reads keep being served while the
//! control plane restarts); a restarted coordinator adopts the nodes that still answer and
//! starts the ones that do not. Each node's pid is kept beside its data directory
//! (`<name>.pid`), so a coordinator stops (and `RemoveServers` removes) the nodes it adopted
//! just as the ones it started.

use std::collections::HashMap;
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::process::{Child, Command};
use tracing::{info, warn};

use super::{NodeSpec, SpawnError, Spawner};

/// Starts `shardline-node` processes on 127.0.0.1 (or a configured host).
#[derive(Debug)]
pub struct ProcessSpawner {
    node_bin: PathBuf,
    host: String,
    next_port: Mutex<u16>,
    extra_args: Vec<String>,
    children: Mutex<HashMap<String, Child>>,
    /// Where the nodes' data directories (and pid files) are, to find adopted nodes.
    nodes_dir: Option<PathBuf>,
}

/// How long an adopted node may take to exit once killed.
const ADOPTED_EXIT: Duration = Duration::from_secs(5);

impl ProcessSpawner {
    /// Spawns `node_bin`, allocating ports from `first_port` up on `host`.
    pub fn new(node_bin: PathBuf, host: String, first_port: u16, extra_args: Vec<String>) -> ProcessSpawner {
        ProcessSpawner {
            node_bin,
            host,
            next_port: Mutex::new(first_port),
            extra_args,
            children: Mutex::new(HashMap::new()),
            nodes_dir: None,
        }
    }

    /// Also stops, at shutdown, the nodes under `nodes_dir` that an earlier coordinator
    /// started (they outlived it and this one adopted them).
    pub fn adopting(mut self, nodes_dir: PathBuf) -> ProcessSpawner {
        self.nodes_dir = Some(nodes_dir);
        self
    }

    fn running(&self, name: &str) -> bool {
        let mut children = self.children.lock().expect("children lock");
        match children.get_mut(name) {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Spawner for ProcessSpawner {
    fn address_for(&self, name: &str) -> Result<String, SpawnError> {
        let mut next = self.next_port.lock().expect("port lock");
        for _ in 0..1000 {
            let port = *next;
            *next = next
                .checked_add(1)
                .ok_or_else(|| SpawnError::Start { name: name.to_owned(), reason: "ran out of ports".into() })?;
            if TcpListener::bind((self.host.as_str(), port)).is_ok() {
                return Ok(format!("{}:{port}", self.host));
            }
        }
        Err(SpawnError::Start { name: name.to_owned(), reason: "no free port in 1000 tries".into() })
    }

    fn start(&self, node: &NodeSpec) -> BoxFuture<'_, Result<(), SpawnError>> {
        let node = node.clone();
        async move {
            if self.running(&node.name) {
                return Ok(());
            }
            let fail = |reason: String| SpawnError::Start { name: node.name.clone(), reason };
            std::fs::create_dir_all(&node.data_dir).map_err(|e| fail(e.to_string()))?;
            let log_path = node.data_dir.with_extension("log");
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|e| fail(format!("{}: {e}", log_path.display())))?;
            let child = Command::new(&self.node_bin)
                .arg("--id")
                .arg(&node.name)
                .arg("--listen")
                .arg(&node.addr)
                .arg("--data-dir")
                .arg(&node.data_dir)
                .args(&self.extra_args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(false)
                .spawn()
                .map_err(|e| fail(format!("{}: {e}", self.node_bin.display())))?;
            info!(node = %node.name, addr = %node.addr, pid = child.id(), "started node process");
            if let Some(pid) = child.id() {
                if let Err(e) = std::fs::write(pid_file(&node.data_dir), pid.to_string()) {
                    warn!(node = %node.name, %e, "could not record the node's pid: a later coordinator cannot stop it");
                }
            }
            self.children.lock().expect("children lock").insert(node.name.clone(), child);
            Ok(())
        }
        .boxed()
    }

    fn remove(&self, node: &NodeSpec) -> BoxFuture<'_, Result<(), SpawnError>> {
        let node = node.clone();
        async move {
            let child = self.children.lock().expect("children lock").remove(&node.name);
            if let Some(mut child) = child {
                let _ = child.start_kill();
                let _ = child.wait().await;
            } else if let Some(pid) = adopted_pid(&node.data_dir) {
                stop_adopted(&node.name, pid).await;
            }
            let _ = std::fs::remove_file(pid_file(&node.data_dir));
            if node.data_dir.exists() {
                std::fs::remove_dir_all(&node.data_dir)
                    .map_err(|e| SpawnError::Stop { name: node.name.clone(), reason: e.to_string() })?;
            }
            let _ = std::fs::remove_file(node.data_dir.with_extension("log"));
            Ok(())
        }
        .boxed()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        async move {
            let children: Vec<(String, Child)> = self.children.lock().expect("children lock").drain().collect();
            for (name, mut child) in children {
                if let Err(e) = child.start_kill() {
                    warn!(node = %name, %e, "could not stop node");
                }
                let _ = child.wait().await;
            }
            // The nodes left running are those an earlier coordinator started.
            for (name, pid) in self.nodes_dir.as_deref().map(adopted).unwrap_or_default() {
                stop_adopted(&name, pid).await;
            }
        }
        .boxed()
    }
}

fn pid_file(data_dir: &Path) -> PathBuf {
    data_dir.with_extension("pid")
}

/// The pid recorded for the node on `data_dir`, if that process still runs the node on that
/// directory (a pid can be reused by any other process once the node is gone).
fn adopted_pid(data_dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file(data_dir)).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let dir = data_dir.as_os_str().as_bytes();
    cmdline.split(|&b| b == 0).any(|arg| arg == dir).then_some(pid)
}

/// Every running node under `nodes_dir` with a pid file: (name, pid).
fn adopted(nodes_dir: &Path) -> Vec<(String, i32)> {
    let Ok(entries) = std::fs::read_dir(nodes_dir) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pid"))
        .filter_map(|p| {
            let data_dir = p.with_extension("");
            let name = data_dir.file_name()?.to_string_lossy().into_owned();
            Some((name, adopted_pid(&data_dir)?))
        })
        .collect()
}

/// Kills an adopted node (as started nodes are killed: its writes are durable by fsync) and
/// waits, bounded, until it is gone.
async fn stop_adopted(name: &str, pid: i32) {
    info!(node = name, pid, "stopping adopted node process");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let deadline = Instant::now() + ADOPTED_EXIT;
    while Instant::now() < deadline {
        // Gone, or a zombie waiting for its parent (init) to reap it: either way stopped.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = state.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if state.is_empty() || zombie {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    warn!(node = name, pid, "adopted node did not exit in time");
}
