//! The shard task: the only writer of a replica's log and table.
//!
//! Commands arrive on one channel. Writes that are queued together are validated, logged
//! and synced together (group commit). Role changes, appends from a primary and progress
//! reports from replication tasks are handled in arrival order, so the replica's state
//! changes one step at a time. Disk work runs in `block_in_place`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use shardline_protocol::{
    ControlResponse, ErrorCode, LogEntry, LogLine, LogPosition, ReplicaRole, Schema, ServerAddr, ShardSpec, ShardState,
    Vote,
};
use tokio::sync::mpsc;
use tokio::task::block_in_place;
use tracing::{info, info_span, warn, Instrument};

use super::primary::PrimaryState;
use super::validate::Overlay;
use super::{shard_dir, Command, Counters, Published, ShardHandle, Shared};
use crate::config::NodeConfig;
use crate::failpoint::Failpoints;
use crate::table::{StoreError, Table};
use crate::wal::{LogView, Wal};

/// How often the task checks write deadlines.
const TICK: Duration = Duration::from_millis(20);
/// Most commands handled as one group.
const MAX_GROUP: usize = 1024;

/// A replica's role at its current term.
#[derive(Debug)]
pub(super) enum Role {
    /// Told nothing at this term yet.
    Idle,
    /// Following `primary`.
    Follower { primary: ServerAddr },
    /// Leading.
    Primary(Box<PrimaryState>),
}

/// The shard task's state.
#[derive(Debug)]
pub(super) struct ShardTask {
    pub node: String,
    pub cfg: Arc<NodeConfig>,
    pub spec: ShardSpec,
    pub schema: Schema,
    pub wal: Wal,
    pub log: LogView,
    pub table: Table,
    pub shared: Arc<Shared>,
    pub tx: mpsc::WeakSender<Command>,
    pub term: u64,
    pub role: Role,
    pub commit: u64,
    pub applied: LogPosition,
    pub fault: Option<(u64, String)>,
    pub installing: bool,
    /// Whether the table is known to be as current as the cluster's commit index: false
    /// after a restart (non-durable applies may have been rolled back) until a primary's
    /// commit index has been applied, or this replica's own no-op committed as primary.
    pub synced: bool,
    pub lease_until: Option<Instant>,
    pub overlay: Overlay,
}

/// Opens (configuring, if `config` is given) the replica in `data_dir` and starts its task.
pub fn open_shard(
    data_dir: &Path,
    cfg: Arc<NodeConfig>,
    failpoints: Arc<Failpoints>,
    shard: shardline_protocol::ShardId,
    config: Option<(ShardSpec, Schema)>,
) -> Result<ShardHandle, StoreError> {
    let dir = shard_dir(data_dir, shard);
    std::fs::create_dir_all(&dir)?;
    let table = Table::open(&dir.join("table.redb"), failpoints.clone())?;
    if let Some((spec, schema)) = &config {
        table.configure(spec, schema)?;
    }
    let Some(mut meta) = table.meta()? else {
        return Err(StoreError::Io(std::io::Error::other(format!("{} was never configured", dir.display()))));
    };
    let (mut wal, report) = Wal::open(&dir.join("log"), failpoints)?;
    let span = info_span!("shard", node = %cfg.id, shard = %meta.spec.id);
    let _enter = span.enter();
    let base = wal.view().read().expect("log lock").base();
    if meta.installing || base.index > meta.applied.index {
        warn!(
            installing = meta.installing,
            base = base.index,
            applied = meta.applied.index,
            "replica was mid-install or its log starts past its table: starting empty"
        );
        table.begin_install()?;
        table.finish_install(LogPosition::default())?;
        wal.reset(LogPosition::default())?;
        meta.applied = LogPosition::default();
    }
    if report.torn_bytes > 0 {
        info!(bytes = report.torn_bytes, "cut an interrupted write off the log's tail");
    }
    let fault = report.damage.map(|(index, why)| {
        warn!(index, %why, "log entry damaged: not serving until a primary resends it");
        (index, format!("log entry {index} damaged ({why}); repairing from primary"))
    });
    info!(entries = report.entries, term = meta.term, applied = meta.applied.index, "replica opened");

    let (tx, rx) = mpsc::channel(4096);
    let state = ShardState {
        spec: meta.spec,
        role: ReplicaRole::Idle,
        term: meta.term,
        last: wal.last(),
        commit_index: meta.applied.index,
        applied_index: meta.applied.index,
        serving: false,
        fault: fault.as_ref().map(|f| f.1.clone()),
    };
    let shared = Arc::new(Shared {
        spec: meta.spec,
        table: table.clone(),
        published: Mutex::new(Published { state, primary: None, lease_until: None, ready: false }),
        counters: Mutex::new(Counters {
            writes_acked: 0,
            writes_failed: 0,
            reads: 0,
            fsyncs: 0,
            entries_synced: 0,
            write_latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        }),
    });
    let task = ShardTask {
        node: cfg.id.clone(),
        spec: meta.spec,
        schema: meta.schema,
        log: wal.view(),
        wal,
        table,
        shared: shared.clone(),
        tx: tx.downgrade(),
        term: meta.term,
        role: Role::Idle,
        commit: meta.applied.index,
        applied: meta.applied,
        fault,
        installing: false,
        synced: false,
        lease_until: None,
        overlay: Overlay::default(),
        cfg,
    };
    drop(_enter);
    tokio::spawn(task.run(rx).instrument(span));
    Ok(ShardHandle { tx, shared })
}

impl ShardTask {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = rx.recv() => {
                    let Some(first) = command else { break };
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(c) => group.push(c),
                            Err(_) => break,
                        }
                    }
                    if !self.handle_group(group) {
                        break;
                    }
                }
                _ = tick.tick() => self.on_tick(),
            }
        }
        self.step_down(Role::Idle);
        info!("shard task stopped");
    }

    /// Handles a group of commands: writes are batched into one log append; everything
    /// else runs in order. Returns false when the task should stop.
    fn handle_group(&mut self, group: Vec<Command>) -> bool {
        let mut writes = Vec::new();
        for command in group {
            match command {
                Command::Write { op, started, reply } => writes.push((op, started, reply)),
                other => {
                    if !writes.is_empty() {
                        self.write_group(std::mem::take(&mut writes));
                    }
                    if !self.handle(other) {
                        return false;
                    }
                }
            }
        }
        if !writes.is_empty() {
            self.write_group(writes);
        }
        true
    }

    fn handle(&mut self, command: Command) -> bool {
        match command {
            Command::Write { .. } => unreachable!("writes are grouped"),
            Command::BecomePrimary { term, followers, lease_ms, reply } => {
                let _ = reply.send(self.become_primary(term, followers, lease_ms));
            }
            Command::BecomeFollower { term, primary, reply } => {
                let _ = reply.send(self.become_follower(term, primary));
            }
            Command::ElectionQuery { term, reply } => {
                let _ = reply.send(self.election_query(term));
            }
            Command::RenewLease { lease_ms } => {
                if matches!(self.role, Role::Primary(_)) {
                    self.lease_until = Some(Instant::now() + Duration::from_millis(lease_ms));
                    self.publish();
                }
            }
            Command::Append(request, reply) => {
                let _ = reply.send(self.on_append(request));
            }
            Command::Snapshot(chunk, reply) => {
                let _ = reply.send(self.on_snapshot(chunk));
            }
            Command::Log { count, reply } => {
                let _ = reply.send(self.log_lines(count));
            }
            Command::Progress { epoch, slot, durable } => self.on_progress(epoch, slot, durable),
            Command::HigherTerm { term } => {
                if term > self.term {
                    warn!(term, "a follower knows a newer term: stepping down");
                    if self.adopt_term(term).is_ok() {
                        self.step_down(Role::Idle);
                    }
                }
            }
            Command::Stop { reply } => {
                let _ = reply.send(());
                return false;
            }
        }
        true
    }

    fn on_tick(&mut self) {
        self.expire_waiters();
    }

    /// The election query: adopt `term` durably, then report the log's last position.
    fn election_query(&mut self, term: u64) -> ControlResponse {
        if term < self.term {
            return ControlResponse::Error(ErrorCode::StaleTerm { current: self.term, got: term });
        }
        if term > self.term {
            if let Err(e) = self.adopt_term(term) {
                return ControlResponse::Error(ErrorCode::Internal(e.to_string()));
            }
            self.step_down(Role::Idle);
        }
        let last = self.wal.last();
        let electable = self.fault.is_none() && !self.installing;
        info!(term, last_index = last.index, last_term = last.term, electable, "answered election query");
        ControlResponse::Vote(Vote { shard: self.spec.id, term: self.term, last, electable })
    }

    fn become_follower(&mut self, term: u64, primary: ServerAddr) -> ControlResponse {
        if term < self.term {
            return ControlResponse::Error(ErrorCode::StaleTerm { current: self.term, got: term });
        }
        if term > self.term {
            if let Err(e) = self.adopt_term(term) {
                return ControlResponse::Error(ErrorCode::Internal(e.to_string()));
            }
        } else if matches!(self.role, Role::Primary(_)) {
            return ControlResponse::Error(ErrorCode::BadRequest(format!(
                "this replica leads term {term}; follow at a newer term"
            )));
        }
        info!(term, primary = %primary.name, "following");
        self.step_down(Role::Follower { primary });
        ControlResponse::Ok
    }

    /// Persists a newer term before acting in it.
    pub(super) fn adopt_term(&mut self, term: u64) -> Result<(), StoreError> {
        block_in_place(|| self.table.set_term(term))?;
        self.term = term;
        Ok(())
    }

    /// Leaves the primary role (if held), failing writes still waiting, and takes `role`.
    pub(super) fn step_down(&mut self, role: Role) {
        if let Role::Primary(primary) = std::mem::replace(&mut self.role, Role::Idle) {
            primary.shut_down(self.spec.id);
            self.overlay.clear();
        }
        self.role = role;
        self.lease_until = None;
        self.publish();
    }

    /// Applies committed entries up to `target` to the table.
    pub(super) fn apply_to(&mut self, target: u64) -> Result<(), StoreError> {
        if target <= self.applied.index {
            return Ok(());
        }
        let records: Vec<_> = {
            let mem = self.log.read().expect("log lock");
            (self.applied.index + 1..=target).map_while(|i| mem.record(i)).collect()
        };
        let mut entries = Vec::with_capacity(records.len());
        for record in &records {
            let entry = LogEntry::decode(record).map_err(|e| StoreError::Io(std::io::Error::other(e)))?;
            entries.push(entry);
        }
        let Some(last) = entries.last().map(LogEntry::position) else {
            return Ok(());
        };
        block_in_place(|| self.table.apply(&entries, false))?;
        self.applied = last;
        self.overlay.applied_through(last.index);
        self.compact()?;
        Ok(())
    }

    /// Truncates the log's prefix once it is applied everywhere it needs to be.
    fn compact(&mut self) -> Result<(), StoreError> {
        let retain = self.cfg.log_retain;
        let base = self.log.read().expect("log lock").base().index;
        if self.applied.index < base + 2 * retain.max(1) {
            return Ok(());
        }
        let mut point = self.applied.index - retain;
        if let Role::Primary(p) = &self.role {
            point = point.min(p.slowest_follower(self.applied.index, self.cfg.snapshot_lag));
        }
        if point <= base {
            return Ok(());
        }
        block_in_place(|| -> Result<(), StoreError> {
            self.table.sync()?;
            self.wal.truncate_prefix(point)?;
            Ok(())
        })
    }

    /// Publishes the replica's state for readers, heartbeats and STATS.
    pub(super) fn publish(&self) {
        let (role, primary, ready) = match &self.role {
            Role::Idle => (ReplicaRole::Idle, None, false),
            Role::Follower { primary } => (ReplicaRole::Follower, Some(primary.clone()), false),
            Role::Primary(p) => (
                ReplicaRole::Primary,
                Some(ServerAddr { name: self.node.clone(), addr: self.cfg.listen.to_string() }),
                p.ready,
            ),
        };
        let mut published = self.shared.published.lock().expect("published lock");
        published.state = ShardState {
            spec: self.spec,
            role,
            term: self.term,
            last: self.wal.last(),
            commit_index: self.commit,
            applied_index: self.applied.index,
            serving: self.fault.is_none() && !self.installing && self.synced,
            fault: self.fault.as_ref().map(|f| f.1.clone()),
        };
        published.primary = primary;
        published.lease_until = self.lease_until;
        published.ready = ready;
    }

    /// Marks the replica faulty after a storage error it cannot recover from by itself.
    pub(super) fn storage_failed(&mut self, what: &str, e: &dyn std::fmt::Display) {
        warn!(%e, "{what} failed: replica stops serving");
        let index = self.wal.last().index + 1;
        self.fault = Some((index, format!("{what} failed: {e}")));
        self.step_down(Role::Idle);
    }

    fn log_lines(&self, count: u32) -> Vec<LogLine> {
        let mem = self.log.read().expect("log lock");
        let last = mem.last().index;
        let from = last.saturating_sub(u64::from(count)).max(mem.base().index) + 1;
        let mut lines: Vec<LogLine> = (from..=last)
            .filter_map(|i| mem.record(i).map(|r| (i, r)))
            .map(|(index, record)| {
                let crc = u32::from_be_bytes(record[..4].try_into().expect("4 bytes"));
                let (term, crc_ok, summary) = match LogEntry::decode(&record) {
                    Ok(e) => (e.term, true, e.op.summary()),
                    Err(e) => (0, false, e.to_string()),
                };
                LogLine { index, term, crc, crc_ok, summary, committed: index <= self.commit }
            })
            .collect();
        if let Some((index, why)) = &self.fault {
            lines.push(LogLine {
                index: *index,
                term: 0,
                crc: 0,
                crc_ok: false,
                summary: why.clone(),
                committed: false,
            });
        }
        lines
    }
}
