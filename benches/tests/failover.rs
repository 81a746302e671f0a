//! `shardline-bench failover` end to end, as processes: the bench starts its own `shardline
//! up` cluster (in a temporary directory this test owns, so every process it leaves behind
//! can be found by its command line and killed), kills a primary twice and pauses one
//! (and, as root with iptables, cuts one off), under load, then reads everything back.
//! Checked: the JSON report's structure, and that no acknowledged write was lost and no
//! refused write is present. No timing is asserted.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Everything started under one directory, killed by pid when dropped (also on panic).
struct Owned {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in shardline_testkit::pids_naming(self.dir.path()) {
            shardline_testkit::signal(pid, libc::SIGKILL);
        }
    }
}

/// Whether this machine can cut a process off (root with iptables); else why not.
fn partition_possible() -> Result<(), String> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    match Command::new("iptables").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => Err("no iptables".into()),
    }
}

#[test]
// A scenario reads top to bottom as the story it tests; split, it would not.
#[allow(clippy::too_many_lines)]
fn kills_and_a_pause_lose_no_acknowledged_write() {
    shardline_testkit::ensure_cluster_binaries();
    let mut kinds = vec!["kill", "pause", "kill"];
    match partition_possible() {
        Ok(()) => kinds.push("partition"),
        Err(why) => eprintln!("skipped: the partition event ({why})"),
    }
    let owned_dir = tempfile::Builder::new().prefix("failover-test-").tempdir().expect("temporary directory");
    let out = owned_dir.path().join("out");
    let stdout = owned_dir.path().join("stdout");
    let stderr = owned_dir.path().join("stderr");
    let child = Command::new(env!("CARGO_BIN_EXE_shardline-bench"))
        .args(["failover", "--events", "1", "--kinds", &kinds.join(","), "--pause", "1500ms"])
        .args(["--interval", "500ms", "--connections", "4", "--rate", "200", "--recover-timeout", "40s", "--json"])
        .arg("--out")
        .arg(&out)
        // The bench's cluster lives under TMPDIR: this test's directory.
        .env("TMPDIR", owned_dir.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("running shardline-bench failover");
    let mut owned = Owned { dir: owned_dir, child: Some(child) };
    let limit = Duration::from_secs(240);
    let deadline = Instant::now() + limit;
    let status = loop {
        let child = owned.child.as_mut().expect("the bench");
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            // SIGTERM first: the bench then stops its cluster itself.
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            // Up to 5 s for it to stop its cluster; the guard kills whatever is left.
            for _ in 0..50 {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            panic!("shardline-bench failover did not finish within {limit:?}: {}", tail(&stderr));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    owned.child = None;
    assert!(status.success(), "shardline-bench failover failed ({status}): {}", tail(&stderr));

    let text = std::fs::read_to_string(&stdout).expect("stdout");
    let report: serde_json::Value = serde_json::from_str(&text).expect("the report is JSON");
    let events = report["events"].as_array().expect("events");
    assert_eq!(events.len(), kinds.len(), "{text}");
    for (event, kind) in events.iter().zip(&kinds) {
        assert_eq!(event["kind"], *kind);
        assert!(event["victim"].as_str().is_some_and(|v| v.starts_with("Server")), "{event}");
        assert!(event["recovered_us"].as_u64() >= event["at_us"].as_u64(), "{event}");
        assert!(event.get("write_ms").is_some() && event.get("read_ms").is_some(), "{event}");
        if *kind == "kill" {
            assert!(
                event["term_after"].as_u64() > event["term_before"].as_u64(),
                "a killed primary is replaced: {event}"
            );
            assert!(event["healed_us"].is_null(), "{event}");
        } else {
            assert!(event["healed_us"].as_u64() > event["at_us"].as_u64(), "{event}");
        }
    }
    let summary = report["summary"].as_array().expect("summary");
    let kill = summary.iter().find(|k| k["kind"] == "kill").expect("a kill line");
    assert_eq!(kill["events"], 2);
    assert!(kill["write"]["p99_ms"].as_f64().is_some(), "{kill}");
    assert!(summary.iter().any(|k| k["kind"] == "pause" && k["events"] == 1), "{text}");

    let verdict = &report["verdict"];
    assert!(verdict["acknowledged"].as_u64() > Some(0), "{verdict}");
    assert_eq!(verdict["acknowledged_lost"], 0, "acknowledged writes were lost: {verdict}");
    assert_eq!(verdict["refused_present"], 0, "refused writes are present: {verdict}");
    assert_eq!(verdict["wrong_values"], 0, "{verdict}");
    assert!(report["timeline"].as_array().is_some_and(|t| !t.is_empty()));
    let svg = std::fs::read_to_string(out.join("timeline.svg")).expect("timeline.svg");
    assert!(svg.starts_with("<svg") && svg.contains("kill"));
    assert!(out.join("report.json").is_file());

    let left = shardline_testkit::pids_naming(owned.dir.path());
    assert!(left.is_empty(), "the bench left processes running: {left:?}");
    let rules = Command::new("iptables").arg("-S").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    assert!(!rules.unwrap_or_default().contains("shardline-bench-"), "the bench left iptables rules behind");
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[test]
fn bad_failover_flags_fail_with_one_clear_line() {
    let cases: [(&[&str], &str); 4] = [
        (&["--kinds", "reboot"], "unknown fault kind `reboot`"),
        (&["--write-percent", "100"], "--write-percent"),
        (&["--pause", "soon"], "not a duration"),
        (&["--addr", "127.0.0.1:1", "--nodes-dir", "/nonexistent", "--kinds", "kill"], "--nodes-dir"),
    ];
    for (args, want) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_shardline-bench"))
            .arg("failover")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running shardline-bench failover");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want) && stderr.trim().lines().count() == 1, "{args:?}: {stderr}");
    }
}
