//! The pure part of the failover benchmark: what the load recorded (one [`OpRecord`] per
//! call), what the injector did (one [`FaultEvent`] per fault), and what follows from them:
//! each fault's unavailability windows, percentiles per fault kind, and the timeline's
//! buckets. No clock and no I/O here: every time is microseconds since the run's start.

use serde::Serialize;

/// A fault the benchmark injects on a shard's primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// SIGKILL of the node's process (`docker kill` of its container).
    Kill,
    /// SIGSTOP, then SIGCONT after a while (`docker pause` / `unpause`).
    Pause,
    /// Cut off from the network, then reconnected (`docker network disconnect` / `connect`;
    /// as processes, its packets dropped by iptables).
    Partition,
}

impl FaultKind {
    /// Every kind, in table order.
    pub const ALL: [FaultKind; 3] = [FaultKind::Kill, FaultKind::Pause, FaultKind::Partition];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
        }
    }
}

impl std::str::FromStr for FaultKind {
    type Err = String;

    fn from_str(s: &str) -> Result<FaultKind, String> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == s.trim())
            .ok_or_else(|| format!("unknown fault kind `{}` (kill, pause, partition)", s.trim()))
    }
}

/// What one call of the load was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// An insert of a fresh key.
    Write,
    /// A read of a few keys of one shard.
    Read,
}

/// One call of the load: when it was sent and answered, on which shard, and whether it
/// succeeded (a write acknowledged, a read answered with rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpRecord {
    /// Sent, µs since the run's start.
    pub sent_us: u64,
    /// Answered (or failed), µs since the run's start.
    pub done_us: u64,
    /// The shard's number.
    pub shard: u32,
    /// Read or write.
    pub op: OpKind,
    /// Acknowledged (write) or answered (read).
    pub ok: bool,
}

/// One injected fault and what the cluster did about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultEvent {
    /// What was done.
    pub kind: FaultKind,
    /// The shard whose primary it hit.
    pub shard: u32,
    /// The server that was its primary.
    pub victim: String,
    /// The shard's term before the fault.
    pub term_before: u64,
    /// The fault in effect, µs since the run's start.
    pub at_us: u64,
    /// How long carrying the fault out took, ms (a `docker` command; 0 for a signal).
    pub inject_ms: f64,
    /// Paused or cut-off server given back (pause, partition), µs since the start.
    pub healed_us: Option<u64>,
    /// The cluster healthy again (a primary at a newer term, every replica readable, every
    /// server up), µs since the start.
    pub recovered_us: u64,
    /// The shard's primary once healthy again, and its term.
    pub primary_after: Option<String>,
    /// The term once healthy again.
    pub term_after: u64,
}

/// An event's two unavailability windows, in milliseconds: from the fault to the first
/// write on its shard sent after the fault and acknowledged, and the same for reads.
/// `None` when no such call succeeded before the run moved on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Windows {
    /// Fault to the first acknowledged write on the shard, ms.
    pub write_ms: Option<f64>,
    /// Fault to the first successful read of the shard, ms.
    pub read_ms: Option<f64>,
}

/// The window for `op` on `shard` after a fault at `at_us`: only calls sent at or after the
/// fault count, so a write the old primary acknowledged just before it does not close it.
pub fn window(records: &[OpRecord], shard: u32, op: OpKind, at_us: u64) -> Option<f64> {
    records
        .iter()
        .filter(|r| r.ok && r.shard == shard && r.op == op && r.sent_us >= at_us)
        .map(|r| r.done_us)
        .min()
        .map(|done| done.saturating_sub(at_us) as f64 / 1000.0)
}

/// Both windows of `event`.
pub fn windows(records: &[OpRecord], event: &FaultEvent) -> Windows {
    Windows {
        write_ms: window(records, event.shard, OpKind::Write, event.at_us),
        read_ms: window(records, event.shard, OpKind::Read, event.at_us),
    }
}

/// p50, p99 and max of a set of windows, with how many there were.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Windows measured.
    pub count: usize,
    /// Median, ms (nearest rank).
    pub p50_ms: f64,
    /// 99th percentile, ms (nearest rank: with fewer than 100 events it is the maximum).
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

/// Nearest-rank percentiles of `values` (ms); `None` when there are none.
pub fn percentiles(values: &[f64]) -> Option<Percentiles> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Some(Percentiles { count: v.len(), p50_ms: rank(0.50), p99_ms: rank(0.99), max_ms: v[v.len() - 1] })
}

/// One fault kind's line of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindSummary {
    /// The fault kind.
    pub kind: FaultKind,
    /// Events of this kind.
    pub events: usize,
    /// Fault to first acknowledged write.
    pub write: Option<Percentiles>,
    /// Fault to first successful read.
    pub read: Option<Percentiles>,
    /// Events after which no write (or no read) succeeded before the run moved on.
    pub unclosed: usize,
}

/// The summary per kind, in [`FaultKind::ALL`] order, for kinds that occurred.
pub fn summarize(events: &[(FaultEvent, Windows)]) -> Vec<KindSummary> {
    FaultKind::ALL
        .into_iter()
        .filter_map(|kind| {
            let of_kind: Vec<&Windows> = events.iter().filter(|(e, _)| e.kind == kind).map(|(_, w)| w).collect();
            if of_kind.is_empty() {
                return None;
            }
            let writes: Vec<f64> = of_kind.iter().filter_map(|w| w.write_ms).collect();
            let reads: Vec<f64> = of_kind.iter().filter_map(|w| w.read_ms).collect();
            let unclosed = of_kind.iter().filter(|w| w.write_ms.is_none() || w.read_ms.is_none()).count();
            Some(KindSummary {
                kind,
                events: of_kind.len(),
                write: percentiles(&writes),
                read: percentiles(&reads),
                unclosed,
            })
        })
        .collect()
}

/// One bucket of the timeline: successes and failures per second over `width_s` seconds
/// starting at `start_s`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bucket {
    /// Seconds since the run's start.
    pub start_s: f64,
    /// Acknowledged writes per second.
    pub writes_per_s: f64,
    /// Successful reads per second.
    pub reads_per_s: f64,
    /// Failed calls (both kinds) per second.
    pub errors_per_s: f64,
}

/// Rates over time, each call counted in the bucket it was answered in.
pub fn timeline(records: &[OpRecord], width_us: u64) -> Vec<Bucket> {
    let width_us = width_us.max(1);
    let Some(last) = records.iter().map(|r| r.done_us).max() else { return Vec::new() };
    let n = (last / width_us + 1) as usize;
    let mut counts = vec![[0u64; 3]; n];
    for r in records {
        let slot = match (r.ok, r.op) {
            (true, OpKind::Write) => 0,
            (true, OpKind::Read) => 1,
            (false, _) => 2,
        };
        counts[(r.done_us / width_us) as usize][slot] += 1;
    }
    let per_s = 1e6 / width_us as f64;
    counts
        .iter()
        .enumerate()
        .map(|(i, c)| Bucket {
            start_s: (i as u64 * width_us) as f64 / 1e6,
            writes_per_s: c[0] as f64 * per_s,
            reads_per_s: c[1] as f64 * per_s,
            errors_per_s: c[2] as f64 * per_s,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(sent: u64, done: u64, shard: u32, op: OpKind, ok: bool) -> OpRecord {
        OpRecord { sent_us: sent, done_us: done, shard, op, ok }
    }

    fn event(kind: FaultKind, shard: u32, at_us: u64) -> FaultEvent {
        FaultEvent {
            kind,
            shard,
            victim: "Server0".into(),
            term_before: 1,
            at_us,
            inject_ms: 0.0,
            healed_us: None,
            recovered_us: at_us + 1,
            primary_after: None,
            term_after: 2,
        }
    }

    #[test]
    fn a_window_counts_only_calls_sent_after_the_fault_on_its_shard() {
        let records = [
            rec(900, 1_100, 1, OpKind::Write, true),    // sent before the fault
            rec(1_000, 1_400, 2, OpKind::Write, true),  // another shard
            rec(1_050, 1_900, 1, OpKind::Write, false), // failed
            rec(1_200, 1_700, 1, OpKind::Write, true),
            rec(1_300, 1_600, 1, OpKind::Write, true), // answered first
            rec(1_010, 1_020, 1, OpKind::Read, true),
        ];
        let w = windows(&records, &event(FaultKind::Kill, 1, 1_000));
        assert_eq!(w.write_ms, Some(0.6));
        assert_eq!(w.read_ms, Some(0.02));
        assert_eq!(window(&records, 3, OpKind::Write, 0), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        let p = percentiles(&v).unwrap();
        assert_eq!((p.count, p.p50_ms, p.p99_ms, p.max_ms), (20, 10.0, 20.0, 20.0));
        let v: Vec<f64> = (1..=200).rev().map(f64::from).collect();
        let p = percentiles(&v).unwrap();
        assert_eq!((p.p50_ms, p.p99_ms, p.max_ms), (100.0, 198.0, 200.0));
        assert_eq!(percentiles(&[]), None);
        assert_eq!(percentiles(&[7.0]).unwrap().p99_ms, 7.0);
    }

    #[test]
    fn summaries_group_by_kind_and_count_unclosed_windows() {
        let w = |write: Option<f64>, read: Option<f64>| Windows { write_ms: write, read_ms: read };
        let events = vec![
            (event(FaultKind::Pause, 1, 0), w(Some(300.0), Some(1.0))),
            (event(FaultKind::Kill, 1, 0), w(Some(500.0), Some(2.0))),
            (event(FaultKind::Kill, 2, 0), w(None, Some(3.0))),
        ];
        let s = summarize(&events);
        assert_eq!(s.iter().map(|k| k.kind).collect::<Vec<_>>(), vec![FaultKind::Kill, FaultKind::Pause]);
        assert_eq!((s[0].events, s[0].unclosed), (2, 1));
        assert_eq!(s[0].write.unwrap().count, 1);
        assert_eq!(s[0].read.unwrap().max_ms, 3.0);
        assert_eq!(s[1].write.unwrap().p50_ms, 300.0);
    }

    #[test]
    fn the_timeline_counts_each_call_where_it_ended() {
        let records = [
            rec(0, 100_000, 1, OpKind::Write, true),
            rec(0, 200_000, 1, OpKind::Read, true),
            rec(0, 600_000, 1, OpKind::Read, false),
        ];
        let t = timeline(&records, 500_000);
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].writes_per_s, t[0].reads_per_s, t[0].errors_per_s), (2.0, 2.0, 0.0));
        assert_eq!((t[1].start_s, t[1].errors_per_s), (0.5, 2.0));
        assert!(timeline(&[], 1).is_empty());
    }

    #[test]
    fn kinds_parse_by_name() {
        assert_eq!("pause".parse::<FaultKind>(), Ok(FaultKind::Pause));
        assert!("reboot".parse::<FaultKind>().unwrap_err().contains("reboot"));
    }
}
