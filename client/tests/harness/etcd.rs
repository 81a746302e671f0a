//! A real etcd cluster (Debian's `etcd-server`) on 127.0.0.1 ports, and the Shardline
//! processes the etcd tests start by hand: coordinators, balancers, nodes. Every process
//! started here is killed by its pid when the value holding it is dropped, also on a panic.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shardline::Client;

use super::{free_port, poll, signal, target_dir};

/// The etcd binary: `$SHARDLINE_ETCD`, else `etcd` on the PATH; `Err` says why there is none.
pub(crate) fn binary() -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var("SHARDLINE_ETCD") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file())
        .ok_or_else(|| "no etcd binary on the PATH (apt-get install etcd-server, as .ci/run does)".to_owned())
}

/// A child process with a name and a log file, killed by pid on drop.
pub(crate) struct Proc {
    /// What it is, for messages.
    pub name: String,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// Starts `bin` with `args`, output to `log`.
    pub(crate) fn start(name: &str, bin: &Path, args: &[String], log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(bin)
            .args(args)
            // SHARDLINE_TEST_RUST_LOG (e.g. `info,shardline_balancer=debug`) for more.
            .env("RUST_LOG", std::env::var("SHARDLINE_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({}): {e}", bin.display()));
        Proc { name: name.to_owned(), log, child: Some(child) }
    }

    /// Its pid, while it runs.
    pub(crate) fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Sends `sig` (SIGSTOP, SIGCONT...).
    pub(crate) fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            signal(pid, sig);
        }
    }

    /// SIGKILLs it and reaps it.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last `n` lines of its log.
    pub(crate) fn tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // SIGKILL ends a stopped process too.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A balancer following `coordinators` (comma-separated), logging into `dir`, and a client
/// through it once the cluster has settled.
pub(crate) async fn settled_balancer(dir: &Path, coordinators: &str) -> (Proc, Client) {
    let port = free_port();
    let args: Vec<String> = vec![
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--coordinator".into(),
        coordinators.to_owned(),
        "--metrics-addr".into(),
        "off".into(),
    ];
    let balancer = Proc::start("balancer", &bin("shardline-balancer"), &args, dir.join("balancer.log"));
    let c = poll("a settled cluster through the balancer", Duration::from_secs(30), || async {
        let c = Client::connect(format!("127.0.0.1:{port}")).await.ok()?;
        c.status().await.ok()?.is_settled().then_some(c)
    })
    .await;
    (balancer, c)
}

#[allow(unused_imports)] // each test binary uses part of it
pub(crate) use shardline_testkit::{pids_naming, KillNaming};

/// One HTTP/1.0 request to 127.0.0.1:`port`; the body of the answer, if any came.
pub(crate) fn http(port: u16, method: &str, path: &str, body: &str) -> Option<String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(1000))).ok()?;
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// A three-member (or n-member) etcd cluster on free 127.0.0.1 ports.
pub(crate) struct Etcd {
    /// Client ports, by member.
    pub client_ports: Vec<u16>,
    /// The members' processes (a killed one is `kill`ed in place).
    pub members: Vec<Proc>,
}

impl Etcd {
    /// Starts `n` members under `dir` and waits until every one reports healthy.
    pub(crate) async fn start(bin: &Path, dir: &Path, n: usize) -> Etcd {
        let client_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let peer_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let cluster: Vec<String> =
            peer_ports.iter().enumerate().map(|(i, p)| format!("m{i}=http://127.0.0.1:{p}")).collect();
        let mut members = Vec::new();
        for i in 0..n {
            let url = |p: u16| format!("http://127.0.0.1:{p}");
            let args: Vec<String> = [
                "--name",
                &format!("m{i}"),
                "--data-dir",
                &dir.join(format!("etcd-m{i}")).display().to_string(),
                "--listen-client-urls",
                &url(client_ports[i]),
                "--advertise-client-urls",
                &url(client_ports[i]),
                "--listen-peer-urls",
                &url(peer_ports[i]),
                "--initial-advertise-peer-urls",
                &url(peer_ports[i]),
                "--initial-cluster",
                &cluster.join(","),
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "shardline-test",
                // Short raft timings (etcd's minimum lease TTL follows from them: 1 s here).
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
                "--logger",
                "zap",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            members.push(Proc::start(&format!("etcd m{i}"), bin, &args, dir.join(format!("etcd-m{i}.log"))));
        }
        let etcd = Etcd { client_ports, members };
        for (i, &port) in etcd.client_ports.iter().enumerate() {
            let what = format!("etcd member m{i} healthy");
            poll(&what, Duration::from_secs(30), || async move {
                http(port, "GET", "/health", "").filter(|b| b.contains("\"health\":\"true\"")).map(|_| ())
            })
            .await;
        }
        etcd
    }

    /// `etcd://127.0.0.1:P,...` for the coordinators' `--meta`.
    pub(crate) fn url(&self) -> String {
        let hosts: Vec<String> = self.client_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("etcd://{}", hosts.join(","))
    }

    /// The member that leads etcd's raft group now, if one says so.
    pub(crate) fn leader(&self) -> Option<usize> {
        self.client_ports.iter().position(|&port| {
            let Some(body) = http(port, "POST", "/v3/maintenance/status", "{}") else { return false };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else { return false };
            let me = v["header"]["member_id"].as_str();
            me.is_some() && me == v["leader"].as_str()
        })
    }
}

/// The path of a binary built beside the tests.
pub(crate) fn bin(name: &str) -> PathBuf {
    target_dir().join(name)
}

/// A coordinator's STATS as pairs, if it answers within a second.
pub(crate) async fn stats(addr: &str) -> Option<Vec<(String, String)>> {
    let c = tokio::time::timeout(Duration::from_secs(1), Client::connect(addr.to_owned())).await.ok()?.ok()?;
    tokio::time::timeout(Duration::from_secs(1), c.stats()).await.ok()?.ok()
}

/// One STATS value.
pub(crate) fn stat<'a>(stats: &'a [(String, String)], key: &str) -> Option<&'a str> {
    stats.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Waits until one of `addrs` (not in `except`) says it leads; returns its index.
pub(crate) async fn wait_leader(addrs: &[String], except: &[usize], limit: Duration) -> usize {
    let started = Instant::now();
    let found = poll("a leading coordinator", limit, || async {
        for (i, addr) in addrs.iter().enumerate() {
            if except.contains(&i) {
                continue;
            }
            if let Some(s) = stats(addr).await {
                if stat(&s, "role") == Some("leader") {
                    return Some(i);
                }
            }
        }
        None
    })
    .await;
    eprintln!("coordinator {found} leads ({:?} after asking)", started.elapsed());
    found
}

/// Removes ANSI colour sequences from a log line.
pub(crate) fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The value of `key=` in a tracing line (`term=5`, `shard=sh1`, `node=Server0`).
pub(crate) fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    // The last whole `key=`: an event's own fields follow its spans' (and a shard span
    // lists each term its replica has been in, latest last).
    let whole = |&(at, _): &(usize, &str)| at == 0 || line[..at].ends_with([' ', '{', ',']);
    let at = line.match_indices(&format!("{key}=")).filter(whole).last()?.0 + key.len() + 1;
    let rest = &line[at..];
    let end = rest.find([' ', '}', ':', ',']).unwrap_or(rest.len());
    Some(&rest[..end])
}
