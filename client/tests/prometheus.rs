//! A real Prometheus scrapes a `shardline up` cluster: every process's `/metrics` is up,
//! and a shard's commit index, read through Prometheus's HTTP API, rises under writes.
//! Where no Prometheus binary is found the test prints `skipped: <reason>` and passes.

mod harness;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use harness::prometheus::{find_binary, metrics_target, Job, Prometheus};
use harness::{poll, row, Up};
use shardline::Topology;

/// The scrape jobs of a cluster: the balancer, the coordinator and every node.
fn jobs(up: &Up, t: &Topology) -> Vec<Job> {
    let coordinator = format!("127.0.0.1:{}", up.coordinator_port);
    vec![
        Job { name: "shardline-balancer", targets: vec![metrics_target(&up.addr())] },
        Job { name: "shardline-coordinator", targets: vec![metrics_target(&coordinator)] },
        Job { name: "shardline-node", targets: t.servers.iter().map(|s| metrics_target(&s.addr)).collect() },
    ]
}

/// Writes rows with fresh keys in `keys` until `stop`, counting acknowledged ones.
fn write_stream(up: &Up, keys: std::ops::Range<i64>, stop: Arc<AtomicBool>, acked: Arc<AtomicU64>) {
    let addr = up.addr();
    tokio::spawn(async move {
        let client = shardline::Client::connect(addr).await.expect("connect");
        for key in keys {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if client.write(&[row(key)]).await.is_ok() {
                acked.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

/// The highest commit index of `shard` any replica reports, through Prometheus.
async fn commit_index(prometheus: &Prometheus, shard: &str) -> Option<f64> {
    let series = prometheus.query(&format!("max(shardline_shard_commit_index{{shard=\"{shard}\"}})")).await?;
    series.first().map(|(_, v)| *v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_process_and_sees_commits_rise() {
    let bin = match find_binary() {
        Ok(bin) => bin,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let mut up = Up::start().await;
    let topology = up.wait_settled(Duration::from_secs(60)).await;
    let jobs = jobs(&up, &topology);
    let expected = jobs.iter().map(|j| j.targets.len()).sum::<usize>();
    let prometheus = Prometheus::start(&bin, &jobs).await;

    let targets = prometheus.wait_all_up(expected).await;
    assert_eq!(targets.iter().filter(|(job, _, _)| job == "shardline-node").count(), topology.servers.len());

    // sh1 holds keys from 0: write there and watch its commit index through Prometheus.
    let before =
        poll("sh1's commit index in prometheus", Duration::from_secs(30), || commit_index(&prometheus, "sh1")).await;
    let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    write_stream(&up, 0..4000, stop.clone(), acked.clone());
    let after = poll("sh1's commit index rising by 20", Duration::from_secs(60), || async {
        commit_index(&prometheus, "sh1").await.filter(|now| *now >= before + 20.0)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    assert!(acked.load(Ordering::Relaxed) >= 20, "the writes behind the rise were acknowledged");

    // The balancer counted the writes by op and code, and the primary's histogram saw them.
    let writes = poll("the balancer's write count in prometheus", Duration::from_secs(30), || async {
        let q = "sum(shardline_requests_total{job=\"shardline-balancer\",op=\"write\",code=\"ok\"})";
        prometheus.query(q).await?.first().map(|(_, v)| *v).filter(|v| *v >= 20.0)
    })
    .await;
    let primaries = prometheus.query("sum(shardline_shard_role{role=\"primary\"})").await.expect("roles");
    assert_eq!(primaries.first().map(|(_, v)| *v), Some(topology.shards.len() as f64), "one primary per shard");
    // Every query of the shipped Grafana dashboard is valid PromQL that finds data here.
    let dashboard = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard).expect("docs/grafana-dashboard.json")).expect("json");
    let panels = dashboard["panels"].as_array().expect("panels");
    let exprs: Vec<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(|e| e.replace("$__rate_interval", "1m")))
        .collect();
    assert!(exprs.len() >= 15, "the dashboard has its queries");
    for expr in &exprs {
        let result = prometheus.query(expr).await;
        assert!(result.is_some(), "dashboard query refused by prometheus: {expr}");
    }
    // What a scrape costs, as Prometheus measured it.
    for (what, q) in [
        ("slowest scrape (s)", "max by (job) (scrape_duration_seconds)"),
        ("samples per scrape", "max by (job) (scrape_samples_scraped)"),
    ] {
        for (labels, v) in prometheus.query(q).await.unwrap_or_default() {
            println!("prometheus: {what} {}: {v}", labels["job"]);
        }
    }
    println!("prometheus: {expected} targets up; sh1 commit index {before} -> {after}; balancer writes ok {writes}");
    up.interrupt().await;
}
