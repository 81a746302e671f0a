//! A histogram of durations made of atomics only.
//!
//! `prometheus_client`'s own histogram takes a lock on every observation; this one is a
//! row of atomic counters, so the request path never waits on a scrape or on another
//! request. Buckets are fixed when it is made; the sum is kept in microseconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds, in seconds, for request latencies: 100 µs to 10 s, about three per decade.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug)]
struct Inner {
    bounds: &'static [f64],
    /// One counter per bound, then one for +Inf; not cumulative.
    counts: Box<[AtomicU64]>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// A duration histogram; clones share the counts.
#[derive(Debug, Clone)]
pub struct AtomicHistogram(Arc<Inner>);

impl AtomicHistogram {
    /// A histogram with `bounds` (seconds, ascending) and a +Inf bucket.
    pub fn new(bounds: &'static [f64]) -> AtomicHistogram {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        AtomicHistogram(Arc::new(Inner { bounds, counts, sum_micros: AtomicU64::new(0), count: AtomicU64::new(0) }))
    }

    /// A latency histogram ([`LATENCY_BUCKETS`]).
    pub fn latency() -> AtomicHistogram {
        AtomicHistogram::new(LATENCY_BUCKETS)
    }

    /// Counts one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.0.bounds.iter().position(|b| secs <= *b).unwrap_or(self.0.bounds.len());
        self.0.counts[i].fetch_add(1, Ordering::Relaxed);
        self.0.sum_micros.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.0.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // Buckets are read one by one, not as one snapshot: a scrape racing a request may
        // see its bucket and not yet its count, off by the requests of that instant.
        let buckets: Vec<(f64, u64)> = self
            .0
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(self.0.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::{Registry, Unit};

    #[test]
    fn buckets_are_cumulative_in_the_text_format() {
        let h = AtomicHistogram::new(&[0.001, 0.01]);
        let mut registry = Registry::default();
        registry.register_with_unit("shardline_test_duration", "a test", Unit::Seconds, h.clone());
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(1));
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains("shardline_test_duration_seconds_bucket{le=\"0.001\"} 1\n"), "{text}");
        assert!(text.contains("shardline_test_duration_seconds_bucket{le=\"0.01\"} 2\n"), "{text}");
        assert!(text.contains("shardline_test_duration_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("shardline_test_duration_seconds_count 3\n"), "{text}");
        assert!(text.contains("shardline_test_duration_seconds_sum 1.0055\n"), "{text}");
        assert_eq!(h.count(), 3);
    }
}
