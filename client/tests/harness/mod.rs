//! Process-level harness for the client's tests: `shardline up` as a child process on free
//! ports with a temporary data directory, and every process it caused (coordinator,
//! balancer, nodes) killed by pid when the test ends, also when it panics.
//!
//! Processes are found by the temporary directory in `/proc/<pid>/cmdline`. Every wait
//! polls with a deadline and a bounded number of attempts.

#![allow(dead_code)]

pub(crate) mod etcd;
pub(crate) mod prometheus;
pub(crate) mod writers;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use shardline::{Client, Credential, Row, Topology, Value};

pub(crate) use shardline_testkit::{
    free_port, free_service_port, free_service_ports, node_base_port, poll, signal, target_dir,
};

/// The credentials every cluster of this test process shares: `shardline auth init` under
/// `target/<profile>/test-auth` (kept, so reused). The admin credential becomes this
/// process's own, so a plain `Client::connect` authenticates; [`cli`] passes it on.
pub(crate) fn test_auth() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = target_dir().join("test-auth");
        let status = Command::new(env!("CARGO_BIN_EXE_shardline"))
            .args(["auth", "init"])
            .arg(&dir)
            .stdout(Stdio::null())
            .status()
            .expect("running shardline auth init");
        assert!(status.success(), "shardline auth init {} failed", dir.display());
        let admin = Credential::load(&dir.join("admin.credentials")).expect("the admin credential");
        shardline_protocol::net::auth::set_outgoing(Some(admin));
        dir
    })
}

/// The text mode's line that authenticates a connection as the test admin.
pub(crate) fn auth_line() -> String {
    let admin = Credential::load(&test_auth().join("admin.credentials")).expect("the admin credential");
    format!("AUTH {} {}\n", admin.user, admin.secret.0)
}

/// Makes sure the sibling binaries `shardline up` runs exist, building missing ones.
pub(crate) fn ensure_binaries() {
    test_auth();
    shardline_testkit::ensure_binaries(shardline_testkit::SERVERS);
}

/// The pid a server reports on its STATS `pid` line.
pub(crate) async fn stats_pid(c: &Client) -> i32 {
    let stats = c.stats().await.expect("STATS answers");
    let pid = stats.into_iter().find(|(k, _)| k == "pid").and_then(|(_, v)| v.parse().ok());
    pid.expect("STATS has a pid line")
}

/// The row the tests write for `key` (the seed's schema).
pub(crate) fn row(key: i64) -> Row {
    Row::new(key, vec![Value::Str(format!("student{key}")), Value::Int(key % 100)])
}

/// A `shardline up` cluster.
pub(crate) struct Up {
    /// The temporary directory: the cluster's data under `data/`, up's output in `up.log`.
    pub dir: tempfile::TempDir,
    /// The balancer's port.
    pub balancer_port: u16,
    /// The coordinator's port.
    pub coordinator_port: u16,
    /// The nodes' first port.
    pub node_base_port: u16,
    /// Further flags for `shardline up` (e.g. `--config`, `--max-payload`).
    extra: Vec<String>,
    child: Option<Child>,
}

impl Up {
    /// Starts `shardline up` with a fresh data directory and waits until the cluster settles.
    pub(crate) async fn start() -> Up {
        Up::start_with(&[]).await
    }

    /// Like [`Up::start`], passing `extra` flags to `shardline up`.
    pub(crate) async fn start_with(extra: &[&str]) -> Up {
        ensure_binaries();
        let dir = tempfile::Builder::new().prefix("shardline-client-test").tempdir().expect("temporary directory");
        // `--balancers N` takes N ports from the balancer's.
        let balancers = extra.windows(2).find(|w| w[0] == "--balancers").and_then(|w| w[1].parse().ok()).unwrap_or(1);
        let mut up = Up {
            dir,
            balancer_port: free_service_ports(balancers),
            coordinator_port: free_service_port(),
            node_base_port: node_base_port(),
            extra: extra.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        up.spawn().await;
        up
    }

    /// (Re)starts `shardline up` on the same ports and data directory; waits until the
    /// cluster settles.
    pub(crate) async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("up.log");
        let child = Command::new(env!("CARGO_BIN_EXE_shardline"))
            .arg("up")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--balancer-port", &self.balancer_port.to_string()])
            .args(["--coordinator-port", &self.coordinator_port.to_string()])
            .args(["--node-base-port", &self.node_base_port.to_string()])
            .arg("--auth-dir")
            .arg(test_auth())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("starting shardline up");
        self.child = Some(child);
        self.wait_settled(Duration::from_secs(90)).await;
    }

    /// Waits until the balancer answers a settled topology; panics if `shardline up` exits.
    pub(crate) async fn wait_settled(&mut self, limit: Duration) -> Topology {
        let addr = self.addr();
        let deadline = Instant::now() + limit;
        for _ in 0..(limit.as_millis() / 200 + 2) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("shardline up exited early ({status}):\n{}", self.log_tail());
            }
            if let Ok(client) = Client::connect(addr.clone()).await {
                if let Ok(t) = client.status().await {
                    if t.is_settled() {
                        return t;
                    }
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("cluster not settled within {limit:?}:\n{}", self.log_tail());
    }

    /// The data directory given to `shardline up`.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("up.log")
    }

    /// The balancer's address.
    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.balancer_port)
    }

    /// A client of the balancer.
    pub(crate) async fn client(&self) -> Client {
        Client::connect(self.addr()).await.expect("connect to the balancer")
    }

    /// Sends SIGINT to `shardline up` and waits (bounded) for it to exit.
    pub(crate) async fn interrupt(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("shardline up is running");
        signal(child.id() as i32, libc::SIGINT);
        let limit = Duration::from_secs(60);
        let deadline = Instant::now() + limit;
        for _ in 0..(limit.as_millis() / 50 + 2) {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("shardline up did not exit within {limit:?} of SIGINT:\n{}", self.log_tail());
    }

    /// Every process whose command line names this test's directory.
    pub(crate) fn spawned_pids(&self) -> Vec<i32> {
        etcd::pids_naming(self.dir.path())
    }

    /// The tail of `shardline up`'s output and of the balancer's and coordinator's logs.
    pub(crate) fn log_tail(&self) -> String {
        let mut out = String::new();
        let mut logs = vec![
            ("shardline up".to_owned(), self.log_path()),
            ("balancer".to_owned(), self.data_dir().join("logs/balancer.log")),
            ("coordinator".to_owned(), self.data_dir().join("logs/coordinator.log")),
        ];
        let nodes = std::fs::read_dir(self.data_dir().join("coordinator/nodes")).into_iter().flatten().flatten();
        let mut node_logs: Vec<_> =
            nodes.map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "log")).collect();
        node_logs.sort();
        logs.extend(
            node_logs.into_iter().map(|p| (p.file_name().unwrap_or_default().to_string_lossy().into_owned(), p)),
        );
        for (name, path) in logs {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {name} ---\n"));
            out.push_str(&lines[lines.len().saturating_sub(25)..].join("\n"));
            out.push('\n');
        }
        out
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in self.spawned_pids() {
            signal(pid, libc::SIGKILL);
        }
    }
}

/// How a CLI run ended.
pub(crate) type CliRun = shardline_testkit::Finished;

/// Runs the `shardline` binary with `args` as the test admin, killing it after 60 s.
pub(crate) fn cli(args: &[&str]) -> CliRun {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shardline"));
    command.args(args).env("SHARDLINE_CREDENTIALS", test_auth().join("admin.credentials"));
    shardline_testkit::run_bounded(&mut command, Duration::from_secs(60))
}
