//! The steady load of the failover benchmark: `connections` workers, each on its own
//! client connection to the balancer, paced to a total rate (an open loop: a stalled call
//! does not hold back the next), each call a write of a fresh key or a read of a few keys
//! of a shard picked at random. Every call is recorded
//! ([`OpRecord`]), every write with its outcome ([`Written`]); per shard the newest call
//! that succeeded is kept live, so the driver knows when a window has closed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardline::{Client, ClientConfig, Row, Topology};
use tokio::task::{JoinHandle, JoinSet};

use crate::error::BenchError;
use crate::failover::ledger::{self, WriteOutcome, Written};
use crate::failover::window::{OpKind, OpRecord};
use crate::keys::Rng;
use crate::prepare::{self, RowMaker};

/// Keys looked at per read of the load.
const READ_SPAN: i64 = 8;

/// Keys per read when looking for free keys and when reading everything back.
const CHUNK: u64 = 20_000;

/// Longest run of free keys a shard's block takes.
const BLOCK_MAX: u64 = 1_000_000;

/// One shard's block of keys that held no rows at the start, handed out in order.
#[derive(Debug)]
pub struct KeyBlock {
    /// The shard's number.
    pub shard: u32,
    /// The block's first key.
    pub start: i64,
    /// Keys in the block.
    pub len: u64,
    next: AtomicU64,
    /// Sent-time (µs) of the newest acknowledged write, plus one (0: none yet).
    write_ok: AtomicU64,
    /// Sent-time (µs) of the newest successful read, plus one (0: none yet).
    read_ok: AtomicU64,
}

impl KeyBlock {
    fn new(shard: u32, start: i64, len: u64) -> KeyBlock {
        KeyBlock { shard, start, len, next: AtomicU64::new(0), write_ok: AtomicU64::new(0), read_ok: AtomicU64::new(0) }
    }

    /// A fresh key, or `None` once the block is used up.
    fn claim(&self) -> Option<i64> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.len).then(|| self.start + i as i64)
    }

    /// Keys handed out so far.
    pub fn used(&self) -> u64 {
        self.next.load(Ordering::Relaxed).min(self.len)
    }

    /// Whether a call of `op` sent at or after `at_us` has succeeded.
    pub fn succeeded_since(&self, op: OpKind, at_us: u64) -> bool {
        let cell = match op {
            OpKind::Write => &self.write_ok,
            OpKind::Read => &self.read_ok,
        };
        cell.load(Ordering::Relaxed) > at_us
    }
}

/// Finds, for every shard, the first run of up to `BLOCK_MAX` keys holding no rows
/// (a fresh cluster's whole range; on a used one, past its rows).
pub async fn key_blocks(client: &Client, topology: &Topology) -> Result<Vec<Arc<KeyBlock>>, BenchError> {
    let mut blocks = Vec::new();
    for shard in &topology.shards {
        let spec = &shard.spec;
        let want = spec.size.min(BLOCK_MAX);
        let mut start = spec.low;
        let mut found = None;
        // Each chunk that holds rows moves the block past its last row.
        for _ in 0..(spec.size / CHUNK + 2) {
            let end = (i128::from(start) + i128::from(want) - 1).min(i128::from(spec.high().unwrap_or(start))) as i64;
            if end < start {
                break;
            }
            let rows = read_chunks(client, start, end).await?;
            match rows.last() {
                None => {
                    found = Some(KeyBlock::new(spec.id.0, start, (end - start + 1) as u64));
                    break;
                }
                Some(last) => start = last.key + 1,
            }
        }
        let block = found.ok_or_else(|| BenchError::Cluster(format!("{} has no free keys to write", spec.id)))?;
        blocks.push(Arc::new(block));
    }
    Ok(blocks)
}

/// Rows with keys in `low..=high`, read in chunks from each shard's primary.
pub async fn read_chunks(client: &Client, low: i64, high: i64) -> Result<Vec<Row>, BenchError> {
    let mut rows = Vec::new();
    let mut at = low;
    while at <= high {
        let end = at.saturating_add(CHUNK as i64 - 1).min(high);
        let mut answer = Err(None);
        // The cluster has just been through faults: give a slow shard a few tries.
        for attempt in 0..5u32 {
            match client.read_primary(at..=end).await {
                Ok(r) => {
                    answer = Ok(r);
                    break;
                }
                Err(e) => answer = Err(Some(e)),
            }
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        match answer {
            Ok(r) => rows.extend(r),
            Err(e) => {
                let e = e.expect("an attempt was made");
                return Err(BenchError::client(format!("reading keys {at}..={end} back"), e));
            }
        }
        if end == high {
            break;
        }
        at = end + 1;
    }
    Ok(rows)
}

/// What a worker saw.
#[derive(Debug, Default)]
pub struct WorkerLog {
    /// Every call.
    pub records: Vec<OpRecord>,
    /// Every write.
    pub written: Vec<Written>,
}

/// The running load; [`Load::stop`] ends it and returns what every worker saw.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<WorkerLog>>,
    /// The blocks the workers write into, one per shard.
    pub blocks: Vec<Arc<KeyBlock>>,
    /// The run's time zero.
    pub start: Instant,
}

/// How the load runs.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// The balancer.
    pub addr: String,
    /// Workers, one connection each.
    pub connections: usize,
    /// Calls per second over all workers.
    pub rate: f64,
    /// Percent of calls that are writes.
    pub write_percent: u32,
    /// Read from primaries.
    pub primary_reads: bool,
    /// Seed for the choices.
    pub seed: u64,
}

/// Client settings of the load: one attempt per call (the balancer retries across a
/// failover, up to its 5 s deadline), and a call timeout above that deadline so the
/// balancer's answer, not ours, decides the outcome.
pub fn client_config() -> ClientConfig {
    ClientConfig {
        timeout: Duration::from_secs(15),
        connect_timeout: prepare::CONNECT_TIMEOUT,
        retries: 0,
        ..ClientConfig::default()
    }
}

impl Load {
    /// Connects the workers and starts them.
    pub async fn start(
        plan: &LoadPlan,
        rows: RowMaker,
        blocks: Vec<Arc<KeyBlock>>,
        start: Instant,
    ) -> Result<Load, BenchError> {
        let stop = Arc::new(AtomicBool::new(false));
        let period = Duration::from_secs_f64(plan.connections as f64 / plan.rate);
        let mut workers = Vec::with_capacity(plan.connections);
        for i in 0..plan.connections {
            let client = prepare::connect(&plan.addr, client_config()).await?;
            let worker = Worker {
                client,
                rows: rows.clone(),
                blocks: blocks.clone(),
                rng: Rng::new(plan.seed.wrapping_add(i as u64)),
                write_percent: u64::from(plan.write_percent),
                primary_reads: plan.primary_reads,
                start,
                log: WorkerLog::default(),
            };
            workers.push(tokio::spawn(worker.run(period, stop.clone())));
        }
        Ok(Load { stop, workers, blocks, start })
    }

    /// Microseconds since the run's start.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Stops the workers (each finishes its call in flight) and merges their logs.
    pub async fn stop(self) -> Result<WorkerLog, BenchError> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = WorkerLog::default();
        for w in self.workers {
            let log = w.await.map_err(|e| BenchError::Process(format!("a load worker failed: {e}")))?;
            all.records.extend(log.records);
            all.written.extend(log.written);
        }
        Ok(all)
    }
}

struct Worker {
    client: Client,
    rows: RowMaker,
    blocks: Vec<Arc<KeyBlock>>,
    rng: Rng,
    write_percent: u64,
    primary_reads: bool,
    start: Instant,
    log: WorkerLog,
}

/// What one call left behind: its record, and the write's outcome if it was one.
type Done = (OpRecord, Option<Written>);

impl Worker {
    /// Sends a call at every tick, each in its own task, so a call held up by a fault holds
    /// up nothing else: the other shards' load goes on (an open loop, up to
    /// [`MAX_IN_FLIGHT`] calls per worker).
    async fn run(mut self, period: Duration, stop: Arc<AtomicBool>) -> WorkerLog {
        // Workers start spread over one period, so the calls are not sent in bursts.
        let offset = period.mul_f64(self.rng.next_f64());
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut calls: JoinSet<Done> = JoinSet::new();
        while !stop.load(Ordering::Relaxed) {
            ticks.tick().await;
            while let Some(done) = calls.try_join_next() {
                self.keep(done);
            }
            if calls.len() >= MAX_IN_FLIGHT {
                if let Some(done) = calls.join_next().await {
                    self.keep(done);
                }
            }
            let block = self.blocks[self.rng.below(self.blocks.len() as u64) as usize].clone();
            let call = Call { client: self.client.clone(), block, start: self.start };
            match (self.rng.below(100) < self.write_percent).then(|| call.block.claim()).flatten() {
                Some(key) => calls.spawn(call.write(self.rows.row(key))),
                None => {
                    let low = call.block.start + self.rng.below(call.block.used().max(1)) as i64;
                    calls.spawn(call.read(low, self.primary_reads))
                }
            };
        }
        while let Some(done) = calls.join_next().await {
            self.keep(done);
        }
        self.log
    }

    fn keep(&mut self, done: Result<Done, tokio::task::JoinError>) {
        if let Ok((record, written)) = done {
            self.log.records.push(record);
            self.log.written.extend(written);
        }
    }
}

/// Calls a worker keeps open at once; past that it waits for one to end.
const MAX_IN_FLIGHT: usize = 256;

/// One call of the load.
struct Call {
    client: Client,
    block: Arc<KeyBlock>,
    start: Instant,
}

impl Call {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    async fn write(self, row: Row) -> Done {
        let key = row.key;
        let sent_us = self.now_us();
        let outcome = ledger::classify(&self.client.write(&[row]).await);
        let record = self.finish(OpKind::Write, sent_us, outcome == WriteOutcome::Acknowledged);
        (record, Some(Written { key, outcome }))
    }

    async fn read(self, low: i64, primary: bool) -> Done {
        // Within the block, so a read asks one shard only.
        let high = low.saturating_add(READ_SPAN - 1).min(self.block.start + self.block.len as i64 - 1);
        let sent_us = self.now_us();
        let result =
            if primary { self.client.read_primary(low..=high).await } else { self.client.read(low..=high).await };
        (self.finish(OpKind::Read, sent_us, result.is_ok()), None)
    }

    fn finish(&self, op: OpKind, sent_us: u64, ok: bool) -> OpRecord {
        let done_us = self.now_us();
        if ok {
            let cell = if op == OpKind::Write { &self.block.write_ok } else { &self.block.read_ok };
            cell.fetch_max(sent_us + 1, Ordering::Relaxed);
        }
        OpRecord { sent_us, done_us, shard: self.block.shard, op, ok }
    }
}
