//! Storage nodes as child processes, each with its own data directory and log file.
//!
//! Nodes outlive a coordinator that is killed (the data plane keeps serving while the
//! control plane restarts); a restarted coordinator adopts the nodes that still answer and
//! starts the ones that do not. A graceful coordinator shutdown stops its children.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;

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
}

impl ProcessSpawner {
    /// Spawns `node_bin`, allocating ports from `first_port` up on `host`.
    pub fn new(node_bin: PathBuf, host: String, first_port: u16, extra_args: Vec<String>) -> ProcessSpawner {
        ProcessSpawner {
            node_bin,
            host,
            next_port: Mutex::new(first_port),
            extra_args,
            children: Mutex::new(HashMap::new()),
        }
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
            self.children.lock().expect("children lock").insert(node.name.clone(), child);
            Ok(())
        }
        .boxed()
    }

    fn can_restart(&self) -> bool {
        true
    }

    fn remove(&self, node: &NodeSpec) -> BoxFuture<'_, Result<(), SpawnError>> {
        let node = node.clone();
        async move {
            let child = self.children.lock().expect("children lock").remove(&node.name);
            if let Some(mut child) = child {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
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
        }
        .boxed()
    }
}
