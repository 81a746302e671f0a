//! Process-level harness for the client's tests: `shardline up` as a child process on free
//! ports with a temporary data directory, and every process it caused (coordinator,
//! balancer, nodes) killed by pid when the test ends, also when it panics.
//!
//! Processes are found by the temporary directory in `/proc/<pid>/cmdline`. Every wait
//! polls with a deadline and a bounded number of attempts.

#![allow(dead_code)]

pub mod etcd;
pub mod prometheus;
pub mod writers;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use shardline::{Client, Credential, Row, Topology, Value};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local address")
        .port()
}

/// A free port whose metrics port (`shardline up` serves metrics at each port plus 1000)
/// is free too.
pub fn free_service_port() -> u16 {
    for _ in 0..100 {
        let port = free_port();
        if port <= u16::MAX - 1000 && std::net::TcpListener::bind(("127.0.0.1", port + 1000)).is_ok() {
            return port;
        }
    }
    panic!("no free port with a free port 1000 above it");
}

/// A free port whose next `n - 1` ports are free too, each with its metrics port (1000
/// above): for `shardline up --balancers n`.
pub fn free_service_ports(n: u16) -> u16 {
    for _ in 0..100 {
        let port = free_port();
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if port <= u16::MAX - 1000 - n && (0..n).all(|i| (i == 0 || free(port + i)) && free(port + i + 1000)) {
            return port;
        }
    }
    panic!("no {n} free ports in a row with free ports 1000 above them");
}

/// The start of a range of ports for storage nodes, different for each call in this
/// process and each test process, whose first 16 ports are free now, and so are the 16
/// ports 1000 above them (the nodes' metrics). Ranges are 2000 apart, so one cluster's
/// metrics ports are never another's node ports.
pub fn node_base_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let spread = (std::process::id() % 500) as u16;
    for _ in 0..200 {
        let slot = NEXT.fetch_add(1, Ordering::Relaxed) % 15;
        let base = 20_000 + (spread * 40 + slot * 2000) % 30_000;
        let free = (base..base + 16)
            .chain(base + 1000..base + 1016)
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free range of 16 ports found for the nodes");
}

/// The directory holding this test's binaries: `target/<profile>`.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps").to_path_buf()
}

/// The credentials every cluster of this test process shares: `shardline auth init` under
/// `target/<profile>/test-auth` (kept, so reused). The admin credential becomes this
/// process's own, so a plain `Client::connect` authenticates; [`cli`] passes it on.
pub fn test_auth() -> &'static Path {
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
pub fn auth_line() -> String {
    let admin = Credential::load(&test_auth().join("admin.credentials")).expect("the admin credential");
    format!("AUTH {} {}\n", admin.user, admin.secret.0)
}

/// Makes sure the sibling binaries `shardline up` runs exist, building missing ones.
pub fn ensure_binaries() {
    test_auth();
    for (package, bin) in [
        ("shardline-coordinator", "shardline-coordinator"),
        ("shardline-balancer", "shardline-balancer"),
        ("shardline-storage-node", "shardline-node"),
    ] {
        let path = target_dir().join(bin);
        if path.exists() {
            continue;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", package, "--bin", bin])
            .status()
            .unwrap_or_else(|e| panic!("running cargo build for {bin}: {e}"));
        assert!(status.success() && path.exists(), "could not build {}", path.display());
    }
}

/// Sends a signal to a process.
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid and a signal number has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// The pid a server reports on its STATS `pid` line.
pub async fn stats_pid(c: &Client) -> i32 {
    let stats = c.stats().await.expect("STATS answers");
    let pid = stats.into_iter().find(|(k, _)| k == "pid").and_then(|(_, v)| v.parse().ok());
    pid.expect("STATS has a pid line")
}

/// Polls `probe` every 100 ms until it gives a value; panics after `limit`.
pub async fn poll<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    for _ in 0..(limit.as_millis() / 100 + 2) {
        if let Some(v) = probe().await {
            return v;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within {limit:?}");
}

/// Whether every shard has a primary, every replica is readable and every server is up.
pub fn settled(t: &Topology) -> bool {
    t.schema.is_some()
        && !t.shards.is_empty()
        && t.shards.iter().all(|s| s.primary.is_some() && s.readable.len() == s.replicas.len())
        && t.servers.iter().all(|s| s.healthy)
}

/// The row the tests write for `key` (the seed's schema).
pub fn row(key: i64) -> Row {
    Row::new(key, vec![Value::Str(format!("student{key}")), Value::Int(key % 100)])
}

/// A `shardline up` cluster.
pub struct Up {
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
    pub async fn start() -> Up {
        Up::start_with(&[]).await
    }

    /// Like [`Up::start`], passing `extra` flags to `shardline up`.
    pub async fn start_with(extra: &[&str]) -> Up {
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
    pub async fn spawn(&mut self) {
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
    pub async fn wait_settled(&mut self, limit: Duration) -> Topology {
        let addr = self.addr();
        let deadline = Instant::now() + limit;
        for _ in 0..(limit.as_millis() / 200 + 2) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("shardline up exited early ({status}):\n{}", self.log_tail());
            }
            if let Ok(client) = Client::connect(addr.clone()).await {
                if let Ok(t) = client.status().await {
                    if settled(&t) {
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
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("up.log")
    }

    /// The balancer's address.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.balancer_port)
    }

    /// A client of the balancer.
    pub async fn client(&self) -> Client {
        Client::connect(self.addr()).await.expect("connect to the balancer")
    }

    /// Sends SIGINT to `shardline up` and waits (bounded) for it to exit.
    pub async fn interrupt(&mut self) -> ExitStatus {
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
    pub fn spawned_pids(&self) -> Vec<i32> {
        etcd::pids_naming(self.dir.path())
    }

    /// The tail of `shardline up`'s output and of the balancer's and coordinator's logs.
    pub fn log_tail(&self) -> String {
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

/// What a CLI run printed and how it ended.
#[derive(Debug)]
pub struct CliRun {
    /// The exit code (None: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs the `shardline` binary with `args`, killing it after 60 s.
pub fn cli(args: &[&str]) -> CliRun {
    let out_dir = tempfile::tempdir().expect("temporary directory");
    let (out, err) = (out_dir.path().join("out"), out_dir.path().join("err"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardline"))
        .args(args)
        .env("SHARDLINE_CREDENTIALS", test_auth().join("admin.credentials"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("running shardline");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("shardline {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    CliRun {
        code: status.code(),
        stdout: std::fs::read_to_string(out).unwrap_or_default(),
        stderr: std::fs::read_to_string(err).unwrap_or_default(),
    }
}
