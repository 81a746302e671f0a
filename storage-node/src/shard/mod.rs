//! One shard replica in the node: the tokio task that drives its [`Replica`] core.
//!
//! - `task`: the shard's task: feeds the core commands, answers and ticks, and carries
//!   out its effects (answer a write, send to a follower); the only code that touches
//!   the replica's log and table for writing.
//! - `link`: one task per follower connection, carrying the core's messages.
//!
//! Reads do not queue behind writes: [`ShardHandle::read`] checks the replica's published
//! state and reads the table directly (redb readers see the last committed transaction).
//!
//! [`Replica`]: crate::replica::Replica

mod link;
mod task;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use shardline_protocol::rows::RowsWriter;
use shardline_protocol::{
    Consistency, ControlResponse, ErrorCode, LogLine, LogPosition, Operation, PeerResponse, Row, ShardCommit,
    ShardPosition, ShardSpec, ShardState,
};
use tokio::sync::{mpsc, oneshot};

pub use task::{open_shard, ShardRunner};

use crate::error::NodeError;
use crate::replica::{fresh, AppendRequest, FollowerLag, SnapshotChunk};
use crate::store::{Table, TableStore};

/// How long a read waits for this replica's own apply of an index it knows committed: that
/// apply is local work that will come, so a busy machine should delay the read, not fail it
/// `Behind` (at a primary, the read's last resort).
pub const APPLY_WAIT: Duration = Duration::from_secs(1);

/// What the shard task is asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    Write {
        op: Operation,
        reply: oneshot::Sender<Result<ShardCommit, ErrorCode>>,
    },
    BecomePrimary {
        term: u64,
        followers: Vec<shardline_protocol::ServerAddr>,
        learners: Vec<shardline_protocol::ServerAddr>,
        lease_ms: u64,
        reply: oneshot::Sender<ControlResponse>,
    },
    BecomeFollower {
        term: u64,
        primary: shardline_protocol::ServerAddr,
        reply: oneshot::Sender<ControlResponse>,
    },
    ElectionQuery {
        term: u64,
        reply: oneshot::Sender<ControlResponse>,
    },
    Handoff {
        term: u64,
        for_ms: u64,
        reply: oneshot::Sender<ControlResponse>,
    },
    RenewLease {
        /// When the node handled the heartbeat the grant counts from.
        since: Instant,
        lease_ms: u64,
        term: u64,
    },
    Append(AppendRequest, oneshot::Sender<PeerResponse>),
    Snapshot(SnapshotChunk, oneshot::Sender<PeerResponse>),
    /// Apply what is committed now (a read waits for it).
    Apply,
    Log {
        count: u32,
        reply: oneshot::Sender<Vec<LogLine>>,
    },
    Stop {
        reply: oneshot::Sender<()>,
    },
}

/// What the task publishes for readers, heartbeats and STATS.
#[derive(Debug)]
pub(crate) struct Published {
    pub state: ShardState,
    /// The primary's name, for `NotPrimary` hints.
    pub primary: Option<shardline_protocol::ServerAddr>,
    /// Until when the primary may serve writes and primary reads (replica time).
    pub lease_until: Option<crate::replica::Time>,
    /// Where the replica's time starts.
    pub origin: Instant,
    /// The primary has committed an entry of its own term (its no-op).
    pub ready: bool,
    /// (Follower) the latest proof of contact with a leased primary, for bounded reads.
    pub contact: Option<crate::replica::fresh::Contact>,
    /// (Primary only) each follower's lag, for metrics.
    pub followers: Vec<FollowerLag>,
}

/// Counters and latencies for STATS.
#[derive(Debug)]
pub(crate) struct Counters {
    pub writes_acked: u64,
    pub writes_failed: u64,
    /// The core's fsync, append and apply counts, as last published.
    pub syncs: crate::replica::SyncCounts,
    pub write_latency_us: Histogram<u64>,
}

/// State shared between the shard task and readers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub spec: ShardSpec,
    pub table: Table,
    pub published: Mutex<Published>,
    /// Reads served: counted on every read, so outside the counters' lock.
    pub reads: AtomicU64,
    /// Woken whenever the task publishes, so a session read waiting for an applied index
    /// looks again.
    pub applied: tokio::sync::Notify,
    pub counters: Mutex<Counters>,
}

/// The rest of the node's handle on one shard replica.
#[derive(Debug, Clone)]
pub struct ShardHandle {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl ShardHandle {
    /// The shard's identity and range.
    pub fn spec(&self) -> ShardSpec {
        self.shared.spec
    }

    /// The replica's current state.
    pub fn state(&self) -> ShardState {
        self.shared.published.lock().expect("published lock").state.clone()
    }

    /// Submits a write; answers once it is committed by a majority (or refused).
    pub async fn write(&self, op: Operation) -> Result<ShardCommit, NodeError> {
        let (reply, rx) = oneshot::channel();
        let started = Instant::now();
        let gone = || NodeError::ShardStopped(self.shared.spec.id);
        self.tx.send(Command::Write { op, reply }).await.map_err(|_| gone())?;
        let result = rx.await.map_err(|_| gone())?;
        let mut c = self.shared.counters.lock().expect("counters lock");
        match &result {
            Ok(_) => {
                c.writes_acked += 1;
                let us = started.elapsed().as_micros() as u64;
                let _ = c.write_latency_us.record(us.max(1));
            }
            Err(_) => c.writes_failed += 1,
        }
        Ok(result?)
    }

    /// Rows in `[low, high]` at consistency `level`, and the position they were read at.
    pub fn read(&self, low: i64, high: i64, level: &Consistency) -> Result<(Vec<Row>, ShardPosition), NodeError> {
        self.read_from(low, high, level, None)
    }

    /// [`ShardHandle::read`] once the table has applied `floor`, which a read waiting for a
    /// primary's apply found as its commit index (see [`fresh::ReadFacts::applied_floor`]).
    pub fn read_from(
        &self,
        low: i64,
        high: i64,
        level: &Consistency,
        floor: Option<u64>,
    ) -> Result<(Vec<Row>, ShardPosition), NodeError> {
        let (low, high) = self.may_read(low, high, level, floor)?;
        let (rows, applied) = self.shared.table.read_at(low, high)?;
        let position = self.position(applied);
        fresh::session_gate(self.shared.spec.id, level, applied.index)?;
        Ok((rows, position))
    }

    /// Appends the rows in `[low, high]` to `out` as stored (see [`Table::read_encoded`])
    /// at consistency `level`, with the position they were read at.
    ///
    /// [`Table::read_encoded`]: crate::store::Table::read_encoded
    pub fn read_encoded(
        &self,
        low: i64,
        high: i64,
        level: &Consistency,
        out: &mut RowsWriter,
    ) -> Result<(), NodeError> {
        let (low, high) = self.may_read(low, high, level, None)?;
        let floor = level.floor(self.shared.spec.id);
        let applied = self.shared.table.read_encoded(low, high, floor, out)?;
        fresh::session_gate(self.shared.spec.id, level, applied.index)?;
        out.read_at(self.position(applied));
        Ok(())
    }

    /// Waits up to `wait` for this replica to know `index` committed (a read's floor), then
    /// up to [`APPLY_WAIT`] more for its own apply of it, which it asks the task for as soon
    /// as the commit is known (at once, or when a follower learns of it during the wait),
    /// not with its next batch, which may come after the wait.
    pub async fn applied_reaches(&self, index: u64, wait: Duration) -> bool {
        let mut deadline = tokio::time::Instant::now() + wait;
        let mut committed = false;
        loop {
            let notified = self.shared.applied.notified();
            let state = self.state();
            if state.applied_index >= index {
                return true;
            }
            if !committed && state.commit_index >= index {
                committed = true;
                // A full channel means a busy task, which applies within its batch interval.
                let _ = self.tx.try_send(Command::Apply);
                deadline = deadline.max(tokio::time::Instant::now() + APPLY_WAIT);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.state().applied_index >= index;
            }
        }
    }

    fn position(&self, applied: LogPosition) -> ShardPosition {
        ShardPosition { shard: self.shared.spec.id, term: applied.term, index: applied.index }
    }

    /// Whether this replica may serve the read now, and the part of `[low, high]` it holds.
    fn may_read(&self, low: i64, high: i64, level: &Consistency, floor: Option<u64>) -> Result<(i64, i64), ErrorCode> {
        {
            let p = self.shared.published.lock().expect("published lock");
            let now = p.origin.elapsed();
            let facts = fresh::ReadFacts {
                state: &p.state,
                primary_hint: p.primary.as_ref(),
                lease_until: p.lease_until,
                ready: p.ready,
                contact: p.contact,
                bounded_unchecked: false,
                bound_in_whole_ms: false,
                applied_floor: floor,
            };
            fresh::read_gate(&facts, now, level)?;
        }
        self.shared.reads.fetch_add(1, Ordering::Relaxed);
        let spec = self.shared.spec;
        Ok((low.max(spec.low), high.min(spec.high().unwrap_or(i64::MIN))))
    }

    /// Sends a command and waits for its answer.
    pub(crate) async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.ok()?;
        rx.await.ok()
    }

    /// Sends a command that has no answer.
    pub(crate) async fn tell(&self, command: Command) {
        let _ = self.tx.send(command).await;
    }

    /// STATS lines for this shard.
    pub fn stats(&self) -> Vec<(String, String)> {
        let state = self.state();
        let c = self.shared.counters.lock().expect("counters lock");
        let id = state.spec.id;
        let h = &c.write_latency_us;
        let s = &c.syncs;
        let per_sync = if s.fsyncs == 0 { 0.0 } else { s.entries as f64 / s.fsyncs as f64 };
        vec![
            (format!("{id}.role"), format!("{:?}", state.role)),
            (format!("{id}.term"), state.term.to_string()),
            (format!("{id}.last"), format!("{}@{}", state.last.index, state.last.term)),
            (format!("{id}.commit"), state.commit_index.to_string()),
            (format!("{id}.applied"), state.applied_index.to_string()),
            (format!("{id}.serving"), state.serving.to_string()),
            (format!("{id}.fault"), state.fault.clone().unwrap_or_else(|| "none".into())),
            (format!("{id}.writes_acked"), c.writes_acked.to_string()),
            (format!("{id}.writes_failed"), c.writes_failed.to_string()),
            (format!("{id}.reads"), self.shared.reads.load(Ordering::Relaxed).to_string()),
            (format!("{id}.fsyncs"), s.fsyncs.to_string()),
            (format!("{id}.entries_per_fsync"), format!("{per_sync:.2}")),
            (format!("{id}.applies"), s.applies.to_string()),
            (format!("{id}.appends_sent"), s.appends_sent.to_string()),
            (format!("{id}.appends_in_flight_sum"), s.in_flight_sum.to_string()),
            (format!("{id}.appends_in_flight_max"), s.in_flight_max.to_string()),
            (format!("{id}.write_p50_us"), h.value_at_quantile(0.50).to_string()),
            (format!("{id}.write_p99_us"), h.value_at_quantile(0.99).to_string()),
        ]
    }
}

/// What `/metrics` reports of one shard replica, copied under the shard's short locks.
#[derive(Debug, Clone)]
pub struct ShardMetrics {
    /// The replica's state (role, term, commit and applied index).
    pub state: ShardState,
    /// Log fsyncs so far.
    pub fsyncs: u64,
    /// Log entries those fsyncs covered.
    pub entries_synced: u64,
    /// (Primary only) each follower's lag.
    pub followers: Vec<FollowerLag>,
}

impl ShardHandle {
    /// The replica's facts for `/metrics`.
    pub fn metrics(&self) -> ShardMetrics {
        let (state, followers) = {
            let p = self.shared.published.lock().expect("published lock");
            (p.state.clone(), p.followers.clone())
        };
        let c = self.shared.counters.lock().expect("counters lock");
        ShardMetrics { state, fsyncs: c.syncs.fsyncs, entries_synced: c.syncs.entries, followers }
    }
}

/// Where a shard replica's files live under the node's data directory.
pub fn shard_dir(data_dir: &Path, shard: shardline_protocol::ShardId) -> std::path::PathBuf {
    data_dir.join("shards").join(shard.0.to_string())
}
