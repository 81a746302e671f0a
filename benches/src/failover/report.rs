//! What a failover run reports: the per-kind table of unavailability windows, every event,
//! the read-back verdict, and the timeline; written as `report.json` and `timeline.svg`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plotters::prelude::*;
use serde::Serialize;

use crate::error::BenchError;
use crate::failover::ledger::Verdict;
use crate::failover::window::{self, Bucket, FaultEvent, FaultKind, KindSummary, OpRecord, Percentiles, Windows};
use crate::failover::FailoverSpec;
use crate::plots::{plot_error, COLORS};

/// One rate of a timeline bucket, as a line of the chart.
type Rate = fn(&Bucket) -> f64;

/// Width of the timeline's buckets.
const BUCKET_US: u64 = 250_000;

/// One event with its windows.
#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    /// The fault and the recovery.
    #[serde(flatten)]
    pub event: FaultEvent,
    /// Its windows.
    #[serde(flatten)]
    pub windows: Windows,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    /// What the nodes were (processes or containers).
    pub target: String,
    /// The balancer.
    pub addr: String,
    /// Pause and partition length, ms.
    pub hold_ms: u64,
    /// Load: connections, calls per second, percent writes, primary reads.
    pub connections: usize,
    /// Calls per second asked for.
    pub rate: f64,
    /// Percent of calls that were writes.
    pub write_percent: u32,
    /// Whether reads went to primaries.
    pub primary_reads: bool,
    /// Seconds of load.
    pub elapsed_s: f64,
    /// Calls made, and how many failed.
    pub calls: u64,
    /// Calls that failed.
    pub failed_calls: u64,
    /// Per fault kind.
    pub summary: Vec<KindSummary>,
    /// Every event.
    pub events: Vec<EventRow>,
    /// What reading back found.
    pub verdict: Verdict,
    /// Rates over time.
    pub timeline: Vec<Bucket>,
    /// Things a reader should know.
    pub notes: Vec<String>,
    /// Files written.
    pub files: Vec<PathBuf>,
}

impl FailoverReport {
    /// The report of a run of `spec` against `addr` that lasted `elapsed`.
    pub fn new(
        spec: &FailoverSpec,
        addr: &str,
        elapsed: Duration,
        records: &[OpRecord],
        events: Vec<FaultEvent>,
        verdict: Verdict,
        notes: Vec<String>,
    ) -> FailoverReport {
        let events: Vec<EventRow> =
            events.into_iter().map(|e| EventRow { windows: window::windows(records, &e), event: e }).collect();
        let pairs: Vec<(FaultEvent, Windows)> = events.iter().map(|r| (r.event.clone(), r.windows)).collect();
        FailoverReport {
            target: String::new(),
            addr: addr.to_owned(),
            hold_ms: spec.hold.as_millis() as u64,
            connections: spec.connections,
            rate: spec.rate,
            write_percent: spec.write_percent,
            primary_reads: spec.primary_reads,
            elapsed_s: elapsed.as_secs_f64(),
            calls: records.len() as u64,
            failed_calls: records.iter().filter(|r| !r.ok).count() as u64,
            summary: window::summarize(&pairs),
            events,
            verdict,
            timeline: window::timeline(records, BUCKET_US),
            notes,
            files: Vec::new(),
        }
    }

    /// Writes `report.json` and `timeline.svg` into `dir`.
    pub fn write_files(&mut self, dir: &Path) -> Result<(), BenchError> {
        std::fs::create_dir_all(dir).map_err(|e| BenchError::io(dir.display(), e))?;
        let svg = dir.join("timeline.svg");
        self.plot(&svg)?;
        let json = dir.join("report.json");
        self.files = vec![svg, json.clone()];
        let text = serde_json::to_string_pretty(self).expect("a report serializes");
        std::fs::write(&json, text + "\n").map_err(|e| BenchError::io(json.display(), e))
    }

    /// The report as a table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let reads = if self.primary_reads { "primary" } else { "any replica" };
        let _ = writeln!(
            out,
            "failover on {} via {}: {} connections, {:.0} calls/s, {}% writes, reads from {reads}, \
             pause/partition {} ms; {:.0} s of load, {} calls, {} failed\n",
            self.target,
            self.addr,
            self.connections,
            self.rate,
            self.write_percent,
            self.hold_ms,
            self.elapsed_s,
            self.calls,
            self.failed_calls
        );
        let _ = writeln!(
            out,
            "{:<10} {:>6} | {:>14} {:>8} {:>8} | {:>13} {:>8} {:>8} | {:>8}",
            "fault", "events", "write p50 ms", "p99 ms", "max ms", "read p50 ms", "p99 ms", "max ms", "unclosed"
        );
        for k in &self.summary {
            let cells = |p: &Option<Percentiles>| match p {
                Some(p) => [p.p50_ms, p.p99_ms, p.max_ms].map(|v| format!("{v:.0}")),
                None => ["-".to_owned(), "-".to_owned(), "-".to_owned()],
            };
            let (w, r) = (cells(&k.write), cells(&k.read));
            let _ = writeln!(
                out,
                "{:<10} {:>6} | {:>14} {:>8} {:>8} | {:>13} {:>8} {:>8} | {:>8}",
                k.kind.name(),
                k.events,
                w[0],
                w[1],
                w[2],
                r[0],
                r[1],
                r[2],
                k.unclosed
            );
        }
        let v = &self.verdict;
        let _ = writeln!(
            out,
            "\nwrites: {} sent, {} acknowledged, {} refused, {} indeterminate ({} of them present)",
            v.writes, v.acknowledged, v.refused, v.indeterminate, v.indeterminate_present
        );
        let _ = writeln!(
            out,
            "read back: {} acknowledged writes lost, {} refused writes present, {} wrong values{}",
            v.acknowledged_lost,
            v.refused_present,
            v.wrong_values,
            if v.holds() { "" } else { "  <-- VIOLATION" }
        );
        for e in &v.examples {
            let _ = writeln!(out, "  {e}");
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        if !self.files.is_empty() {
            let names: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
            let _ = writeln!(out, "files: {}", names.join(" "));
        }
        out
    }

    /// Draws throughput and errors over time, each fault a shaded span (to its heal, or a
    /// thin line for a kill) in its kind's colour.
    pub fn plot(&self, path: &Path) -> Result<(), BenchError> {
        let end_s = self.timeline.last().map_or(1.0, |b| b.start_s + BUCKET_US as f64 / 1e6);
        let top =
            self.timeline.iter().map(|b| b.writes_per_s.max(b.reads_per_s).max(b.errors_per_s)).fold(1.0, f64::max);
        let top = top * 1.15;
        let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
        let title = format!("failover timeline ({}): calls per second, faults marked", self.target);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..end_s, 0f64..top)
            .map_err(|e| plot_error(path, e))?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("per second")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(|e| plot_error(path, e))?;
        for (i, kind) in FaultKind::ALL.into_iter().enumerate() {
            let color = COLORS[3 + i % 3];
            let spans: Vec<(f64, f64)> = self
                .events
                .iter()
                .filter(|r| r.event.kind == kind)
                .map(|r| {
                    let from = r.event.at_us as f64 / 1e6;
                    (from, r.event.healed_us.map_or(from + end_s / 400.0, |h| h as f64 / 1e6))
                })
                .collect();
            if spans.is_empty() {
                continue;
            }
            chart
                .draw_series(
                    spans.into_iter().map(|(a, b)| Rectangle::new([(a, 0.0), (b, top)], color.mix(0.3).filled())),
                )
                .map_err(|e| plot_error(path, e))?
                .label(kind.name())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], color.mix(0.5).filled()));
        }
        let lines: [(&str, Rate, RGBColor); 3] = [
            ("acknowledged writes/s", |b| b.writes_per_s, COLORS[0]),
            ("successful reads/s", |b| b.reads_per_s, COLORS[2]),
            ("errors/s", |b| b.errors_per_s, COLORS[1]),
        ];
        for (name, value, color) in lines {
            let points = self.timeline.iter().map(|b| (b.start_s, value(b)));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| plot_error(path, e))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        crate::plots::finish(&mut chart, &root, SeriesLabelPosition::UpperRight, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::window::OpKind;

    #[test]
    fn the_report_has_a_table_json_and_a_timeline() {
        let records: Vec<OpRecord> = (0..400u64)
            .map(|i| OpRecord {
                sent_us: i * 10_000,
                done_us: i * 10_000 + 2_000,
                shard: 1,
                op: if i % 2 == 0 { OpKind::Write } else { OpKind::Read },
                ok: !(100..150).contains(&i),
            })
            .collect();
        let event = FaultEvent {
            kind: FaultKind::Pause,
            shard: 1,
            victim: "Server0".into(),
            term_before: 1,
            at_us: 1_000_000,
            inject_ms: 0.0,
            healed_us: Some(1_400_000),
            recovered_us: 1_600_000,
            primary_after: Some("Server2".into()),
            term_after: 2,
        };
        let spec = FailoverSpec::default();
        let verdict = Verdict { writes: 200, acknowledged: 175, ..Verdict::default() };
        let mut report = FailoverReport::new(
            &spec,
            "127.0.0.1:7000",
            Duration::from_secs(4),
            &records,
            vec![event],
            verdict,
            vec![],
        );
        assert_eq!(report.events[0].windows.write_ms, Some(502.0));
        let dir = tempfile::tempdir().unwrap();
        report.write_files(dir.path()).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("timeline.svg")).unwrap();
        assert!(svg.contains("pause") && svg.contains("errors/s"));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap()).unwrap();
        assert_eq!(json["summary"][0]["kind"], "pause");
        assert_eq!(json["events"][0]["write_ms"], 502.0);
        let table = report.table();
        assert!(table.contains("pause") && table.contains("0 acknowledged writes lost"), "{table}");
    }
}
