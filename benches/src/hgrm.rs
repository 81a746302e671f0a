//! `.hgrm` files: a histogram's percentile distribution in the text format HdrHistogram's
//! `outputPercentileDistribution` prints (and its plotter reads), values in milliseconds.
//!
//! ```text
//!        Value     Percentile TotalCount 1/(1-Percentile)
//!
//!        0.051 0.000000000000          1           1.00
//!        ...
//!        1.999 1.000000000000      10000
//! #[Mean    =        0.071, StdDeviation   =        0.044]
//! #[Max     =        1.999, Total count    =        10000]
//! #[Buckets =           20, SubBuckets     =         2048]
//! ```

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Percentile steps per halving of the distance to 100%, as HdrHistogram's default.
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// The sub-bucket count HdrHistogram reports for `sigfig` significant digits.
fn sub_buckets(sigfig: u8) -> u64 {
    let largest = 2 * 10u64.pow(u32::from(sigfig));
    largest.next_power_of_two()
}

/// The percentile distribution of `h` (values recorded in units `scale` times smaller than
/// the printed ones: 1000 for microseconds printed as milliseconds).
pub fn format(h: &Histogram<u64>, scale: f64) -> String {
    let digits = usize::from(h.sigfig());
    let mut out = format!("{:>12} {:>14} {:>10} {:>14}\n\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / scale;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(out, "{value:>12.digits$} {q:>2.12} {total:>10} {:>14.2}", 1.0 / (1.0 - q));
            } else {
                let _ = writeln!(out, "{value:>12.digits$} {q:>2.12} {total:>10}");
            }
        }
    }
    let (mean, stdev) = if h.is_empty() { (0.0, 0.0) } else { (h.mean() / scale, h.stdev() / scale) };
    let _ = writeln!(out, "#[Mean    = {mean:>12.digits$}, StdDeviation   = {stdev:>12.digits$}]");
    let _ = writeln!(out, "#[Max     = {:>12.digits$}, Total count    = {:>12}]", h.max() as f64 / scale, h.len());
    let _ = writeln!(out, "#[Buckets = {:>12}, SubBuckets     = {:>12}]", h.buckets(), sub_buckets(h.sigfig()));
    out
}

/// One line of a percentile distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// The value (milliseconds).
    pub value: f64,
    /// The fraction of values at or below it, in [0, 1].
    pub quantile: f64,
    /// How many values are at or below it.
    pub total_count: u64,
}

/// Reads back a percentile distribution: its points and the total count from the footer.
pub fn parse(text: &str) -> Result<(Vec<Point>, u64), String> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    if header != ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"] {
        return Err(format!("not an .hgrm header: {header:?}"));
    }
    let mut points = Vec::new();
    let mut count = None;
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("#[Max") {
            let total = rest.rsplit('=').next().unwrap_or("").trim().trim_end_matches(']').trim();
            count = Some(total.parse::<u64>().map_err(|e| format!("line {}: total count: {e}", n + 2))?);
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let bad = |what: &str| format!("line {}: bad {what} in `{line}`", n + 2);
        if f.len() != 3 && f.len() != 4 {
            return Err(bad("field count"));
        }
        let point = Point {
            value: f[0].parse().map_err(|_| bad("value"))?,
            quantile: f[1].parse().map_err(|_| bad("percentile"))?,
            total_count: f[2].parse().map_err(|_| bad("total count"))?,
        };
        if points.last().is_some_and(|p: &Point| p.quantile > point.quantile || p.value > point.value) {
            return Err(bad("order (values and percentiles must not decrease)"));
        }
        points.push(point);
    }
    Ok((points, count.ok_or("no `#[Max ... Total count` footer")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Histogram<u64> {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for us in 1..=10_000u64 {
            h.record(us * 10).unwrap(); // 10 µs .. 100 ms, flat
        }
        h
    }

    #[test]
    fn the_text_matches_hdrhistograms_layout() {
        let text = format(&sample(), 1000.0);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "       Value     Percentile TotalCount 1/(1-Percentile)");
        assert_eq!(lines[1], "");
        assert_eq!(lines[2], "       0.010 0.000000000000          1           1.00");
        let last_point = lines[lines.len() - 4];
        assert!(last_point.ends_with(" 1.000000000000      10000"), "{last_point}");
        assert_eq!(lines[lines.len() - 2], "#[Max     =      100.031, Total count    =        10000]");
        assert!(lines[lines.len() - 3].starts_with("#[Mean    =       50.0"), "{}", lines[lines.len() - 3]);
        assert!(lines[lines.len() - 1].ends_with("SubBuckets     =         2048]"));
        let p50 = lines.iter().find(|l| l.contains(" 0.500000000000 ")).unwrap();
        assert!(p50.trim_start().starts_with("50.0"), "{p50}");
    }

    #[test]
    fn it_parses_back() {
        let (points, count) = parse(&format(&sample(), 1000.0)).unwrap();
        assert_eq!(count, 10_000);
        assert_eq!(points.last().unwrap().quantile, 1.0);
        assert_eq!(points.last().unwrap().total_count, 10_000);
        assert!(points.len() > 50);
        assert!(parse("Value Percentile\n").is_err());
        let (none, zero) = parse(&format(&Histogram::<u64>::new(3).unwrap(), 1000.0)).unwrap();
        assert!(none.is_empty() && zero == 0);
    }
}
