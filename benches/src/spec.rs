//! What a run does, as a validated value: the operation mix, the key distribution, the load
//! model and its limits. Flags are parsed into a [`BenchSpec`] in the binary only.
//!
//! ```
//! use shardline_benches::spec::{Mix, Op};
//!
//! let mix: Mix = "read=80,write=20".parse().unwrap();
//! assert_eq!(mix.weight(Op::Read), 80);
//! assert!("read=0".parse::<Mix>().is_err());
//! ```

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::error::BenchError;

/// One kind of operation a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// A read of one key (`Read { low: k, high: k }`).
    Read,
    /// A read of `range_len` consecutive keys.
    Range,
    /// An insert of a fresh key.
    Write,
    /// A replacement of an existing row.
    Update,
    /// A delete of an existing row.
    Delete,
}

impl Op {
    /// Every operation, in report order.
    pub const ALL: [Op; 5] = [Op::Read, Op::Range, Op::Write, Op::Update, Op::Delete];

    /// The name used in flags, tables and file names.
    pub fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Range => "range",
            Op::Write => "write",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }

    /// Position in [`Op::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the operation needs a row that exists.
    pub fn needs_existing(self) -> bool {
        matches!(self, Op::Update | Op::Delete)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Op {
    type Err = BenchError;

    fn from_str(s: &str) -> Result<Op, BenchError> {
        Op::ALL.into_iter().find(|op| op.name() == s.trim().to_ascii_lowercase()).ok_or_else(|| {
            BenchError::InvalidSpec(format!(
                "unknown operation `{}` in --mix (use read, range, write, update, delete)",
                s.trim()
            ))
        })
    }
}

/// Relative weights of the operations, e.g. `read=80,write=20`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 5],
    total: u32,
}

impl Mix {
    /// A mix of one operation only.
    pub fn only(op: Op) -> Mix {
        let mut weights = [0; 5];
        weights[op.index()] = 1;
        Mix { weights, total: 1 }
    }

    /// The weight of `op`.
    pub fn weight(&self, op: Op) -> u32 {
        self.weights[op.index()]
    }

    /// The operations with a weight above zero.
    pub fn ops(&self) -> impl Iterator<Item = Op> + '_ {
        Op::ALL.into_iter().filter(|op| self.weight(*op) > 0)
    }

    /// The operation for a uniformly random `r` (any u64): each op with probability
    /// weight / total.
    pub fn pick(&self, r: u64) -> Op {
        let mut x = (r % u64::from(self.total)) as u32;
        for op in Op::ALL {
            let w = self.weights[op.index()];
            if x < w {
                return op;
            }
            x -= w;
        }
        Op::Read
    }
}

impl FromStr for Mix {
    type Err = BenchError;

    fn from_str(s: &str) -> Result<Mix, BenchError> {
        let bad = |m: String| Err(BenchError::InvalidSpec(m));
        let mut weights = [0u32; 5];
        let mut seen = [false; 5];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, weight)) = part.split_once('=') else {
                return bad(format!("--mix wants OP=WEIGHT pairs like read=80,write=20, got `{part}`"));
            };
            let op: Op = name.parse()?;
            let Ok(w) = weight.trim().parse::<u32>() else {
                return bad(format!("--mix: the weight of {op} must be a whole number, got `{}`", weight.trim()));
            };
            if std::mem::replace(&mut seen[op.index()], true) {
                return bad(format!("--mix names {op} twice"));
            }
            weights[op.index()] = w;
        }
        let total = weights.iter().try_fold(0u32, |a, w| a.checked_add(*w));
        match total {
            Some(0) => bad(format!("--mix `{s}` sums to 0: give at least one operation a weight above 0")),
            Some(total) => Ok(Mix { weights, total }),
            None => bad("--mix weights are too large".into()),
        }
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.ops().map(|op| format!("{op}={}", self.weight(op))).collect();
        f.write_str(&parts.join(","))
    }
}

/// How keys are chosen over the key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KeyDist {
    /// Every existing key equally likely.
    Uniform,
    /// A few keys hot (YCSB's zipfian, constant 0.99), the hot ones scattered over shards.
    Zipfian,
    /// Keys in ascending order, wrapping around.
    Sequential,
}

impl KeyDist {
    /// The name used in flags and tables.
    pub fn name(self) -> &'static str {
        match self {
            KeyDist::Uniform => "uniform",
            KeyDist::Zipfian => "zipfian",
            KeyDist::Sequential => "sequential",
        }
    }
}

/// Parses `10s`, `500ms`, `2m`, `1.5s`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, BenchError> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 0.001,
        "us" | "µs" => 0.000_001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => f64::NAN,
    };
    match num.parse::<f64>() {
        Ok(n) if scale.is_finite() && n.is_finite() && n * scale < 1e9 => Ok(Duration::from_secs_f64(n * scale)),
        _ => Err(BenchError::InvalidSpec(format!("`{text}` is not a duration (try 10s, 500ms, 2m)"))),
    }
}

/// When a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stop {
    /// After this long (after the warm-up).
    Duration(Duration),
    /// After this many measured operations (after the warm-up).
    Requests(u64),
}

/// A validated description of one run. [`BenchSpec::default`] documents the defaults.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    /// The balancer's address (default `127.0.0.1:7000`).
    pub addr: String,
    /// Operation weights (default `read=80,write=20`).
    pub mix: Mix,
    /// Key distribution (default uniform).
    pub keys: KeyDist,
    /// Length of each string column in written rows (default 64).
    pub row_size: usize,
    /// Keys per range read (default 100).
    pub range_len: u64,
    /// Client connections (default 16).
    pub connections: usize,
    /// Requests in flight per connection (default 1).
    pub pipeline: usize,
    /// When the run ends (default after 10 s).
    pub stop: Stop,
    /// Operations before this are sent but not measured (default 2 s).
    pub warmup: Duration,
    /// Open loop at this many operations per second; `None`: closed loop (default).
    pub rate: Option<f64>,
    /// Where .hgrm, SVG and JSON files go (default `./bench-out`).
    pub out: PathBuf,
    /// Per-call timeout (default 10 s); connecting gets at most 5 s.
    pub timeout: Duration,
    /// At most this many keys of the cluster's key space are used, spread over the shards
    /// (default 1,000,000).
    pub key_space: u64,
    /// Rows present before the run starts, inserted if missing (default: enough for
    /// reads, updates and deletes to find rows: min(10,000, key space / 2)); 0 to skip.
    pub preload: Option<u64>,
    /// Seed of the key shuffles and operation choices (default 42), for repeatable runs.
    pub seed: u64,
    /// Whether to draw the progress bar (default true).
    pub progress: bool,
    /// Route in the client instead of through the balancer: the coordinator's address
    /// (default none). The workers then share one client that follows this coordinator's
    /// topology and sends each request straight to its node; `addr` is still used to
    /// prepare the run and read the counters.
    pub direct: Option<String>,
}

impl Default for BenchSpec {
    fn default() -> BenchSpec {
        BenchSpec {
            addr: "127.0.0.1:7000".into(),
            mix: "read=80,write=20".parse().expect("a valid default mix"),
            keys: KeyDist::Uniform,
            row_size: 64,
            range_len: 100,
            connections: 16,
            pipeline: 1,
            stop: Stop::Duration(Duration::from_secs(10)),
            warmup: Duration::from_secs(2),
            rate: None,
            out: PathBuf::from("bench-out"),
            timeout: Duration::from_secs(10),
            key_space: 1_000_000,
            preload: None,
            seed: 42,
            progress: true,
            direct: None,
        }
    }
}

impl BenchSpec {
    /// Workers: connections × pipeline.
    pub fn workers(&self) -> usize {
        self.connections * self.pipeline
    }

    /// Checks every value; the error names the flag.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: &str| Err(BenchError::InvalidSpec(m.to_owned()));
        if self.addr.trim().is_empty() || !self.addr.contains(':') {
            return bad("--addr wants HOST:PORT, e.g. 127.0.0.1:7000");
        }
        if !(1..=10_000).contains(&self.connections) {
            return bad("--connections must be between 1 and 10000");
        }
        if !(1..=1024).contains(&self.pipeline) {
            return bad("--pipeline must be between 1 and 1024 (the servers' in-flight limit per connection)");
        }
        if self.workers() > 100_000 {
            return bad("--connections x --pipeline must be at most 100000");
        }
        match self.stop {
            Stop::Duration(d) if d.is_zero() => return bad("--duration must be above zero"),
            Stop::Requests(0) => return bad("--requests must be above zero"),
            _ => {}
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0 && rate <= 10_000_000.0) {
                return bad("--rate must be above 0 and at most 10000000 operations per second");
            }
        }
        if self.row_size > 1 << 20 {
            return bad("--row-size must be at most 1048576 bytes");
        }
        if !(1..=100_000).contains(&self.range_len) {
            return bad("--range-len must be between 1 and 100000");
        }
        if self.key_space == 0 {
            return bad("--key-space must be above zero");
        }
        if self.timeout.is_zero() {
            return bad("--timeout must be above zero");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_pick_by_weight() {
        let mix: Mix = "read=80, write=20".parse().unwrap();
        assert_eq!(mix.ops().collect::<Vec<_>>(), vec![Op::Read, Op::Write]);
        let picks: Vec<Op> = (0..100).map(|r| mix.pick(r)).collect();
        assert_eq!(picks.iter().filter(|o| **o == Op::Read).count(), 80);
        assert_eq!(picks.iter().filter(|o| **o == Op::Write).count(), 20);
        assert_eq!(mix.to_string(), "read=80,write=20");
        assert_eq!("DELETE=1".parse::<Mix>().unwrap(), Mix::only(Op::Delete));
    }

    #[test]
    fn bad_mixes_say_why() {
        for (text, needle) in [
            ("read=0,write=0", "sums to 0"),
            ("", "sums to 0"),
            ("scan=5", "unknown operation `scan`"),
            ("read", "OP=WEIGHT"),
            ("read=x", "whole number"),
            ("read=-1", "whole number"),
            ("read=1,read=2", "twice"),
            ("read=4294967295,write=1", "too large"),
        ] {
            let e = text.parse::<Mix>().unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        for bad in ["", "s", "10x", "-1s", "1e400s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn specs_are_validated() {
        assert!(BenchSpec::default().validate().is_ok());
        let cases: Vec<(BenchSpec, &str)> = vec![
            (BenchSpec { connections: 0, ..Default::default() }, "--connections"),
            (BenchSpec { pipeline: 0, ..Default::default() }, "--pipeline"),
            (BenchSpec { stop: Stop::Requests(0), ..Default::default() }, "--requests"),
            (BenchSpec { stop: Stop::Duration(Duration::ZERO), ..Default::default() }, "--duration"),
            (BenchSpec { rate: Some(0.0), ..Default::default() }, "--rate"),
            (BenchSpec { rate: Some(f64::NAN), ..Default::default() }, "--rate"),
            (BenchSpec { range_len: 0, ..Default::default() }, "--range-len"),
            (BenchSpec { addr: "nowhere".into(), ..Default::default() }, "--addr"),
        ];
        for (spec, flag) in cases {
            let e = spec.validate().unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
    }
}
