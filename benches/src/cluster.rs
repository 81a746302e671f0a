//! A local Shardline cluster for a benchmark: `shardline up` as a child process with its
//! own temporary data directory and free ports, an init layout written as the seed's JSON,
//! and every process it caused stopped by pid at the end (also when dropped on failure).
//!
//! The processes are the `shardline up` child, the balancer (found by its listening port),
//! and the coordinator and nodes (found by the data directory in `/proc/<pid>/cmdline`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use shardline::{Client, ClientConfig, Credential, InitRequest, Topology};

use crate::error::BenchError;
use crate::rss;

/// Whether `port` on 127.0.0.1 can be bound right now.
fn is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The first of `n` consecutive ports from `low..low + span` that are free now, and so are
/// the `n` ports 1000 above them (`shardline up` serves each process's metrics there). The
/// ranges lie below the kernel's ephemeral ports (32768 and up on Linux): a port from those
/// could be taken by any outgoing connection between this probe and the cluster's bind.
fn free_ports_with_metrics(n: u16, low: u16, span: u16) -> Result<u16, BenchError> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let spread = (std::process::id() % 97) as u16;
    for _ in 0..300 {
        let step = NEXT.fetch_add(n + 7, Ordering::Relaxed);
        let base = low + (spread * 89 + step) % (span - n);
        if (base..base + n).chain(base + 1000..base + 1000 + n).all(is_free) {
            return Ok(base);
        }
    }
    Err(BenchError::Process(format!("no {n} consecutive free ports (with their metrics ports) found on 127.0.0.1")))
}

/// A free port, with its metrics port, for a balancer or a coordinator.
pub fn free_port() -> Result<u16, BenchError> {
    free_ports_with_metrics(1, 10_000, 9_000)
}

/// The first of `n` consecutive free ports, with their metrics ports, for storage nodes.
pub fn free_port_range(n: u16) -> Result<u16, BenchError> {
    free_ports_with_metrics(n, 20_000, 11_000)
}

/// An init layout as the seed's `/init` JSON, which `shardline up --config` reads.
pub fn init_json(init: &InitRequest) -> serde_json::Value {
    let columns: Vec<&str> = init.schema.columns.iter().map(|c| c.name.as_str()).collect();
    let dtypes: Vec<String> = init.schema.columns.iter().map(|c| c.ty.to_string()).collect();
    let shards: Vec<_> =
        init.shards.iter().map(|s| json!({"Shard_id": s.id.to_string(), "low": s.low, "Shard_size": s.size})).collect();
    let servers: serde_json::Map<String, serde_json::Value> = init
        .servers
        .iter()
        .map(|(name, shards)| (name.clone(), json!(shards.iter().map(|s| s.to_string()).collect::<Vec<_>>())))
        .collect();
    json!({"N": init.n, "schema": {"columns": columns, "dtypes": dtypes}, "shards": shards, "servers": servers})
}

/// A running `shardline up` cluster.
#[derive(Debug)]
pub struct LocalCluster {
    dir: tempfile::TempDir,
    child: Option<Child>,
    balancer_pid: Option<u32>,
    /// The balancer's port on 127.0.0.1.
    pub balancer_port: u16,
    /// The coordinator's port.
    pub coordinator_port: u16,
    /// The nodes' first port.
    pub node_base_port: u16,
}

impl LocalCluster {
    /// Starts `shardline` (the CLI binary at `shardline_bin`) `up` with `init` (or the
    /// seed's default layout) and waits until the cluster has settled, at most `limit`.
    pub async fn start(shardline_bin: &Path, init: Option<&InitRequest>, limit: Duration) -> Result<Self, BenchError> {
        LocalCluster::start_with(shardline_bin, init, limit, &[]).await
    }

    /// [`LocalCluster::start`] with further flags for `shardline up` (e.g. `--tls`, after
    /// which this process verifies the cluster against the CA `shardline up` made, or
    /// `--no-auth`).
    pub async fn start_with(
        shardline_bin: &Path,
        init: Option<&InitRequest>,
        limit: Duration,
        up_args: &[String],
    ) -> Result<Self, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("shardline-bench-")
            .tempdir()
            .map_err(|e| BenchError::io("a temporary directory", e))?;
        let mut cluster = LocalCluster {
            balancer_port: free_port()?,
            coordinator_port: free_port()?,
            node_base_port: free_port_range(24)?,
            dir,
            child: None,
            balancer_pid: None,
        };
        let log_path = cluster.dir.path().join("up.log");
        let log = std::fs::File::create(&log_path).map_err(|e| BenchError::io(log_path.display(), e))?;
        let mut command = Command::new(shardline_bin);
        command
            .arg("up")
            .arg("--data-dir")
            .arg(cluster.data_dir())
            .args(["--balancer-port", &cluster.balancer_port.to_string()])
            .args(["--coordinator-port", &cluster.coordinator_port.to_string()])
            .args(["--node-base-port", &cluster.node_base_port.to_string()])
            .args(up_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| BenchError::io(log_path.display(), e))?)
            .stderr(log);
        if let Some(init) = init {
            let path = cluster.dir.path().join("init.json");
            std::fs::write(&path, init_json(init).to_string()).map_err(|e| BenchError::io(path.display(), e))?;
            command.arg("--config").arg(path);
        }
        let child = command
            .spawn()
            .map_err(|e| BenchError::Process(format!("cannot start {}: {e}", shardline_bin.display())))?;
        cluster.child = Some(child);
        cluster.wait_settled(limit).await?;
        cluster.balancer_pid = rss::listening_pid(cluster.balancer_port);
        Ok(cluster)
    }

    /// The balancer's address.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.balancer_port)
    }

    /// The coordinator's address.
    pub fn coordinator_addr(&self) -> String {
        format!("127.0.0.1:{}", self.coordinator_port)
    }

    /// The data directory given to `shardline up`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The pid of the `shardline up` process.
    pub fn up_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    async fn wait_settled(&mut self, limit: Duration) -> Result<Topology, BenchError> {
        let config = ClientConfig {
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            retries: 0,
            ..ClientConfig::default()
        };
        let deadline = Instant::now() + limit;
        for _ in 0..(limit.as_millis() / 200 + 2) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(BenchError::Process(format!("shardline up exited ({status}): {}", self.log_tail())));
            }
            // `shardline up` writes the cluster's credentials first: the bench is its admin.
            if let Ok(admin) = Credential::load(&self.data_dir().join("auth/admin.credentials")) {
                shardline_protocol::net::auth::set_outgoing(Some(admin));
            }
            // With `--tls`, the CA comes first too (an empty file reads as none yet).
            if let Ok(ca) = shardline::ClientTls::load(&self.data_dir().join("auth/tls/ca.pem")) {
                shardline_protocol::net::tls::set_outgoing(Some(ca));
            }
            if let Ok(client) = Client::connect_with(self.addr(), config.clone()).await {
                if let Ok(t) = client.status().await {
                    if t.is_settled() {
                        return Ok(t);
                    }
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(BenchError::Process(format!("the cluster did not settle within {limit:?}: {}", self.log_tail())))
    }

    /// The last lines of `shardline up`'s output.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(6)..].join(" | ")
    }

    /// Every process whose command line names this cluster's directory, and the balancer.
    pub fn pids(&self) -> Vec<u32> {
        let marker = self.dir.path().to_string_lossy().into_owned();
        let me = std::process::id();
        let mut pids: Vec<u32> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
            .filter(|pid| *pid != me)
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
            })
            .collect();
        pids.extend(self.balancer_pid.filter(|p| alive(*p)));
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Stops the cluster: SIGINT to `shardline up` (which stops the balancer, the
    /// coordinator and the nodes), then SIGKILL to anything left after `limit`.
    pub async fn stop(mut self, limit: Duration) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), libc::SIGINT);
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.kill_rest();
    }

    fn kill_rest(&self) {
        for pid in self.pids() {
            signal(pid, libc::SIGKILL);
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.kill_rest();
    }
}

/// Whether process `pid` exists (and is not a zombie we could reap).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    // SAFETY: kill(2) with a pid and a signal number has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_json_reads_back_as_the_same_layout() {
        let init = shardline::InitRequest::seed();
        let doc = init_json(&init);
        let back = shardline::layout::init_from(&doc).unwrap();
        assert_eq!(back, init);
    }
}
