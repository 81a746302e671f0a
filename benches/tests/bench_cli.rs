//! `shardline-bench` end to end: a cluster from `shardline up` (its own ports and temporary
//! directory, every process killed by pid at the end, also on panic), a ~2 s run whose
//! table, `.hgrm` files, SVG charts and JSON are checked, an open-loop run by count, and bad
//! flags that must fail with one clear line and a non-zero exit, never a panic or a hang.

use std::process::Command;
use std::time::{Duration, Instant};

use shardline_benches::cluster::LocalCluster;
use shardline_benches::hgrm;

use shardline_testkit::target_dir;

use shardline_testkit::Finished as Run;

/// Runs shardline-bench with `args`, killed after `limit`.
fn bench(args: &[&str], limit: Duration) -> Run {
    bench_as(args, limit, None)
}

/// [`bench`] authenticating with the credentials file `credentials`, if any.
fn bench_as(args: &[&str], limit: Duration, credentials: Option<&std::path::Path>) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shardline-bench"));
    if let Some(path) = credentials {
        command.env("SHARDLINE_CREDENTIALS", path);
    }
    shardline_testkit::run_bounded(command.args(args), limit)
}

fn bad_flags(addr: &str) {
    let cases: [(&[&str], &str); 7] = [
        (&["--connections", "0"], "--connections"),
        (&["--mix", "read=1,scan=2"], "unknown operation `scan`"),
        (&["--mix", "read=0,write=0"], "sums to 0"),
        (&["--rate", "0"], "--rate"),
        (&["--duration", "soon"], "not a duration"),
        (&["--keys", "gaussian"], "gaussian"),
        (&["--requests", "0"], "--requests"),
    ];
    for (args, needle) in cases {
        let mut all = vec!["--addr", addr];
        all.extend_from_slice(args);
        let r = bench(&all, Duration::from_secs(10));
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.trim().lines().count(), 1, "{args:?}: one line, got {}", r.stderr);
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
    }
    let closed_port = shardline_benches::cluster::free_port().unwrap().to_string();
    let nowhere = format!("127.0.0.1:{closed_port}");
    let r = bench(&["--addr", &nowhere, "--duration", "1s"], Duration::from_secs(15));
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("cannot reach the balancer") && r.stderr.trim().lines().count() == 1, "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_against_a_real_cluster_and_refuses_bad_flags() {
    shardline_testkit::ensure_cluster_binaries();
    let started = Instant::now();
    let cluster = LocalCluster::start(&target_dir().join("shardline"), None, Duration::from_secs(90))
        .await
        .expect("shardline up");
    let addr = cluster.addr();
    let credentials = cluster.data_dir().join("auth/admin.credentials");
    let out = tempfile::tempdir().expect("temporary directory");
    let out_dir = out.path().join("closed");
    let r = bench_as(
        &[
            "--addr",
            &addr,
            "--duration",
            "2s",
            "--warmup",
            "300ms",
            "--connections",
            "4",
            "--pipeline",
            "2",
            "--keys",
            "zipfian",
            "--mix",
            "read=60,range=10,write=15,update=10,delete=5",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        Duration::from_secs(30),
        Some(&credentials),
    );
    assert_eq!(r.code, Some(0), "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("p50 ms") && r.stdout.contains("p99.9 ms") && r.stdout.contains("max ms"));
    assert!(r.stdout.contains("reads handled per server"), "{}", r.stdout);
    for op in ["read", "range", "write", "update", "delete"] {
        let line = r.stdout.lines().find(|l| l.starts_with(&format!("{op} "))).expect("a line per operation");
        let count: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let (points, total) = hgrm::parse(&std::fs::read_to_string(out_dir.join(format!("{op}.hgrm"))).unwrap())
            .unwrap_or_else(|e| panic!("{op}.hgrm: {e}"));
        assert_eq!(total, count, "{op}: the .hgrm holds what the table counted");
        assert!(count > 0 && !points.is_empty(), "{op} ran: {line}");
    }
    for svg in ["latency.svg", "spread.svg"] {
        let text = std::fs::read_to_string(out_dir.join(svg)).unwrap();
        assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"), "{svg}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["ops"].as_array().unwrap().len(), 5);

    let open_dir = out.path().join("open");
    let r = bench_as(
        &[
            "--addr",
            &addr,
            "--json",
            "--rate",
            "300",
            "--requests",
            "300",
            "--warmup",
            "0s",
            "--mix",
            "read=1",
            "--out",
            open_dir.to_str().unwrap(),
        ],
        Duration::from_secs(20),
        Some(&credentials),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let json: serde_json::Value = serde_json::from_str(&r.stdout).expect("--json prints JSON");
    assert_eq!(json["load"], "open");
    assert_eq!(json["ops"][0]["count"].as_u64().unwrap() + json["ops"][0]["errors"].as_u64().unwrap(), 300);

    bad_flags(&addr);
    cluster.stop(Duration::from_secs(20)).await;
    eprintln!("bench_cli took {:?}", started.elapsed());
}
