//! A shard replica's decisions as a sans-IO state machine.
//!
//! [`Replica`] takes messages and the current time in and gives effects out, in the shape
//! of raft-rs's `RawNode`: the caller hands it a write, a role change, an append from a
//! primary, an answer from a follower or a tick, then drains [`Replica::effects`] and
//! carries them out (answer a write, send a message to a follower). It never reads a
//! clock, spawns a task or opens a file: time is an argument, the log sits on a
//! [`Disk`] and the rows in a [`TableStore`], so the same code runs in
//! the node (tokio, real files, redb) and in the simulator (virtual time, simulated disk).
//!
//! - [`rules`]: commit and append decisions as pure functions.
//! - [`validate`]: checking writes against the schema, the range and pending entries.
//! - `primary`: the primary's write path (group commit, majority commit, acks).
//! - `follower`: appends and snapshots arriving from a primary.
//! - `replication`: what the primary sends each follower next, and what answers mean.
//! - `roles`: elections, role changes, terms and leases.
//! - [`room`]: what fits in one frame to a follower (entries, batches, snapshot chunks).
//! - `log_view`: the log as `LOG <shard>` and the simulator's checkers read it.
//! - [`fresh`]: whether a read may be served at the consistency level it asks for.
//! - [`copy`]: a snapshot read a chunk at a time from a pinned view of the table as it is sent.
//! - [`pace`]: snapshot chunks held to a rate, on the time passed in.

pub mod copy;
mod follower;
pub mod fresh;
pub mod lag;
mod log_view;
pub mod pace;
mod primary;
mod replication;
mod roles;
pub mod room;
pub mod rules;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use shardline_protocol::{
    ClientSeqMark, Consistency, ContactStamp, CopyProgress, ErrorCode, LogEntry, LogPosition, PeerRequest, ReplicaRole,
    Schema, ServerAddr, ShardCommit, ShardSpec, ShardState,
};
use tracing::{info, warn};

pub use follower::{AppendRequest, SnapshotChunk};
pub use lag::FollowerLag;
use primary::PrimaryState;
pub use replication::{WINDOW_BYTES, WINDOW_MESSAGES};
use validate::Overlay;

use crate::disk::Disk;
use crate::failpoint::Failpoints;
use crate::store::{StoreError, TableStore};
use crate::wal::Wal;

/// Time as the replica sees it: elapsed since an origin its driver chose.
pub type Time = Duration;

/// The snapshot rate a node sends at unless told otherwise: 64 MiB a second.
pub const DEFAULT_SNAPSHOT_RATE: u64 = 64 << 20;

/// A replica's settings (the node's, for its shards).
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// This node's server name.
    pub node: String,
    /// The address peers reach this node at.
    pub addr: String,
    /// How long a write may wait for a majority before it is answered Timeout.
    pub write_timeout: Duration,
    /// How often a primary sends an idle follower an (empty) append.
    pub sync_heartbeat: Duration,
    /// How long a primary waits for a follower's answer before calling it unreachable.
    pub peer_timeout: Duration,
    /// A follower further behind than this many entries is sent a snapshot.
    pub snapshot_lag: u64,
    /// Log entries kept behind the applied point.
    pub log_retain: u64,
    /// The frame limit: every message to a follower must fit it (see [`room`]).
    pub max_payload: usize,
    /// Bytes of rows and marks in one snapshot chunk at most (and never more than a frame
    /// holds); [`room::SNAPSHOT_CHUNK_BYTES`] in a node.
    pub snapshot_chunk_bytes: usize,
    /// Bytes of snapshot rows and marks this replica sends a second at most, to all its
    /// followers together (0: unlimited); [`DEFAULT_SNAPSHOT_RATE`] in a node.
    pub snapshot_rate: u64,
    /// Tells this run of the replica from earlier ones, so late answers to an earlier run's
    /// messages are never taken for answers to ours.
    pub incarnation: u64,
    /// Test-only: rules put back as they were before their fixes (all off in a node).
    pub regressions: Regressions,
}

/// Test-only: rules the simulator's self-test puts back as they were before their fixes, to
/// show that its checkers catch each one. All off in a real node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Regressions {
    /// Commit on the primary's own fsync, without a majority.
    pub commit_rule: bool,
    /// Refuse a retry definitely even when an earlier attempt of it was logged here (issue
    /// 11, scenario 5).
    pub definite_refusals: bool,
    /// Take any later snapshot chunk as the next one of the install under way, whichever
    /// snapshot it belongs to (scenario 9).
    pub chunk_identity: bool,
    /// Cut snapshots into chunks of [`copy::SNAPSHOT_CHUNK_ROWS`] rows, whatever
    /// their bytes (scenario 8).
    pub chunks_by_rows: bool,
    /// Serve bounded reads with no proof of freshness, like `any` (issue 16's checker).
    pub bounded_unchecked: bool,
    /// Apply entries a primary sent before they are committed (issue 16's `any` checker).
    pub apply_uncommitted: bool,
    /// Lead again on the same term's vote after a failed log write (found as simulator
    /// seed 16009967: other entries at a term and index a follower already held).
    pub relead_after_log_failure: bool,
    /// Compare a bounded read's contact age in whole milliseconds (found as seed 16019633:
    /// 0.5 ms passed a bound of 0 ms).
    pub bound_in_whole_ms: bool,
}

/// Names one message to a follower, so its answer finds its way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Link {
    /// The replica run and primary term the message belongs to.
    pub epoch: (u64, u64, u64),
    /// The follower's position in the primary's follower list.
    pub slot: usize,
    /// The message's number on this link.
    pub seq: u64,
}

/// Something the replica's driver must carry out.
#[derive(Debug)]
pub enum Effect {
    /// Answer the write submitted with `token`.
    WriteDone {
        /// The token given with the write.
        token: u64,
        /// Its outcome.
        result: Result<ShardCommit, ErrorCode>,
    },
    /// Send `request` to a follower; hand its answer (or failure) to [`Replica::on_peer_answer`].
    Send {
        /// Which message this is.
        link: Link,
        /// The follower.
        to: ServerAddr,
        /// The message.
        request: PeerRequest,
    },
}

/// A replica's role at its current term.
#[derive(Debug)]
enum Role {
    /// Told nothing at this term yet.
    Idle,
    /// Following `primary`.
    Follower { primary: ServerAddr },
    /// Leading.
    Primary(Box<PrimaryState>),
}

/// Disk and replication activity, for STATS.
#[derive(Debug, Default, Clone, Copy)]
pub struct SyncCounts {
    /// Log fsyncs.
    pub fsyncs: u64,
    /// Entries those fsyncs covered.
    pub entries: u64,
    /// Appends sent to followers (as primary).
    pub appends_sent: u64,
    /// Over those appends, the messages in flight to the follower counting each one.
    pub in_flight_sum: u64,
    /// The most messages ever in flight to one follower.
    pub in_flight_max: u64,
    /// Batches applied to the table.
    pub applies: u64,
}

/// One shard replica's state and decisions.
#[derive(Debug)]
pub struct Replica<D: Disk, T: TableStore> {
    cfg: Arc<ReplicaConfig>,
    spec: ShardSpec,
    schema: Schema,
    wal: Wal<D>,
    table: T,
    term: u64,
    role: Role,
    commit: u64,
    applied: LogPosition,
    fault: Option<(u64, String)>,
    installing: bool,
    /// The snapshot being installed: its primary's term, last included entry, next chunk.
    install: Option<(u64, LogPosition, u32)>,
    /// The client marks of the snapshot being installed, gathered from its chunks.
    install_marks: Vec<ClientSeqMark>,
    /// How far the install under way has come, for STATUS.
    receiving: Option<CopyProgress>,
    /// Holds snapshot chunks to the configured rate.
    pacer: pace::Pacer,
    /// What fits in one frame to a follower, from the frame limit.
    room: room::Room,
    /// Whether the table is known to be as current as the cluster's commit index: false
    /// after a restart (non-durable applies may have been rolled back) until a primary's
    /// commit index has been applied, or this replica's own no-op committed as primary.
    synced: bool,
    lease_until: Option<Time>,
    /// The term whose election query this replica last answered, when, and its log's
    /// last position then.
    voted: Option<(u64, Time, LogPosition)>,
    overlay: Overlay,
    epochs: u64,
    effects: Vec<Effect>,
    syncs: SyncCounts,
    /// Entries staged in the log and not yet fsynced (see [`Replica::sync_log`]).
    unsynced: u64,
    /// The commit index of the append just received and not yet applied (followers): what
    /// [`Replica::apply_committed`] checks the table against before serving again.
    primary_commit: Option<u64>,
    /// The latest proof of contact with a leased primary (followers; see [`fresh`]).
    contact: Option<fresh::Contact>,
    /// Test-only (the simulator's checkers): entries this replica applied while leading,
    /// kept until taken. `None` (off) in a node.
    journal: Option<Vec<LogEntry>>,
}

/// Why a replica could not open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The table or the log failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The table was never configured.
    #[error("the replica was never configured")]
    Unconfigured,
}

impl<D: Disk, T: TableStore> Replica<D, T> {
    /// Opens a replica from its table and its log's disk (configuring it if `config` is
    /// given): replays the log, and starts idle, not serving until a primary is heard.
    pub fn open(
        cfg: Arc<ReplicaConfig>,
        table: T,
        disk: D,
        failpoints: Arc<Failpoints>,
        config: Option<(ShardSpec, Schema)>,
    ) -> Result<Self, OpenError> {
        if let Some((spec, schema)) = &config {
            table.configure(spec, schema)?;
        }
        let mut meta = table.meta()?.ok_or(OpenError::Unconfigured)?;
        let (mut wal, report) = Wal::open(disk, failpoints).map_err(StoreError::from)?;
        let base = wal.mem().base();
        if meta.installing || base.index > meta.applied.index {
            warn!(
                installing = meta.installing,
                base = base.index,
                applied = meta.applied.index,
                "replica was mid-install or its log starts past its table: starting empty"
            );
            table.begin_install()?;
            table.finish_install(LogPosition::default(), &[])?;
            wal.reset(LogPosition::default()).map_err(StoreError::from)?;
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
        let room = room::Room::new(cfg.max_payload, &cfg.node).capped_chunks(cfg.snapshot_chunk_bytes);
        let pacer = pace::Pacer::new(cfg.snapshot_rate);
        Ok(Replica {
            cfg,
            spec: meta.spec,
            schema: meta.schema,
            wal,
            table,
            term: meta.term,
            role: Role::Idle,
            commit: meta.applied.index,
            applied: meta.applied,
            fault,
            installing: false,
            install: None,
            install_marks: Vec::new(),
            receiving: None,
            pacer,
            room,
            synced: false,
            lease_until: None,
            voted: None,
            overlay: Overlay::default(),
            epochs: 0,
            effects: Vec::new(),
            syncs: SyncCounts::default(),
            unsynced: 0,
            primary_commit: None,
            contact: None,
            journal: None,
        })
    }

    /// Takes the effects produced so far, in order.
    pub fn effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// The shard's identity and range.
    pub fn spec(&self) -> ShardSpec {
        self.spec
    }

    /// The replica's table (readers use it directly).
    pub fn table(&self) -> &T {
        &self.table
    }

    /// The replica's state, as heartbeats, STATUS and readers see it.
    pub fn state(&self) -> ShardState {
        let role = match &self.role {
            Role::Idle => ReplicaRole::Idle,
            Role::Follower { .. } => ReplicaRole::Follower,
            Role::Primary(_) => ReplicaRole::Primary,
        };
        ShardState {
            spec: self.spec,
            role,
            term: self.term,
            last: self.wal.last(),
            commit_index: self.commit,
            applied_index: self.applied.index,
            serving: self.fault.is_none() && !self.installing && self.synced,
            fault: self.fault.as_ref().map(|f| f.1.clone()),
            settled: matches!(&self.role, Role::Primary(p) if p.settled()),
            copies: self.copies(),
        }
    }

    /// The snapshot copies under way: those sent to followers, or the one being installed.
    pub fn copies(&self) -> Vec<CopyProgress> {
        match &self.role {
            Role::Primary(p) => p.followers.iter().filter_map(|f| f.copy()).collect(),
            _ => self.receiving.iter().cloned().collect(),
        }
    }

    /// The primary this replica knows of (itself when leading), for `NotPrimary` hints.
    pub fn primary_hint(&self) -> Option<ServerAddr> {
        match &self.role {
            Role::Idle => None,
            Role::Follower { primary } => Some(primary.clone()),
            Role::Primary(_) => Some(self.me()),
        }
    }

    /// Until when this replica may serve writes and primary reads, if it leads.
    pub fn lease_until(&self) -> Option<Time> {
        self.lease_until
    }

    /// Whether this primary has committed an entry of its own term (its no-op).
    pub fn ready(&self) -> bool {
        matches!(&self.role, Role::Primary(p) if p.ready)
    }

    /// Whether this replica may lead: its log is whole (not cut at damage, not mid-install).
    pub fn electable(&self) -> bool {
        self.fault.is_none() && !self.installing
    }

    /// Whether a read at `level` may be served at `now` (see [`fresh::read_gate`]).
    pub fn read_gate(&self, now: Time, level: &Consistency) -> Result<(), ErrorCode> {
        let state = self.state();
        let hint = self.primary_hint();
        fresh::read_gate(&self.read_facts(&state, hint.as_ref()), now, level)
    }

    /// What a read gate needs of this replica, around its `state` and primary `hint`.
    pub fn read_facts<'a>(&self, state: &'a ShardState, hint: Option<&'a ServerAddr>) -> fresh::ReadFacts<'a> {
        fresh::ReadFacts {
            state,
            primary_hint: hint,
            lease_until: self.lease_until,
            ready: self.ready(),
            contact: self.contact,
            bounded_unchecked: self.cfg.regressions.bounded_unchecked,
            bound_in_whole_ms: self.cfg.regressions.bound_in_whole_ms,
            applied_floor: None,
        }
    }

    /// The latest proof of contact with a leased primary, for readers (see [`fresh`]).
    pub fn contact(&self) -> Option<fresh::Contact> {
        self.contact
    }

    /// This run's stamp at `now`, sent back with every answer to an append.
    fn stamp(&self, now: Time) -> ContactStamp {
        ContactStamp { run: self.cfg.incarnation, at_nanos: now.as_nanos() as u64 }
    }

    /// Test-only: keep the entries applied while leading, for [`Replica::take_journal`]
    /// (a primary applies only committed entries, so the simulator learns the committed
    /// log from it even after the log's prefix is truncated).
    pub fn keep_journal(&mut self) {
        self.journal.get_or_insert_with(Vec::new);
    }

    /// Test-only: the entries applied while leading since the last call.
    pub fn take_journal(&mut self) -> Vec<LogEntry> {
        self.journal.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Committed entries not yet applied to the table (see [`Replica::apply_committed`]).
    pub fn unapplied(&self) -> u64 {
        self.commit.saturating_sub(self.applied.index)
    }

    /// Log fsyncs so far.
    pub fn sync_counts(&self) -> SyncCounts {
        self.syncs
    }

    /// Whether [`Replica::tick`] has work to do: only a primary has deadlines (writes
    /// waiting for a majority, followers due a heartbeat), so a driver may leave the
    /// others untimed.
    pub fn needs_tick(&self) -> bool {
        matches!(self.role, Role::Primary(_))
    }

    /// Time passes: expire writes that waited too long; keep followers in touch.
    pub fn tick(&mut self, now: Time) {
        self.expire_waiters(now);
        self.pump(now);
    }

    /// The replica is about to stop (its shard dropped, or the node shutting down): it
    /// leaves its role, answering the writes still waiting as indeterminate.
    pub fn shut_down(&mut self) {
        self.step_down(Role::Idle);
    }

    fn me(&self) -> ServerAddr {
        ServerAddr { name: self.cfg.node.clone(), addr: self.cfg.addr.clone() }
    }

    /// Persists a newer term before acting in it.
    fn adopt_term(&mut self, term: u64) -> Result<(), StoreError> {
        self.table.set_term(term)?;
        self.term = term;
        Ok(())
    }

    /// Leaves the primary role (if held), failing writes still waiting, and takes `role`.
    fn step_down(&mut self, role: Role) {
        if matches!(self.role, Role::Primary(_)) && self.commit > self.applied.index {
            // What this primary committed (and acknowledged) is applied while it still leads.
            if let Err(e) = self.apply_to(self.commit) {
                warn!(%e, "apply failed while stepping down: replica stops serving");
                self.fault = Some((self.applied.index + 1, format!("apply failed: {e}")));
            }
        }
        if let Role::Primary(primary) = std::mem::replace(&mut self.role, Role::Idle) {
            primary.shut_down(self.spec.id, &mut self.effects);
            self.overlay.clear();
        }
        self.role = role;
        self.lease_until = None;
    }

    /// Applies committed entries up to `target` to the table.
    fn apply_to(&mut self, target: u64) -> Result<(), StoreError> {
        if target <= self.applied.index {
            return Ok(());
        }
        let mem = self.wal.mem();
        let mut entries = Vec::new();
        for record in (self.applied.index + 1..=target).map_while(|i| mem.record(i)) {
            entries.push(LogEntry::decode(&record).map_err(|e| StoreError::Io(std::io::Error::other(e)))?);
        }
        let Some(last) = entries.last().map(LogEntry::position) else {
            return Ok(());
        };
        self.table.apply(&entries, false)?;
        self.syncs.applies += 1;
        if let (Some(journal), Role::Primary(_)) = (&mut self.journal, &self.role) {
            journal.extend(entries.iter().cloned());
        }
        self.applied = last;
        self.overlay.applied_through(last.index);
        if let Role::Primary(p) = &mut self.role {
            // Retries of these now find their marks in the table.
            p.pending_clients.retain(|_, index| *index > last.index);
        }
        self.compact()
    }

    /// Truncates the log's prefix once it is applied everywhere it needs to be.
    fn compact(&mut self) -> Result<(), StoreError> {
        let retain = self.cfg.log_retain;
        let base = self.wal.mem().base().index;
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
        self.table.sync()?;
        self.wal.truncate_prefix(point)?;
        Ok(())
    }

    /// Marks the replica faulty after a storage error it cannot recover from by itself.
    fn storage_failed(&mut self, what: &str, e: &dyn std::fmt::Display) {
        warn!(%e, what, "storage failed: replica stops serving");
        let index = self.wal.last().index + 1;
        self.fault = Some((index, format!("{what} failed: {e}")));
        self.step_down(Role::Idle);
    }

    /// A log write or fsync failed: the log in memory may hold entries the disk does not,
    /// so the replica leaves its role and reads its log again from the disk (the log cut
    /// itself back to its last good fsync). It acknowledges nothing it cannot prove
    /// durable, and serves again once a primary has brought it up to date.
    fn log_failed(&mut self, what: &str, e: &dyn std::fmt::Display) {
        warn!(%e, what, "log write failed: reloading the log from disk");
        self.step_down(Role::Idle);
        // A primary's appends leave before its own fsync: the write that failed may have
        // cut entries its followers already hold. Leading again on this term's vote would
        // log other entries at the same term and index, and a follower holding the first
        // ones would keep them as matching. Only a new election, at a higher term, may
        // make this replica primary again.
        if !self.cfg.regressions.relead_after_log_failure {
            self.voted = None;
        }
        self.synced = false;
        self.unsynced = 0;
        match self.wal.reload() {
            Ok(report) => {
                self.fault = report
                    .damage
                    .map(|(index, why)| (index, format!("log entry {index} damaged ({why}); repairing from primary")));
                info!(last = self.wal.last().index, "log reloaded after a failed write");
            }
            Err(reload) => {
                let index = self.wal.last().index + 1;
                self.fault = Some((index, format!("{what} failed: {e}; reloading the log failed: {reload}")));
            }
        }
    }
}
