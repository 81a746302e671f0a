//! Draws `docs/prometheus-failover.png`: a real Prometheus's record of shard sh1's commit
//! index and term on each replica while its primary is SIGKILLed under a write load, read
//! back with `/api/v1/query_range` and plotted (plotters SVG, then `rsvg-convert` to PNG).
//!
//! It writes into the source tree, so it is ignored by default; regenerate the picture with
//! `cargo test -p shardline --test failover_graph -- --ignored --nocapture`. It checks what
//! the picture must show: the term rose and the commit index went on rising after the kill.

mod harness;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use harness::prometheus::{find_binary, metrics_target, Job, Prometheus};
use harness::{row, signal, Up};
use plotters::prelude::*;
use serde_json::Value;

/// Points further apart than this (seconds; the range query steps 0.5 s) have a failed
/// scrape between them (Prometheus marks a series stale when its target is down).
const GAP: f64 = 0.75;

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs_f64()
}

/// The pid of the storage node named `name` started for `up`'s cluster.
fn node_pid(up: &Up, name: &str) -> Option<i32> {
    up.spawned_pids().into_iter().find(|pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.windows(2).any(|w| w[0] == b"--id" && w[1] == name.as_bytes())
    })
}

/// One line of a panel: its legend and (seconds since the start, value) points.
type Line = (String, Vec<(f64, f64)>);

fn lines(series: Vec<(Value, Vec<(f64, f64)>)>, start: f64, first: &str) -> Vec<Line> {
    let mut out: Vec<Line> = series
        .into_iter()
        .map(|(labels, points)| {
            let node = labels["node"].as_str().unwrap_or("?").to_owned();
            (node, points.into_iter().map(|(t, v)| (t - start, v)).collect())
        })
        .collect();
    out.sort_by_key(|(name, _)| (name != first, name.clone()));
    out
}

/// Draws the two panels (commit index above, term below) with the kill marked, as SVG.
fn draw(
    svg: &Path,
    title: &str,
    commit: &[Line],
    term: &[Line],
    killed: &str,
    kill_at: f64,
    span: f64,
) -> Result<(), String> {
    let root = SVGBackend::new(svg, (1000, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| format!("{e:?}"))?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(|e| format!("{e:?}"))?;
    let (upper, lower) = root.split_vertically(400);
    for (area, data, y_desc) in [(upper, commit, "commit index"), (lower, term, "term")] {
        let top = data.iter().flat_map(|(_, p)| p.iter().map(|p| p.1)).fold(1.0, f64::max);
        let max_y = if y_desc == "term" { top + 1.0 } else { top * 1.1 };
        let mut chart = ChartBuilder::on(&area)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..span, 0f64..max_y)
            .map_err(|e| format!("{e:?}"))?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(y_desc)
            .y_labels(if y_desc == "term" { max_y.ceil() as usize + 1 } else { 10 })
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(|e| format!("{e:?}"))?;
        for (i, (name, points)) in data.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            // The killed primary is drawn first and wide: where the replicas agree, it shows
            // as a band behind the others instead of vanishing under them.
            let width = if name == killed { 7 } else { 2 };
            // A scrape that failed (the node was down) leaves a gap: the line breaks there.
            let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
            for p in points {
                match runs.last_mut() {
                    Some(run) if run.last().is_some_and(|q| p.0 - q.0 <= GAP) => run.push(*p),
                    _ => runs.push(vec![*p]),
                }
            }
            chart
                .draw_series(runs.into_iter().map(|run| PathElement::new(run, color.mix(0.8).stroke_width(width))))
                .map_err(|e| format!("{e:?}"))?
                .label(if name == killed { format!("{name} (killed primary)") } else { name.clone() })
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width)));
        }
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(kill_at, 0.0), (kill_at, max_y)],
                BLACK.stroke_width(1),
            )))
            .map_err(|e| format!("{e:?}"))?
            .label("primary SIGKILLed")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(1)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .draw()
            .map_err(|e| format!("{e:?}"))?;
    }
    root.present().map_err(|e| format!("{e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/prometheus-failover.png; run with --ignored to regenerate it"]
async fn failover_graph_png() {
    let bin = match find_binary() {
        Ok(bin) => bin,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    if std::process::Command::new("rsvg-convert").arg("--version").output().is_err() {
        println!("skipped: no rsvg-convert (apt-get install librsvg2-bin)");
        return;
    }
    let mut up = Up::start().await;
    let topology = up.wait_settled(Duration::from_secs(60)).await;
    let nodes: Vec<String> = topology.servers.iter().map(|s| metrics_target(&s.addr)).collect();
    let expected = nodes.len();
    let prometheus = Prometheus::start(&bin, &[Job { name: "shardline-node", targets: nodes }]).await;
    prometheus.wait_all_up(expected).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (addr, writing) = (up.addr(), stop.clone());
    let writer = tokio::spawn(async move {
        let client = shardline::Client::connect(addr).await.expect("connect");
        let mut key = 0;
        while !writing.load(Ordering::Relaxed) && key < 4000 {
            let _ = client.write(&[row(key)]).await;
            key += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let start = unix_now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let primary = topology.shards.iter().find(|s| s.spec.id.to_string() == "sh1").and_then(|s| s.primary.clone());
    let primary = primary.expect("sh1 has a primary");
    let pid = node_pid(&up, &primary).expect("the primary's pid");
    let kill_at = unix_now() - start;
    signal(pid, libc::SIGKILL);
    tokio::time::sleep(Duration::from_secs(14)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    let end = unix_now();

    let range = |q: &'static str| prometheus.query_range(q, start, end, 0.5);
    let commit = range("shardline_shard_commit_index{shard=\"sh1\"}").await.expect("commit range");
    let commit = lines(commit, start, &primary);
    let term = lines(range("shardline_shard_term{shard=\"sh1\"}").await.expect("term range"), start, &primary);
    let last =
        |data: &[Line], f: fn(f64, f64) -> f64| data.iter().flat_map(|(_, p)| p.iter().map(|p| p.1)).fold(0.0, f);
    let before_kill =
        commit.iter().flat_map(|(_, p)| p.iter().filter(|p| p.0 < kill_at).map(|p| p.1)).fold(0.0, f64::max);
    let first_term = term.iter().flat_map(|(_, p)| p.first().map(|p| p.1)).fold(f64::MAX, f64::min);
    assert!(last(&term, f64::max) > first_term, "the term rose with the election");
    assert!(last(&commit, f64::max) > before_kill + 20.0, "commits went on under the new primary");

    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let svg = docs.join("prometheus-failover.svg");
    let title = format!("sh1 in Prometheus: {primary} (primary) SIGKILLed at {kill_at:.1} s under writes, 1 s scrapes");
    draw(&svg, &title, &commit, &term, &primary, kill_at, end - start).expect("drawing");
    let png = docs.join("prometheus-failover.png");
    let converted = std::process::Command::new("rsvg-convert")
        .args(["--background-color=white", "-o"])
        .arg(&png)
        .arg(&svg)
        .status()
        .expect("rsvg-convert");
    assert!(converted.success(), "rsvg-convert failed");
    std::fs::remove_file(&svg).expect("remove the svg");
    println!("wrote {}", png.display());
    up.interrupt().await;
}
