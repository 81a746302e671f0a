//! A Redis Cluster of 3 masters and 3 replicas on 127.0.0.1 free ports (Debian's
//! `redis-server`, `redis-cli`, `redis-benchmark`), each server a child process stopped by
//! its pid: on [`RedisCluster::stop`], and on drop if something failed first.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::signal;
use crate::error::BenchError;

/// Servers in the cluster: 3 masters, 3 replicas.
const SERVERS: u16 = 6;

/// What one redis-benchmark run printed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RedisResult {
    /// `SET` or `GET`.
    pub test: String,
    /// Requests per second.
    pub rps: f64,
    /// Median latency (ms), when this redis-benchmark prints it.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency (ms), when printed.
    pub p99_ms: Option<f64>,
}

/// Reads redis-benchmark's `--csv` output: a header, then `"SET","rps","avg",...`.
pub fn parse_csv(text: &str, test: &str) -> Option<RedisResult> {
    let unquote = |s: &str| s.trim().trim_matches('"').to_owned();
    let mut header: Vec<String> = Vec::new();
    for line in text.lines() {
        let fields: Vec<String> = line.split(',').map(unquote).collect();
        if fields.first().is_some_and(|f| f == "test") {
            header = fields;
            continue;
        }
        if !fields.first().is_some_and(|f| f.eq_ignore_ascii_case(test)) {
            continue;
        }
        let col = |name: &str| header.iter().position(|h| h == name).and_then(|i| fields.get(i)?.parse().ok());
        let rps = col("rps").or_else(|| fields.get(1)?.parse().ok())?;
        return Some(RedisResult {
            test: fields[0].clone(),
            rps,
            p50_ms: col("p50_latency_ms"),
            p99_ms: col("p99_latency_ms"),
        });
    }
    None
}

/// A running Redis Cluster.
#[derive(Debug)]
pub struct RedisCluster {
    dir: tempfile::TempDir,
    children: Vec<Child>,
    ports: Vec<u16>,
}

/// First of 6 consecutive ports whose cluster bus ports (+10000) are free too.
fn ports() -> Result<u16, BenchError> {
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    let spread = (std::process::id() % 200) as u16;
    for attempt in 0..200u16 {
        let base = 21_000 + (spread * 37 + attempt * 53) % 8_000;
        if (base..base + SERVERS).all(|p| free(p) && free(p + 10_000)) {
            return Ok(base);
        }
    }
    Err(BenchError::Process("no free ports for Redis Cluster".into()))
}

async fn output(cmd: &mut Command, limit: Duration) -> Result<String, BenchError> {
    let what = format!("{cmd:?}");
    let child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).spawn().map_err(
            |e| {
                BenchError::Process(format!("cannot run {what}: {e} (is Redis installed? make bench-peer installs it)"))
            },
        )?;
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| BenchError::Process(format!("{what} did not finish within {limit:?}")))?
        .map_err(|e| BenchError::Process(format!("{what}: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(BenchError::Process(format!("{what} failed ({}): {} {}", out.status, text.trim(), err.trim())));
    }
    Ok(text)
}

fn cli(port: u16) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("redis-cli");
    c.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    c
}

type Command = tokio::process::Command;

impl RedisCluster {
    /// Starts 6 servers (with `appendonly yes` and `appendfsync always` if `persistent`, with
    /// no persistence otherwise), joins them into a cluster with one replica per master, and
    /// waits until the cluster reports `cluster_state:ok`.
    pub async fn start(persistent: bool) -> Result<RedisCluster, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("shardline-bench-redis-")
            .tempdir()
            .map_err(|e| BenchError::io("a temporary directory", e))?;
        let base = ports()?;
        let mut cluster = RedisCluster { dir, children: Vec::new(), ports: (base..base + SERVERS).collect() };
        for &port in &cluster.ports.clone() {
            cluster.spawn(port, persistent)?;
        }
        for &port in &cluster.ports {
            cluster.wait(port, &["ping"], "PONG", Duration::from_secs(15)).await?;
        }
        let mut create = cli(cluster.ports[0]);
        create.arg("--cluster").arg("create");
        create.args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")));
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        output(&mut create, Duration::from_secs(60)).await?;
        for &port in &cluster.ports {
            cluster.wait(port, &["cluster", "info"], "cluster_state:ok", Duration::from_secs(30)).await?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, port: u16, persistent: bool) -> Result<(), BenchError> {
        let dir = self.dir.path().join(port.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| BenchError::io(dir.display(), e))?;
        let mut args: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--protected-mode".into(),
            "no".into(),
            "--daemonize".into(),
            "no".into(),
            "--cluster-enabled".into(),
            "yes".into(),
            "--cluster-config-file".into(),
            format!("nodes-{port}.conf"),
            "--dir".into(),
            dir.display().to_string(),
            "--logfile".into(),
            dir.join("redis.log").display().to_string(),
            "--save".into(),
            String::new(),
        ];
        let persistence: [&str; 4] = if persistent {
            ["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            ["--appendonly", "no", "--appendfsync", "no"]
        };
        args.extend(persistence.iter().map(|s| (*s).to_owned()));
        let child = std::process::Command::new("redis-server")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                BenchError::Process(format!("cannot start redis-server: {e} (make bench-peer installs it)"))
            })?;
        self.children.push(child);
        Ok(())
    }

    async fn wait(&self, port: u16, args: &[&str], want: &str, limit: Duration) -> Result<(), BenchError> {
        let deadline = Instant::now() + limit;
        for _ in 0..(limit.as_millis() / 100 + 2) {
            let mut c = cli(port);
            c.args(args);
            if output(&mut c, Duration::from_secs(5)).await.is_ok_and(|out| out.contains(want)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(self.dir.path().join(port.to_string()).join("redis.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        Err(BenchError::Process(format!(
            "redis on port {port} did not answer `{want}` within {limit:?}; its log ends: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )))
    }

    /// Runs `redis-benchmark --cluster` for `test` (`set` or `get`).
    pub async fn benchmark(
        &self,
        test: &str,
        clients: usize,
        pipeline: usize,
        value_size: usize,
        requests: u64,
    ) -> Result<RedisResult, BenchError> {
        let mut c = Command::new("redis-benchmark");
        c.args(["-h", "127.0.0.1", "-p", &self.ports[0].to_string(), "--cluster"]);
        c.args(["-c", &clients.to_string(), "-P", &pipeline.to_string(), "-d", &value_size.to_string()]);
        c.args(["-n", &requests.to_string(), "-r", "1000000", "-t", test, "--csv"]);
        let text = output(&mut c, Duration::from_secs(600)).await?;
        parse_csv(&text, test)
            .ok_or_else(|| BenchError::Process(format!("cannot read redis-benchmark's output: {}", text.trim())))
    }

    /// Where the servers keep their files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops every server: SIGTERM by pid, then SIGKILL after 10 s.
    pub async fn stop(mut self) {
        for child in &self.children {
            signal(child.id(), libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for child in &mut self.children {
            while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.kill();
    }

    fn kill(&mut self) {
        for mut child in self.children.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_redis_benchmark_csv() {
        let seven = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\"SET\",\"81037.28\",\"0.566\",\"0.136\",\"0.543\",\"0.863\",\"1.103\",\"3.151\"\n";
        let r = parse_csv(seven, "set").unwrap();
        assert_eq!((r.rps, r.p50_ms, r.p99_ms), (81037.28, Some(0.543), Some(1.103)));
        let six = "\"GET\",\"123.45\"\n";
        assert_eq!(parse_csv(six, "get").unwrap().p99_ms, None);
        assert!(parse_csv("nothing", "get").is_none());
    }
}
