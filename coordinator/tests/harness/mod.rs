//! Process-level harness for coordinator tests: a real `shardline-coordinator` spawning real
//! `shardline-node` processes on 127.0.0.1, all killed by pid when the test ends (also when
//! it panics).
//!
//! Node processes outlive a killed coordinator by design, so the harness finds every
//! process it caused by its unique data directory in `/proc/<pid>/cmdline` and kills them
//! all on drop. Every wait polls with a deadline and a bounded number of attempts.

#![allow(dead_code)]

pub(crate) mod wire;
pub(crate) use wire::{poll, row, Outcome};

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shardline_protocol::{Request, Response, Row, ShardId, ShardSpec, Topology};

/// The coordinator's timings in tests: the defaults (heartbeat 100 ms, dead after 400 ms).
pub(crate) const CALL: Duration = Duration::from_secs(3);

pub(crate) use shardline_testkit::{free_port, node_base_port, signal};

/// The `shardline-node` binary next to this test's target directory, built if missing.
pub(crate) fn node_bin() -> PathBuf {
    shardline_testkit::ensure_binaries(&[("shardline-storage-node", "shardline-node")]);
    shardline_testkit::target_dir().join("shardline-node")
}

/// A coordinator process and everything it spawned.
pub(crate) struct Coord {
    pub port: u16,
    node_base_port: u16,
    node_args: Vec<String>,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Coord {
    /// Starts a coordinator on a free port with a fresh data directory; its nodes get
    /// ports from a free range of their own ([`node_base_port`]).
    pub(crate) async fn start() -> Coord {
        Coord::start_with(&[]).await
    }

    /// Like [`Coord::start`], passing `node_args` to every node it spawns.
    pub(crate) async fn start_with(node_args: &[&str]) -> Coord {
        let dir = tempfile::Builder::new().prefix("shardline-coord-test").tempdir().unwrap();
        let node_args = node_args.iter().map(|a| format!("--node-arg={a}")).collect();
        let mut c = Coord { port: free_port(), node_base_port: node_base_port(), node_args, dir, child: None };
        c.spawn().await;
        c
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("coordinator.log")
    }

    /// (Re)starts the coordinator process on the same port and data directory.
    pub(crate) async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_shardline-coordinator"))
            .arg("--listen")
            .arg(self.addr())
            .arg("--data-dir")
            .arg(self.dir.path())
            .arg("--node-bin")
            .arg(node_bin())
            .arg("--node-base-port")
            .arg(self.node_base_port.to_string())
            // No metrics ports (for it or its nodes): these tests pick free ports, and more
            // ports could land on another test's.
            .args(["--metrics-addr=off", "--node-arg=--metrics-addr=off"])
            .args(&self.node_args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting shardline-coordinator");
        self.child = Some(child);
        let addr = self.addr();
        poll("coordinator answers", Duration::from_secs(20), || async {
            matches!(request(&addr, &Request::Ping).await, Ok(Response::Pong)).then_some(())
        })
        .await;
    }

    /// The coordinator's address.
    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILLs the coordinator only (its nodes keep running).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The topology now.
    pub(crate) async fn topology(&self) -> Topology {
        match request(&self.addr(), &Request::Status).await {
            Ok(Response::Topology(t)) => t,
            other => panic!("status: {other:?}"),
        }
    }

    /// Polls until `check` accepts the topology.
    pub(crate) async fn wait_topology(
        &self,
        what: &str,
        limit: Duration,
        check: impl Fn(&Topology) -> bool,
    ) -> Topology {
        let addr = self.addr();
        poll(what, limit, || async {
            match request(&addr, &Request::Status).await {
                Ok(Response::Topology(t)) if check(&t) => Some(t),
                _ => None,
            }
        })
        .await
    }

    /// Every process whose command line names this test's data directory.
    pub(crate) fn spawned_pids(&self) -> Vec<i32> {
        let marker = self.dir.path().to_string_lossy().into_owned();
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
                if String::from_utf8_lossy(&cmdline).contains(&marker) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// A spawned node's data directory.
    pub(crate) fn node_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join("nodes").join(name)
    }

    /// The tail of the coordinator's log, for failure messages.
    /// The coordinator's whole log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Coord {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- coordinator log tail ---\n{}", self.log_tail());
        }
        self.kill();
        for pid in self.spawned_pids() {
            signal(pid, libc::SIGKILL);
        }
    }
}

/// One request on a fresh connection.
pub(crate) async fn request(addr: &str, request: &Request) -> Result<Response, String> {
    wire::request_within(addr, request, CALL).await
}

/// The address of a server in the topology.
pub(crate) fn addr_of(t: &Topology, server: &str) -> String {
    t.server(server).unwrap_or_else(|| panic!("no server {server}")).addr.clone()
}

/// A node's pid, from its STATS.
pub(crate) async fn node_pid(addr: &str) -> i32 {
    match request(addr, &Request::Stats).await {
        Ok(Response::Stats(pairs)) => {
            pairs.iter().find(|(k, _)| k == "pid").and_then(|(_, v)| v.parse().ok()).expect("a pid line")
        }
        other => panic!("stats from {addr}: {other:?}"),
    }
}

/// Writes `key` to its shard's primary as the topology names it, retrying through
/// failover (refreshing the topology) for up to `limit`; `(client, seq)` makes retries
/// idempotent.
pub(crate) async fn write_routed(coord: &Coord, key: i64, client: u64, seq: u64, limit: Duration) -> Outcome {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    for _ in 0..(limit.as_millis() / 20 + 2) {
        if Instant::now() >= deadline {
            break;
        }
        let t = coord.topology().await;
        let Some(shard) = t.shard_for_key(key) else {
            return Outcome::Failed("no shard".into());
        };
        if let Some(primary) = &shard.primary {
            match wire::write_once(&addr_of(&t, primary), client, seq, key, CALL).await {
                Ok(outcome) => return outcome,
                Err(e) => last = e,
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Outcome::Failed(format!("gave up: {last}"))
}

/// All rows of a shard, read from its primary (linearizable).
pub(crate) async fn shard_rows(coord: &Coord, shard: ShardId) -> Vec<Row> {
    poll("reading a shard from its primary", Duration::from_secs(20), || async {
        let t = coord.topology().await;
        let s = t.shards.iter().find(|s| s.spec.id == shard)?;
        let primary = s.primary.as_ref()?;
        let read = Request::Read {
            low: s.spec.low,
            high: s.spec.high()?,
            consistency: shardline_protocol::Consistency::Primary,
        };
        match request(&addr_of(&t, primary), &read).await {
            Ok(Response::Rows { rows, .. }) => Some(rows),
            _ => None,
        }
    })
    .await
}

/// All rows a replica holds of a shard (any replica, follower reads).
pub(crate) async fn replica_rows(addr: &str, shard: ShardSpec) -> Option<Vec<Row>> {
    let read = Request::Read { low: shard.low, high: shard.high()?, consistency: shardline_protocol::Consistency::Any };
    match request(addr, &read).await {
        Ok(Response::Rows { rows, .. }) => Some(rows),
        _ => None,
    }
}
