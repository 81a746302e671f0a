//! One `shardline-node` child process: a free 127.0.0.1 port, its own temporary data dir,
//! stderr captured to a file, and signals sent by pid.
//!
//! The process is SIGKILLed and reaped when the [`NodeProc`] is dropped, so no node
//! outlives its test, panicking or not.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use shardline_protocol::{Request, Response};
use tempfile::TempDir;

use super::client::call_once;
use super::Budget;

/// The node binary cargo built for this test.
pub(crate) const NODE_BIN: &str = env!("CARGO_BIN_EXE_shardline-node");

/// How long a node may take to answer its first `Ping`.
pub(crate) const READY_WITHIN: Duration = Duration::from_secs(20);

/// The node's command-line settings.
#[derive(Debug, Clone)]
pub(crate) struct NodeOpts {
    /// `--write-timeout-ms`: how long a logged write waits for a majority.
    pub write_timeout_ms: u64,
    /// `--sync-heartbeat-ms`: how often a primary probes its followers.
    pub sync_heartbeat_ms: u64,
    /// `--snapshot-lag`, or the node's default.
    pub snapshot_lag: Option<u64>,
    /// `--log-retain`, or the node's default.
    pub log_retain: Option<u64>,
    /// `--snapshot-rate` (bytes a second), or the node's default.
    pub snapshot_rate: Option<u64>,
    /// `--max-payload` (bytes), or the node's default.
    pub max_payload: Option<usize>,
    /// Serve Prometheus metrics on a free port of their own (otherwise none).
    pub metrics: bool,
}

impl Default for NodeOpts {
    fn default() -> NodeOpts {
        NodeOpts {
            write_timeout_ms: 2000,
            sync_heartbeat_ms: 50,
            snapshot_lag: None,
            log_retain: None,
            snapshot_rate: None,
            max_payload: None,
            metrics: false,
        }
    }
}

/// A node process and everything it owns on disk.
pub(crate) struct NodeProc {
    name: String,
    port: u16,
    opts: NodeOpts,
    dir: TempDir,
    /// The metrics port, if the node serves metrics.
    metrics_port: Option<u16>,
    child: Option<Child>,
    last_exit: Option<ExitStatus>,
    starts: u32,
}

pub(crate) use shardline_testkit::free_port;

impl NodeProc {
    /// Spawns node `name` on a fresh port and data dir, with extra environment `env`.
    /// Does not wait for it to be ready (see [`NodeProc::wait_ready`]).
    pub(crate) fn spawn(name: &str, opts: NodeOpts, env: &[(&str, &str)]) -> io::Result<NodeProc> {
        let dir = tempfile::Builder::new().prefix(&format!("shardline-{name}-")).tempdir()?;
        std::fs::create_dir_all(dir.path().join("data"))?;
        let metrics_port = if opts.metrics { Some(free_port()) } else { None };
        let port = free_port();
        let mut node =
            NodeProc { name: name.to_owned(), port, opts, dir, metrics_port, child: None, last_exit: None, starts: 0 };
        node.start(env)?;
        Ok(node)
    }

    /// The node's server name (`--id`).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// `127.0.0.1:<port>`.
    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where the node serves Prometheus metrics, if it does.
    pub(crate) fn metrics_addr(&self) -> Option<String> {
        self.metrics_port.map(|p| format!("127.0.0.1:{p}"))
    }

    /// `--data-dir`.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where the node's stderr (and stdout) go, across restarts.
    pub(crate) fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("node.stderr")
    }

    /// The running process's pid, if there is one.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn start(&mut self, env: &[(&str, &str)]) -> io::Result<()> {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.starts += 1;
        let mut log = OpenOptions::new().create(true).append(true).open(self.stderr_path())?;
        writeln!(log, "==== harness: start #{} of {} on {} env {:?} ====", self.starts, self.name, self.addr(), env)?;
        let mut cmd = Command::new(NODE_BIN);
        cmd.arg("--id")
            .arg(&self.name)
            .arg("--listen")
            .arg(self.addr())
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--write-timeout-ms")
            .arg(self.opts.write_timeout_ms.to_string())
            .arg("--sync-heartbeat-ms")
            .arg(self.opts.sync_heartbeat_ms.to_string())
            // No metrics port unless asked for one: these tests pick free ports, and one
            // more per node could land on another test's.
            .arg(format!("--metrics-addr={}", self.metrics_addr().unwrap_or_else(|| "off".into())));
        if let Some(lag) = self.opts.snapshot_lag {
            cmd.arg("--snapshot-lag").arg(lag.to_string());
        }
        if let Some(retain) = self.opts.log_retain {
            cmd.arg("--log-retain").arg(retain.to_string());
        }
        if let Some(rate) = self.opts.snapshot_rate {
            cmd.arg("--snapshot-rate").arg(rate.to_string());
        }
        if let Some(max) = self.opts.max_payload {
            cmd.arg("--max-payload").arg(max.to_string());
        }
        cmd.env_remove("SHARDLINE_FAILPOINT");
        cmd.env("NO_COLOR", "1");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.envs(env.iter().copied());
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        self.child = Some(cmd.spawn()?);
        self.last_exit = None;
        Ok(())
    }

    /// Whether the process is running (a stopped process counts); reaps it if it exited.
    pub(crate) fn alive(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        match child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                self.last_exit = Some(status);
                self.child = None;
                false
            }
            Err(e) => panic!("waiting on {}: {e}", self.name),
        }
    }

    /// How the last process exited, if it did.
    pub(crate) fn exit_status(&self) -> Option<ExitStatus> {
        self.last_exit
    }

    /// Waits up to `limit` for the process to exit on its own; `true` if it did.
    pub(crate) async fn wait_exit(&mut self, limit: Duration) -> bool {
        let mut budget = Budget::every(format!("{} exit", self.name), limit, Duration::from_millis(20));
        loop {
            if !self.alive() {
                return true;
            }
            if !budget.retry().await {
                return false;
            }
        }
    }

    fn signal(&mut self, signal: libc::c_int) {
        if !self.alive() {
            return;
        }
        let pid = self.pid().expect("alive") as libc::pid_t;
        // SAFETY: kill(2) has no memory effects; the pid is our own unreaped child, so it
        // cannot have been reused by another process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}): {}", io::Error::last_os_error());
    }

    /// SIGKILL and reap. A no-op if the process is not running.
    pub(crate) fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut child) = self.child.take() {
            self.last_exit = child.wait().ok();
        }
    }

    /// SIGSTOP, then waits (up to 5 s, else panics) until the kernel shows the process
    /// stopped: SIGSTOP is asynchronous, and a test that needs the process to read nothing
    /// more must not race it. The process keeps its sockets (connects still complete) but
    /// answers nothing.
    pub(crate) async fn stop(&mut self) {
        self.signal(libc::SIGSTOP);
        assert!(self.wait_stopped(Duration::from_secs(5)).await, "{} did not stop", self.name);
    }

    /// Waits up to `limit` until the kernel shows the process stopped (state `T` in
    /// `/proc/<pid>/stat`).
    async fn wait_stopped(&mut self, limit: Duration) -> bool {
        let mut budget = Budget::every(format!("{} stopped", self.name), limit, Duration::from_millis(5));
        loop {
            if let Some(pid) = self.pid() {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                // The state follows the parenthesised command name, which may hold spaces.
                let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
                if matches!(state, Some("T" | "t")) {
                    return true;
                }
            }
            if !budget.retry().await {
                return false;
            }
        }
    }

    /// Kills the process, deletes its whole data directory (a lost or replaced disk) and
    /// starts it again, empty, on the same port. Does not wait for it to be ready.
    pub(crate) fn wipe_and_restart(&mut self) -> io::Result<()> {
        self.kill();
        std::fs::remove_dir_all(self.data_dir())?;
        std::fs::create_dir_all(self.data_dir())?;
        self.start(&[])
    }

    /// SIGCONT after [`NodeProc::stop`].
    pub(crate) fn cont(&mut self) {
        self.signal(libc::SIGCONT);
    }

    /// Kills the process if it runs, then starts it again on the same port and data dir
    /// with environment `env` (and without any failpoint not in `env`).
    pub(crate) fn restart(&mut self, env: &[(&str, &str)]) -> io::Result<()> {
        self.kill();
        self.start(env)
    }

    /// Polls `Ping` until it answers `Pong`; fails early if the process exits.
    pub(crate) async fn wait_ready(&mut self) -> Result<(), String> {
        let mut budget = Budget::every(format!("{} ready", self.name), READY_WITHIN, Duration::from_millis(25));
        let addr = self.addr();
        loop {
            if !self.alive() {
                return Err(format!(
                    "{} exited before it was ready ({:?})\n{}",
                    self.name,
                    self.last_exit,
                    self.stderr_tail(30)
                ));
            }
            let why = match call_once::<_, Response>(&addr, &Request::Ping, None, Duration::from_millis(500)).await {
                Ok(Response::Pong) => return Ok(()),
                Ok(other) => format!("Ping answered {other:?}"),
                Err(e) => e.to_string(),
            };
            if !budget.retry().await {
                return Err(format!("{} ({why})\n{}", budget.spent(), self.stderr_tail(30)));
            }
        }
    }

    /// The last `lines` lines of the node's stderr, headed by its name.
    pub(crate) fn stderr_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.stderr_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        format!(
            "---- {} ({}) stderr, last {} lines of {} ----\n{}",
            self.name,
            self.addr(),
            all.len() - from,
            all.len(),
            all[from..].join("\n")
        )
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}
