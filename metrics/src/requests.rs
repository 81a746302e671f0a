//! Requests by operation and outcome, their latency, in-flight requests and connections.
//!
//! Every series a request touches on success is made when the process starts, so the
//! request path only increments atomics: no map lookup under a lock, no allocation. An
//! error's series (op × code) is made on its first occurrence through the family.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::histogram::AtomicHistogram;
use crate::{ops, OK};

/// Labels of `shardline_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpCode {
    /// The operation (see [`ops`]).
    pub op: &'static str,
    /// `ok`, or the error code's name (`NotPrimary`, `Timeout`, ...).
    pub code: &'static str,
}

/// Labels of `shardline_request_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    /// The operation.
    pub op: &'static str,
}

/// The series one op's successes touch.
#[derive(Debug)]
struct PerOp {
    ok: Counter,
    duration: AtomicHistogram,
}

#[derive(Debug)]
struct Inner {
    requests: Family<OpCode, Counter>,
    durations: Family<OpLabel, AtomicHistogram>,
    per_op: HashMap<&'static str, PerOp>,
    in_flight: Gauge,
    connections: Gauge,
}

/// The request metrics of one process; clones share them.
#[derive(Debug, Clone)]
pub struct RequestMetrics(Arc<Inner>);

impl RequestMetrics {
    /// Request metrics for the operations `ops` (one of [`ops::CLIENT`], [`ops::NODE`]; any
    /// other op counts as [`ops::OTHER`]); [`RequestMetrics::register`] exports them.
    pub fn new(ops: &'static [&'static str]) -> RequestMetrics {
        let requests = Family::<OpCode, Counter>::default();
        let durations = Family::<OpLabel, AtomicHistogram>::new_with_constructor(AtomicHistogram::latency as fn() -> _);
        let per_op = ops
            .iter()
            .map(|&op| {
                let ok = requests.get_or_create(&OpCode { op, code: OK }).clone();
                let duration = durations.get_or_create(&OpLabel { op }).clone();
                (op, PerOp { ok, duration })
            })
            .collect();
        let (in_flight, connections) = (Gauge::default(), Gauge::default());
        RequestMetrics(Arc::new(Inner { requests, durations, per_op, in_flight, connections }))
    }

    /// Adds these metrics to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let inner = &self.0;
        registry.register(
            "shardline_requests",
            "Requests answered, by operation and outcome (code: ok or the error's name)",
            inner.requests.clone(),
        );
        registry.register_with_unit(
            "shardline_request_duration",
            "Time from a request's arrival to its answer, by operation",
            Unit::Seconds,
            inner.durations.clone(),
        );
        registry.register(
            "shardline_requests_in_flight",
            "Requests received and not yet answered",
            inner.in_flight.clone(),
        );
        registry.register("shardline_connections_open", "Connections open to this process", inner.connections.clone());
    }

    /// Starts timing a request of `op`; it is in flight until the timer is finished or dropped.
    pub fn begin(&self, op: &'static str) -> RequestTimer {
        self.0.in_flight.inc();
        let op = if self.0.per_op.contains_key(op) { op } else { ops::OTHER };
        RequestTimer { metrics: self.clone(), op, started: Instant::now(), done: false }
    }

    /// Counts a request of `op` answered at once with `code`, taking no time worth a timer.
    pub fn instant(&self, op: &'static str, code: &'static str) {
        self.begin(op).finish(code);
    }

    /// A connection opened.
    pub fn connection_opened(&self) {
        self.0.connections.inc();
    }

    /// A connection closed.
    pub fn connection_closed(&self) {
        self.0.connections.dec();
    }

    /// Requests of `op` answered with `code` so far.
    pub fn count(&self, op: &'static str, code: &'static str) -> u64 {
        self.0.requests.get(&OpCode { op, code }).map_or(0, |c| c.get())
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> i64 {
        self.0.in_flight.get()
    }
}

/// A request being timed; [`RequestTimer::finish`] records it.
#[derive(Debug)]
pub struct RequestTimer {
    metrics: RequestMetrics,
    op: &'static str,
    started: Instant,
    done: bool,
}

impl RequestTimer {
    /// The request was answered with `code` ([`OK`] or an error name).
    pub fn finish(mut self, code: &'static str) {
        self.done = true;
        let inner = &self.metrics.0;
        inner.in_flight.dec();
        let per_op = &inner.per_op[self.op];
        per_op.duration.observe(self.started.elapsed());
        if code == OK {
            per_op.ok.inc();
        } else {
            inner.requests.get_or_create(&OpCode { op: self.op, code }).inc();
        }
    }
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        // A request dropped unanswered (its connection closed) is no longer in flight.
        if !self.done {
            self.metrics.0.in_flight.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn counts_by_op_and_code_and_tracks_in_flight() {
        let mut registry = Registry::default();
        let m = RequestMetrics::new(ops::CLIENT);
        m.register(&mut registry);
        let a = m.begin("write");
        let b = m.begin("write");
        let c = m.begin("no-such-op");
        assert_eq!(m.in_flight(), 3);
        a.finish(OK);
        b.finish("NotPrimary");
        drop(c);
        assert_eq!(m.in_flight(), 0);
        m.instant("ping", OK);
        assert_eq!(m.count("write", OK), 1);
        assert_eq!(m.count("write", "NotPrimary"), 1);
        assert_eq!(m.count("ping", OK), 1);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains("shardline_requests_total{op=\"write\",code=\"NotPrimary\"} 1\n"), "{text}");
        assert!(text.contains("shardline_requests_total{op=\"read\",code=\"ok\"} 0\n"), "{text}");
        assert!(text.contains("shardline_request_duration_seconds_count{op=\"write\"} 2\n"), "{text}");
        assert!(text.contains("shardline_requests_in_flight 0\n"), "{text}");
    }
}
