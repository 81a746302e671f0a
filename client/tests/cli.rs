//! The `shardline` binary against a `shardline up` cluster: JSON output, exit codes and
//! one-line errors for bad input, and `write --file` with a CSV of a few thousand rows.

mod harness;

use std::io::Write as _;
use std::time::Duration;

use harness::{cli, CliRun, Up};
use serde_json::Value as Json;

fn ok(run: CliRun) -> Json {
    assert_eq!(run.code, Some(0), "{run:?}");
    serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {run:?}"))
}

/// A failed run: the exit code, and its one stderr line, which must contain `needle`.
fn fails(run: CliRun, code: i32, needle: &str) {
    assert_eq!(run.code, Some(code), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "one line on stderr: {run:?}");
    assert!(run.stderr.contains(needle), "{needle:?} not in {run:?}");
    assert!(!run.stderr.contains("panicked"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_writes_and_explains_mistakes() {
    let up = Up::start().await;
    let addr = up.addr();
    let dir = tempfile::tempdir().unwrap();
    let scenario = tokio::task::spawn_blocking(move || scenario(&addr, dir.path()));
    tokio::time::timeout(Duration::from_secs(240), scenario)
        .await
        .expect("the scenario finishes within 240 s")
        .expect("the scenario passes");
}

fn scenario(addr: &str, dir: &std::path::Path) {
    let sl = |args: &[&str]| {
        let mut all = vec!["--addr", addr];
        all.extend_from_slice(args);
        cli(&all)
    };

    let status = ok(sl(&["status", "--json"]));
    assert_eq!(status["shards"].as_array().unwrap().len(), 4);
    assert_eq!(status["schema"][0]["name"], "Stud_id");
    let text = sl(&["status"]);
    assert_eq!(text.code, Some(0));
    assert!(text.stdout.contains("Server0") && text.stdout.contains("sh4"), "{text:?}");

    let wrote = ok(sl(&["write", "42", "alice", "77", "--json"]));
    assert_eq!(wrote["rows"], 1);
    assert_eq!(wrote["commits"][0]["shard"], "sh1");
    let rows = ok(sl(&["read", "0", "100", "--json"]));
    assert_eq!(rows, serde_json::json!([{"Stud_id": 42, "Stud_name": "alice", "Stud_marks": 77}]));
    let table = sl(&["read", "0", "100", "--primary"]);
    assert_eq!(table.code, Some(0));
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("Stud_id  Stud_name  Stud_marks"), "{table:?}");
    assert!(lines[2].starts_with("42 "), "{table:?}");
    ok(sl(&["update", "42", "alice", "80", "--json"]));
    ok(sl(&["ping", "--json"]));
    ok(sl(&["stats", "--json"]));
    let held = ok(sl(&["read-server", "Server0", "--json"]));
    assert_eq!(held["server"], "Server0");

    // Bad input: non-zero exit, one line on stderr, nothing changed.
    fails(sl(&["write", "abc", "alice", "77"]), 1, "Stud_id");
    fails(sl(&["write", "43", "alice"]), 1, "needs 3 values");
    fails(sl(&["write", "43", "alice", "many"]), 1, "Stud_marks");
    fails(sl(&["write", "42", "alice", "77"]), 1, "DuplicateKey");
    fails(sl(&["write", "99999", "x", "1"]), 1, "KeyOutOfRange");
    fails(sl(&["read", "5", "1"]), 1, "above");
    fails(sl(&["read-server", "Nobody"]), 1, "UnknownServer");
    fails(sl(&["del", "12345"]), 1, "NotFound");
    fails(sl(&["rm", "-n", "1", "Nobody"]), 1, "Nobody");
    fails(sl(&["init", "--config", "/nonexistent.json"]), 1, "nonexistent");
    fails(sl(&["frobnicate"]), 2, "frobnicate");
    fails(sl(&["read", "x", "1"]), 2, "x");
    fails(cli(&["--addr", "127.0.0.1:1", "status"]), 1, "cannot reach the balancer");
    let rows = ok(sl(&["read", "0", "16383", "--json"]));
    assert_eq!(rows.as_array().unwrap().len(), 1, "bad input changed nothing");

    // write --file with a CSV of 3000 rows across every shard (columns in another order).
    let csv = dir.join("rows.csv");
    let mut f = std::fs::File::create(&csv).unwrap();
    writeln!(f, "Stud_name,Stud_id,Stud_marks").unwrap();
    for i in 1..=3000 {
        writeln!(f, "\"name {i}, jr\",{},{}", i * 5, i % 100).unwrap();
    }
    drop(f);
    let csv = csv.to_string_lossy().into_owned();
    let done = ok(sl(&["write", "--file", &csv, "--batch", "250", "--json"]));
    assert_eq!(done["rows"], 3000);
    assert_eq!(done["batches"], 12);
    let rows = ok(sl(&["read", "0", "16383", "--primary", "--json"]));
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3001);
    assert_eq!(rows[0], serde_json::json!({"Stud_id": 5, "Stud_name": "name 1, jr", "Stud_marks": 1}));

    // A bad row in a file: the line is named and nothing is sent.
    let bad = dir.join("bad.csv");
    let mut f = std::fs::File::create(&bad).unwrap();
    writeln!(f, "Stud_id,Stud_name,Stud_marks").unwrap();
    for i in 0..20 {
        let marks = if i == 8 { "lots".to_owned() } else { i.to_string() };
        writeln!(f, "{},n,{marks}", 16000 + i).unwrap();
    }
    drop(f);
    fails(sl(&["write", "--file", &bad.to_string_lossy()]), 1, "CSV line 10");
    let jsonl = dir.join("rows.jsonl");
    std::fs::write(
        &jsonl,
        "{\"Stud_id\":16001,\"Stud_name\":\"j\",\"Stud_marks\":1}\n{\"Stud_id\":16002,\"Stud_name\":\"k\",\"Stud_marks\":2}\n",
    )
    .unwrap();
    let done = ok(sl(&["write", "--file", &jsonl.to_string_lossy(), "--json"]));
    assert_eq!(done["rows"], 2);
    let tail = ok(sl(&["read", "16000", "16383", "--primary", "--json"]));
    assert_eq!(tail.as_array().unwrap().len(), 2, "only the JSON lines' rows: {tail}");
}
