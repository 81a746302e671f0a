//! A real Prometheus (Debian's `prometheus` package) for the metrics tests: configured to
//! scrape given targets every second, on a free port, with its data in a temporary
//! directory, and killed by pid when dropped, also when the test panics.
//!
//! Its HTTP API is read with one HTTP/1.0 GET per call (the body is everything after the
//! headers; no chunking under HTTP/1.0), and the JSON parsed with serde_json.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{free_port, signal};

/// Where the Prometheus binary is, or why there is none (the test then skips).
pub(crate) fn find_binary() -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var("PROMETHEUS_BIN") {
        return Ok(PathBuf::from(path));
    }
    let candidates = std::env::var("PATH").unwrap_or_default();
    let found = std::iter::once(PathBuf::from("/usr/bin/prometheus"))
        .chain(std::env::split_paths(&candidates).map(|dir| dir.join("prometheus")))
        .find(|p| p.is_file());
    found.ok_or_else(|| "no prometheus binary (apt-get install prometheus, or set PROMETHEUS_BIN)".into())
}

/// The metrics address of a process serving on `addr` (`host:port`): `shardline up`'s
/// default, its port plus 1000.
pub(crate) fn metrics_target(addr: &str) -> String {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    format!("{host}:{}", port.parse::<u16>().expect("port") + 1000)
}

/// One scrape job: its name and `host:port` targets.
pub(crate) struct Job {
    /// The job label.
    pub name: &'static str,
    /// Targets serving `/metrics`.
    pub targets: Vec<String>,
}

/// A running Prometheus.
pub(crate) struct Prometheus {
    /// Its HTTP address.
    pub addr: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Prometheus {
    /// Starts `bin` scraping `jobs` every second; waits (bounded) until its API answers.
    pub(crate) async fn start(bin: &std::path::Path, jobs: &[Job]) -> Prometheus {
        let dir = tempfile::Builder::new().prefix("shardline-prometheus").tempdir().expect("temporary directory");
        let mut config = String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n");
        for job in jobs {
            let targets: Vec<String> = job.targets.iter().map(|t| format!("'{t}'")).collect();
            config.push_str(&format!(
                "  - job_name: '{}'\n    static_configs:\n      - targets: [{}]\n",
                job.name,
                targets.join(", ")
            ));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("prometheus.log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        let mut prometheus = Prometheus { addr, dir, child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(30);
        for _ in 0..300 {
            if prometheus.get("/-/ready").await.is_some_and(|(status, _)| status == 200) {
                return prometheus;
            }
            if let Some(Ok(Some(status))) = prometheus.child.as_mut().map(Child::try_wait) {
                panic!("prometheus exited ({status}):\n{}", prometheus.log());
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("prometheus not ready within 30 s:\n{}", prometheus.log());
    }

    /// Waits (bounded) until Prometheus has `expected` targets, every one `up`; returns them.
    pub(crate) async fn wait_all_up(&self, expected: usize) -> Vec<(String, String, String)> {
        super::poll("every target up in prometheus", Duration::from_secs(60), || async {
            let targets = self.targets().await?;
            (targets.len() == expected && targets.iter().all(|(_, _, health)| health == "up")).then_some(targets)
        })
        .await
    }

    /// Prometheus's own log.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GETs `path`; the status and the body, or `None` if the connection failed.
    pub(crate) async fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect(&self.addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr);
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await.ok()?.ok()?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    }

    /// GETs an API path and parses its JSON `data`; `None` unless the status is `success`.
    pub(crate) async fn api(&self, path: &str) -> Option<Value> {
        let (_, body) = self.get(path).await?;
        let json: Value = serde_json::from_str(&body).ok()?;
        (json["status"] == "success").then(|| json["data"].clone())
    }

    /// The scrape targets: (job, instance, health).
    pub(crate) async fn targets(&self) -> Option<Vec<(String, String, String)>> {
        let data = self.api("/api/v1/targets?state=active").await?;
        let targets = data["activeTargets"].as_array()?;
        Some(
            targets
                .iter()
                .map(|t| {
                    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                    (s(&t["labels"]["job"]), s(&t["labels"]["instance"]), s(&t["health"]))
                })
                .collect(),
        )
    }

    /// An instant query: each series' labels and value.
    pub(crate) async fn query(&self, promql: &str) -> Option<Vec<(Value, f64)>> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(promql))).await?;
        let series = data["result"].as_array()?;
        Some(series.iter().filter_map(|s| Some((s["metric"].clone(), s["value"][1].as_str()?.parse().ok()?))).collect())
    }

    /// A range query from `start` to `end` (Unix seconds) every `step` seconds: each
    /// series' labels and (time, value) points.
    pub(crate) async fn query_range(
        &self,
        promql: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Option<Vec<(Value, Vec<(f64, f64)>)>> {
        let path = format!("/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={step}", encode(promql));
        let data = self.api(&path).await?;
        let series = data["result"].as_array()?;
        let points = |s: &Value| -> Vec<(f64, f64)> {
            let values = s["values"].as_array().cloned().unwrap_or_default();
            values.iter().filter_map(|p| Some((p[0].as_f64()?, p[1].as_str()?.parse().ok()?))).collect()
        };
        Some(series.iter().map(|s| (s["metric"].clone(), points(s))).collect())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- prometheus ---\n{}", self.log());
        }
        if let Some(mut child) = self.child.take() {
            signal(child.id() as i32, libc::SIGKILL);
            let _ = child.wait();
        }
    }
}

/// Percent-encodes a query parameter (everything but unreserved characters).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
