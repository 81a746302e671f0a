//! Runs a workload against a balancer: `connections` clients, `pipeline` workers on each
//! (they share the client's pipelined connection), paced by the [`Schedule`]; each worker
//! buffers a batch of latencies and adds it to one set of HdrHistograms. Reads the cluster's counters and the
//! processes' memory around the run.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use shardline::{Client, ClientConfig, ClientError};

use crate::error::BenchError;
use crate::keys::{KeySpace, Rng};
use crate::prepare::{self, RowMaker};
use crate::rss::{self, ProcMem, Sampler};
use crate::schedule::{LoadModel, Schedule, Ticket};
use crate::spec::{BenchSpec, Op, Stop};
use crate::spread::{self, Probe, Spread};

/// Highest latency a histogram holds: one hour, in microseconds.
const MAX_US: u64 = 3_600_000_000;

/// A fresh latency histogram: microseconds, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

/// What one operation kind did during the measured part of a run.
#[derive(Debug, Clone)]
pub struct OpStats {
    /// The operation.
    pub op: Op,
    /// Latencies of the successful ones, in microseconds.
    pub latency: Histogram<u64>,
    /// How many failed.
    pub errors: u64,
    /// The first failure's message.
    pub first_error: Option<String>,
}

impl OpStats {
    fn new(op: Op) -> OpStats {
        OpStats { op, latency: histogram(), errors: 0, first_error: None }
    }
}

/// Everything a run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Per operation in the mix.
    pub ops: Vec<OpStats>,
    /// The measured span: from the warm-up's end to the last measured answer.
    pub elapsed: Duration,
    /// Reads per server and per shard replica.
    pub spread: Spread,
    /// Memory of the balancer and the nodes.
    pub memory: Vec<ProcMem>,
    /// Keys in the bench's key set, and rows present at the start.
    pub key_set: (u64, u64),
    /// Rows inserted before the run.
    pub preloaded: u64,
    /// The bench's own CPU time (all its threads) over the measured span, where `/proc`
    /// shows it.
    pub bench_cpu: Option<Duration>,
    /// Things a reader should know (the key set ran out, counters missing...).
    pub notes: Vec<String>,
}

impl Outcome {
    /// Successful measured operations per second, all kinds together.
    pub fn throughput(&self) -> f64 {
        let ok: u64 = self.ops.iter().map(|o| o.latency.len()).sum();
        ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// State every worker shares.
struct Shared {
    schedule: Schedule,
    keys: KeySpace,
    rows: RowMaker,
    spec: BenchSpec,
    done: AtomicU64,
    failed: AtomicU64,
    /// Nanoseconds after the warm-up's end of the last measured answer.
    last_ns: AtomicU64,
    exhausted: AtomicBool,
    /// Every worker's measurements, in [`Op::ALL`] order, merged batch by batch.
    stats: Mutex<Vec<OpStats>>,
}

/// How many measured answers a worker keeps before it adds them to [`Shared::stats`].
const BATCH: usize = 256;

/// A worker's measurements not yet added to the shared histograms.
///
/// Hundreds of workers each with its own histograms (about 190 KiB each) made the bench
/// spend a third of its time faulting in fresh pages; a short buffer of latencies, added
/// under one lock every [`BATCH`] answers, keeps the hot path to a push.
struct Batch {
    /// (op index, microseconds) of successful answers.
    latencies: Vec<(u8, u64)>,
    /// Measured answers, failures included.
    done: u64,
    last_ns: u64,
}

impl Batch {
    fn new() -> Batch {
        Batch { latencies: Vec::with_capacity(BATCH), done: 0, last_ns: 0 }
    }

    /// Adds the batch to the shared figures and empties it.
    fn flush(&mut self, shared: &Shared) {
        if self.done == 0 {
            return;
        }
        shared.done.fetch_add(self.done, Ordering::Relaxed);
        shared.last_ns.fetch_max(self.last_ns, Ordering::Relaxed);
        let mut stats = shared.stats.lock().expect("stats lock");
        for &(op, us) in &self.latencies {
            stats[op as usize].latency.saturating_record(us);
        }
        drop(stats);
        self.latencies.clear();
        self.done = 0;
    }
}

/// Runs `spec` against its balancer and returns what it measured.
pub async fn run(spec: &BenchSpec) -> Result<Outcome, BenchError> {
    spec.validate()?;
    let config = prepare::client_config(spec);
    let first = prepare::connect(&spec.addr, config.clone()).await?;
    let (topology, schema) = prepare::topology(&first).await?;
    let prep = if spec.progress { ProgressBar::new_spinner() } else { ProgressBar::hidden() };
    prep.enable_steady_tick(Duration::from_millis(100));
    prep.set_message("reading which keys of the cluster hold rows...");
    let keys = prepare::key_space(&first, &topology, spec).await?;
    let rows = RowMaker::new(&schema, spec.row_size);
    let present_at_start = keys.present();
    let target = prepare::preload_target(spec, &keys);
    prep.set_message(format!("preloading rows up to {target}..."));
    let preloaded = prepare::preload(&first, &keys, &rows, target).await?;
    prep.finish_and_clear();
    let clients = connections(spec, &first, &config).await?;
    let balancer = balancer_pid(&first, &spec.addr).await;
    let probe = Probe::connect(first, &topology).await;
    let before = probe.read().await;
    let mut procs: Vec<(String, u32)> = before.pids.iter().map(|(n, p)| (n.clone(), *p)).collect();
    if let Some(pid) = balancer {
        procs.push(("balancer".into(), pid));
    }
    let sampler = Sampler::start(procs, Duration::from_millis(200));

    let model = spec.rate.map_or(LoadModel::Closed, |rate| LoadModel::Open { rate });
    let start = Instant::now() + Duration::from_millis(20);
    let shared = Arc::new(Shared {
        schedule: Schedule::new(model, start, spec.warmup, spec.stop),
        keys,
        rows,
        spec: spec.clone(),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        last_ns: AtomicU64::new(0),
        exhausted: AtomicBool::new(false),
        stats: Mutex::new(Op::ALL.into_iter().map(OpStats::new).collect()),
    });
    let bar = progress(spec, shared.clone());
    let warmup_end = shared.schedule.warmup_end();
    let cpu_at_warmup_end = tokio::spawn(async move {
        tokio::time::sleep_until(warmup_end.into()).await;
        crate::cpu::own()
    });
    let mut tasks = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        for p in 0..spec.pipeline {
            let seed = spec.seed ^ ((c * spec.pipeline + p) as u64 + 1).wrapping_mul(0x9E37_79B9);
            tasks.push(tokio::spawn(worker(shared.clone(), client.clone(), seed)));
        }
    }
    for t in tasks {
        t.await.map_err(|e| BenchError::Process(format!("a worker failed: {e}")))?;
    }
    let cpu_at_end = crate::cpu::own();
    let bench_cpu = match (cpu_at_warmup_end.await.ok().flatten(), cpu_at_end) {
        (Some(start), Some(end)) => Some(end.saturating_sub(start)),
        _ => None,
    };
    bar.finish();
    let all = std::mem::take(&mut *shared.stats.lock().expect("stats lock"));
    let ops: Vec<OpStats> = all.into_iter().filter(|o| spec.mix.weight(o.op) > 0).collect();
    let elapsed = Duration::from_nanos(shared.last_ns.load(Ordering::Relaxed));
    let elapsed = match spec.stop {
        Stop::Duration(d) if !shared.exhausted.load(Ordering::Relaxed) => elapsed.max(d),
        _ => elapsed,
    };
    let after = probe.read().await;
    let memory = sampler.finish();
    let notes = notes(&shared, &after, &memory);
    Ok(Outcome {
        ops,
        elapsed,
        spread: spread::spread(&before, &after, &topology),
        memory,
        key_set: (shared.keys.len(), present_at_start),
        preloaded,
        bench_cpu,
        notes,
    })
}

/// The bench's clients: `spec.connections` balancer connections (the first is `first`),
/// or with `--direct` clones of one routing client.
async fn connections(spec: &BenchSpec, first: &Client, config: &ClientConfig) -> Result<Vec<Client>, BenchError> {
    if let Some(coordinator) = &spec.direct {
        return Ok(vec![prepare::connect_direct(coordinator, config.clone()).await?; spec.connections]);
    }
    let mut clients = vec![first.clone()];
    for _ in 1..spec.connections {
        clients.push(prepare::connect(&spec.addr, config.clone()).await?);
    }
    Ok(clients)
}

/// What the report should say about how far its figures can be trusted.
fn notes(shared: &Shared, after: &spread::Counters, memory: &[ProcMem]) -> Vec<String> {
    let mut notes = Vec::new();
    if shared.exhausted.load(Ordering::Relaxed) {
        notes.push(format!(
            "every key of the bench's key set ({} keys) held a row: the run stopped early (raise --key-space, \
             add delete to the mix, or use a cluster with larger shards)",
            shared.keys.len()
        ));
    }
    if after.by_replica.is_empty() && after.by_server.is_empty() {
        notes.push("no read counters: neither the balancer nor the nodes answered STATS".into());
    }
    if memory.is_empty() {
        notes.push("no memory figures: the cluster's processes are not visible in this machine's /proc".into());
    }
    notes
}

/// The balancer's pid, when its address is on this machine: from its STATS, or else from
/// the process listening on its port.
async fn balancer_pid(client: &Client, addr: &str) -> Option<u32> {
    let sock: SocketAddr = addr.parse().ok()?;
    if !sock.ip().is_loopback() {
        return None;
    }
    let reported = client.stats().await.ok().and_then(|s| s.into_iter().find(|(k, _)| k == "pid"));
    reported.and_then(|(_, v)| v.parse().ok()).or_else(|| rss::listening_pid(sock.port()))
}

/// One worker: takes tickets until the run is over, adding what it measures to
/// [`Shared::stats`].
async fn worker(shared: Arc<Shared>, client: Client, seed: u64) {
    let mut batch = Batch::new();
    let mut rng = Rng::new(seed);
    let warmup_end = shared.schedule.warmup_end();
    while !shared.exhausted.load(Ordering::Relaxed) {
        let Some(ticket) = shared.schedule.next_at(Instant::now()) else { break };
        if let Some(due) = ticket.due {
            tokio::time::sleep_until(due.into()).await;
        }
        let op = shared.spec.mix.pick(rng.next_u64());
        let sent = Instant::now();
        let result = execute(&shared, &client, op, &mut rng).await;
        let done = Instant::now();
        if matches!(result, Err(Failure::Exhausted)) {
            shared.exhausted.store(true, Ordering::Relaxed);
            break;
        }
        record(&shared, &mut batch, op, &ticket, result, sent, done, warmup_end);
        if batch.latencies.len() >= BATCH {
            batch.flush(&shared);
        }
    }
    batch.flush(&shared);
}

#[allow(clippy::too_many_arguments)] // one answer's facts, recorded on the hot path
fn record(
    shared: &Shared,
    batch: &mut Batch,
    op: Op,
    ticket: &Ticket,
    result: Result<(), Failure>,
    sent: Instant,
    done: Instant,
    warmup_end: Instant,
) {
    if !ticket.measured {
        return;
    }
    batch.done += 1;
    batch.last_ns = batch.last_ns.max(done.saturating_duration_since(warmup_end).as_nanos() as u64);
    match result {
        Ok(()) => {
            let us = shared.schedule.latency(ticket, sent, done).as_micros() as u64;
            batch.latencies.push((op.index() as u8, us.clamp(1, MAX_US)));
        }
        Err(e) => {
            // Failures are rare: counted at once, so progress shows them as they happen.
            shared.failed.fetch_add(1, Ordering::Relaxed);
            let mut stats = shared.stats.lock().expect("stats lock");
            let stats = &mut stats[op.index()];
            stats.errors += 1;
            if stats.first_error.is_none() {
                stats.first_error = Some(e.to_string());
            }
        }
    }
}

/// Why one operation did not succeed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The server or the connection failed it.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// No row to update or delete.
    #[error("no row to {0}: the key set holds none clear of in-flight operations")]
    NoRow(Op),
    /// No fresh key to insert.
    #[error("every key of the key set holds a row")]
    Exhausted,
}

async fn execute(shared: &Shared, client: &Client, op: Op, rng: &mut Rng) -> Result<(), Failure> {
    let keys = &shared.keys;
    match op {
        Op::Read => {
            let k = keys.pick_for_read(rng);
            client.read(k..=k).await.map(drop)?;
        }
        Op::Range => {
            let k = keys.pick_for_read(rng);
            let high = k.saturating_add(shared.spec.range_len as i64 - 1);
            client.read(k..=high).await.map(drop)?;
        }
        Op::Write => {
            let k = keys.claim_insert().ok_or(Failure::Exhausted)?;
            client.write(&[shared.rows.row(k)]).await.map(drop)?;
        }
        Op::Update => {
            let k = keys.pick_existing(rng).ok_or(Failure::NoRow(op))?;
            client.update(shared.rows.row(k)).await.map(drop)?;
        }
        Op::Delete => {
            let k = keys.claim_delete().ok_or(Failure::NoRow(op))?;
            client.delete(k).await.map(drop)?;
        }
    }
    Ok(())
}

/// The progress bar and the task that updates it.
struct Progress {
    bar: ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}

/// Draws the progress bar (hidden when stderr is not a terminal) until finished.
fn progress(spec: &BenchSpec, shared: Arc<Shared>) -> Progress {
    let (len, by_time) = match spec.stop {
        Stop::Duration(d) => ((spec.warmup + d).as_millis() as u64, true),
        Stop::Requests(n) => (n, false),
    };
    let bar = if spec.progress { ProgressBar::new(len) } else { ProgressBar::hidden() };
    let template = if by_time {
        "{spinner} [{elapsed_precise}] {bar:40} {percent:>3}% {msg}"
    } else {
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}"
    };
    bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    let drawn = bar.clone();
    let task = tokio::spawn(async move {
        let begun = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let done = shared.done.load(Ordering::Relaxed);
            let failed = shared.failed.load(Ordering::Relaxed);
            let measuring = Instant::now().saturating_duration_since(shared.schedule.warmup_end());
            let phase = if measuring.is_zero() { "warming up" } else { "measuring" };
            let rate = done as f64 / measuring.as_secs_f64().max(0.001);
            drawn.set_position(if by_time { begun.elapsed().as_millis() as u64 } else { done });
            drawn.set_message(format!("{phase}: {done} ops, {failed} errors, {rate:.0} ops/s"));
        }
    });
    Progress { bar, task }
}
