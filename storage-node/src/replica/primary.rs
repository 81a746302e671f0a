//! The primary's write path: validate, log, replicate, commit on a majority, apply, ack.
//!
//! A group of writes becomes consecutive log entries, synced with one fsync and sent to
//! the followers. The commit index moves when a majority of replicas (the primary
//! included) hold an entry of the current term durably, and entries up to it are
//! acknowledged at once. They are applied to the table later, in batches, when the driver
//! calls [`Replica::apply_committed`]: a read at the primary, at any level, waits until
//! the table has applied the commit index it found
//! ([`super::fresh::read_gate`] answers `Behind` until then), and validation and retries
//! see committed entries not yet applied through the overlay and the pending retry marks,
//! both kept until the apply.
//!
//! Refusals are definite: a write refused (`NotPrimary`, `LeaseExpired`, `NoQuorum`, a
//! validation error, `TooLarge` for an entry that could not fit an append) was never logged. A logged write that does not commit in time is
//! answered `Timeout`: its outcome is unknown, and a retry with the same (client, seq)
//! is applied at most once.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use shardline_protocol::{ErrorCode, LogEntry, Operation, ShardCommit, ShardId};
use tracing::{info, warn};

use super::lag::{AppendTimes, FollowerLag};
use super::replication::Follower;
use super::rules::{majority, quorum_commit};
use super::validate::{validate, Refusal};
use super::{Effect, Replica, Role, Time};
use crate::disk::Disk;
use crate::error::internal;
use crate::store::TableStore;

/// A write waiting for its entry to commit.
#[derive(Debug)]
struct Waiter {
    token: u64,
    started: Time,
    rows: u64,
    /// A refusal that rests on the entry waited for: answered once it commits.
    refusal: Option<ErrorCode>,
}

/// The state a replica holds only while it leads.
#[derive(Debug)]
pub(super) struct PrimaryState {
    pub epoch: (u64, u64, u64),
    pub followers: Vec<Follower>,
    waiters: BTreeMap<u64, Vec<Waiter>>,
    /// Retries find their first attempt here until it is applied: (client, seq) → index.
    pub pending_clients: HashMap<(u64, u64), u64>,
    durable_self: u64,
    noop_index: u64,
    /// The no-op of this term has committed: everything before it is applied.
    pub ready: bool,
    /// The last entry logged when this replica set was taken: once a majority of the set
    /// holds it, so does a majority hold everything an earlier set may have committed.
    settle_mark: u64,
    /// A planned switchover asked this primary to refuse new writes until then.
    pub handoff_until: Option<Time>,
    /// When recent appends were logged, for the followers' lag in time.
    appended: AppendTimes,
}

impl PrimaryState {
    /// A new primary whose log ends at `last`.
    pub(super) fn new(
        epoch: (u64, u64, u64),
        followers: Vec<Follower>,
        pending_clients: HashMap<(u64, u64), u64>,
        last: u64,
    ) -> PrimaryState {
        PrimaryState {
            epoch,
            followers,
            waiters: BTreeMap::new(),
            pending_clients,
            durable_self: last,
            noop_index: last + 1,
            ready: false,
            settle_mark: last + 1,
            handoff_until: None,
            appended: AppendTimes::default(),
        }
    }

    /// The replica set changed with the log ending at `last`.
    pub(super) fn settle_from(&mut self, last: u64) {
        self.settle_mark = last;
    }

    /// Each follower's lag behind this primary's log, which ends at `last`, at `now`.
    pub(super) fn lag(&self, last: u64, now: Time) -> Vec<FollowerLag> {
        let lag = |f: &Follower| FollowerLag {
            follower: f.addr.name.clone(),
            voter: f.voter,
            entries: last.saturating_sub(f.durable),
            behind: self.appended.behind(f.durable, now),
        };
        self.followers.iter().map(lag).collect()
    }

    /// Voting followers.
    pub(super) fn voters(&self) -> usize {
        self.followers.iter().filter(|f| f.voter).count()
    }

    /// Every voter's last durable index, this replica's first.
    fn durable(&self) -> Vec<u64> {
        std::iter::once(self.durable_self).chain(self.followers.iter().filter(|f| f.voter).map(|f| f.durable)).collect()
    }

    /// Whether a majority of the current replica set durably holds everything logged when
    /// the set was taken (see [`ShardState::settled`](shardline_protocol::ShardState)).
    pub(super) fn settled(&self) -> bool {
        let mut durable = self.durable();
        durable.sort_unstable_by(|a, b| b.cmp(a));
        durable[majority(durable.len()) - 1] >= self.settle_mark
    }

    /// Fails every waiting write as indeterminate.
    pub(super) fn shut_down(self, shard: ShardId, effects: &mut Vec<Effect>) {
        let n: usize = self.waiters.values().map(Vec::len).sum();
        if n > 0 {
            warn!(%shard, writes = n, "stepping down with writes in flight: their outcome is unknown");
        }
        for waiter in self.waiters.into_values().flatten() {
            let result = Err(ErrorCode::Timeout(
                "the primary stepped down before the write committed; it may or may not be applied".into(),
            ));
            effects.push(Effect::WriteDone { token: waiter.token, result });
        }
    }

    /// The lowest follower position that log truncation must keep, ignoring followers
    /// so far behind that they will get a snapshot anyway.
    pub(super) fn slowest_follower(&self, applied: u64, snapshot_lag: u64) -> u64 {
        self.followers
            .iter()
            .map(|f| f.durable)
            .filter(|&d| applied.saturating_sub(d) <= snapshot_lag)
            .min()
            .unwrap_or(applied)
    }

    fn replicas(&self) -> usize {
        1 + self.voters()
    }
}

impl<D: Disk, T: TableStore> Replica<D, T> {
    /// Validates, logs and syncs a group of writes; each is answered through
    /// [`Effect::WriteDone`] with its token once it commits (or is refused). The same as
    /// [`Replica::stage_writes`] then [`Replica::sync_log`], with nothing carried out between.
    pub fn write_group(&mut self, now: Time, writes: Vec<(Operation, u64)>) {
        self.stage_writes(now, writes);
        self.sync_log(now);
    }

    /// Refuses a whole group with `e`; definitely only where a write was never logged
    /// here: a retry of one still pending (or applied) here may yet commit, or has.
    fn refuse_writes(&mut self, e: &ErrorCode, writes: Vec<(Operation, u64)>) {
        for (op, token) in writes {
            let logged = !self.cfg.regressions.definite_refusals
                && op.client_seq().is_some_and(|(client, seq)| self.logged_here(client, seq));
            let result = if logged {
                Err(ErrorCode::Timeout(format!("{e}; an earlier attempt of this write was logged and may commit")))
            } else {
                Err(e.clone())
            };
            self.effects.push(Effect::WriteDone { token, result });
        }
    }

    /// Validates and logs a group of writes and sends them to the followers, without the
    /// log's fsync: the driver carries out the sends first, then calls
    /// [`Replica::sync_log`], so the followers' fsyncs overlap the primary's own (Raft
    /// thesis §10.2.1). The primary counts itself toward a majority only once its fsync is
    /// done; a follower counts once it has answered that the entries are on its disk.
    ///
    /// The driver calls [`Replica::sync_log`] before it hands the replica anything else:
    /// staged entries never wait across another input.
    pub fn stage_writes(&mut self, now: Time, writes: Vec<(Operation, u64)>) {
        if let Some(e) = self.refusal(now) {
            self.refuse_writes(&e, writes);
            return;
        }
        let term = self.term;
        let mut next = self.wal.last().index + 1;
        let mut records = Vec::new();
        for (op, token) in writes {
            let client_seq = op.client_seq();
            if client_seq.is_some_and(|(client, seq)| self.take_retry(now, token, client, seq)) {
                continue;
            }
            let table = &self.table;
            let exists = |key| table.contains(key).map_err(internal);
            let op = match validate(op, &self.spec, &self.schema, &self.overlay, exists) {
                Ok(op) => op,
                Err(Refusal { error, after: Some(index) }) if index <= self.commit => {
                    // It rests on an entry already committed (not yet applied): final now.
                    self.effects.push(Effect::WriteDone { token, result: Err(error) });
                    continue;
                }
                Err(Refusal { error, after: Some(index) }) => {
                    let Role::Primary(p) = &mut self.role else { unreachable!("still primary") };
                    let waiter = Waiter { token, started: now, rows: 0, refusal: Some(error) };
                    p.waiters.entry(index).or_default().push(waiter);
                    continue;
                }
                Err(Refusal { error, after: None }) => {
                    self.effects.push(Effect::WriteDone { token, result: Err(error) });
                    continue;
                }
            };
            let rows = match &op {
                Operation::Write { rows, .. } => rows.len() as u64,
                _ => 1,
            };
            let entry = LogEntry { term, index: next, op };
            let record = match entry.encode() {
                // An entry that could not travel to a follower in an append would stall
                // replication for good: refused before it is logged, so definitely.
                Ok(r) if r.len() > self.room.entry() => {
                    let error = ErrorCode::too_large(r.len(), self.room.entry());
                    self.effects.push(Effect::WriteDone { token, result: Err(error) });
                    continue;
                }
                Ok(r) => r,
                Err(e) => {
                    self.effects.push(Effect::WriteDone { token, result: Err(ErrorCode::BadRequest(e.to_string())) });
                    continue;
                }
            };
            self.overlay.record(&entry.op, next);
            let Role::Primary(p) = &mut self.role else { unreachable!("still primary") };
            if let Some(client_seq) = client_seq {
                p.pending_clients.insert(client_seq, next);
            }
            p.waiters.entry(next).or_default().push(Waiter { token, started: now, rows, refusal: None });
            records.push((term, record));
            next += 1;
        }
        if !records.is_empty() {
            self.log(now, records);
        }
    }

    /// A write that retries (client, seq): answered, or set to wait for its first attempt's
    /// entry, if that attempt was logged here (pending, committed or applied); whether so.
    fn take_retry(&mut self, now: Time, token: u64, client: u64, seq: u64) -> bool {
        let Role::Primary(p) = &mut self.role else { unreachable!("refusal checked the role") };
        if let Some(&index) = p.pending_clients.get(&(client, seq)) {
            if index <= self.commit {
                // Committed (and acknowledged) but not applied yet: answered as a retry.
                let term = self.wal.mem().term_at(index).unwrap_or(self.term);
                let result = Ok(self.retry_answer(term, index));
                self.effects.push(Effect::WriteDone { token, result });
            } else {
                let waiter = Waiter { token, started: now, rows: 0, refusal: None };
                p.waiters.entry(index).or_default().push(waiter);
            }
            return true;
        }
        let result = match self.table.client_mark(client, seq) {
            Ok(Some(mark)) => Ok(self.retry_answer(mark.term, mark.index)),
            Ok(None) => return false,
            Err(e) => Err(internal(e)),
        };
        self.effects.push(Effect::WriteDone { token, result });
        true
    }

    /// The answer to a retry of a write committed at (`term`, `index`): nothing new applied.
    fn retry_answer(&self, term: u64, index: u64) -> ShardCommit {
        let mut replicas = vec![self.cfg.node.clone()];
        if let Role::Primary(p) = &self.role {
            replicas.extend(p.followers.iter().map(|f| f.addr.name.clone()));
        }
        ShardCommit { shard: self.spec.id, term, index, replicas, rows: 0 }
    }

    /// Each follower's lag at `now`, if this replica leads (else none).
    pub fn follower_lag(&self, now: Time) -> Vec<FollowerLag> {
        match &self.role {
            Role::Primary(p) => p.lag(self.wal.last().index, now),
            _ => Vec::new(),
        }
    }

    /// Whether an attempt of (client, seq) is in this replica's log, pending or applied.
    fn logged_here(&self, client: u64, seq: u64) -> bool {
        let pending = match &self.role {
            Role::Primary(p) => p.pending_clients.contains_key(&(client, seq)),
            _ => false,
        };
        let mem = self.wal.mem();
        let unapplied = (self.applied.index + 1..=mem.last().index)
            .filter_map(|i| mem.record(i))
            .any(|r| LogEntry::decode(&r).is_ok_and(|e| e.op.client_seq() == Some((client, seq))));
        pending || unapplied || self.table.client_mark(client, seq).ok().flatten().is_some()
    }

    /// Why writes are refused now, if they are: definite refusals, nothing logged.
    fn refusal(&self, now: Time) -> Option<ErrorCode> {
        let shard = self.spec.id;
        match &self.role {
            Role::Primary(p) => {
                let reachable = 1 + p.followers.iter().filter(|f| f.voter && f.reachable).count();
                let needed = majority(p.replicas());
                if self.lease_until.is_none_or(|t| now >= t) {
                    Some(ErrorCode::LeaseExpired { shard })
                } else if reachable < needed {
                    Some(ErrorCode::NoQuorum { shard, acked: reachable as u32, needed: needed as u32 })
                } else if p.handoff_until.is_some_and(|t| now < t) {
                    // A switchover is moving the lead: the balancer retries at the next primary.
                    Some(ErrorCode::NotPrimary { shard, term: self.term, primary: None })
                } else {
                    None
                }
            }
            Role::Follower { primary } => {
                Some(ErrorCode::NotPrimary { shard, term: self.term, primary: Some(primary.clone()) })
            }
            Role::Idle => Some(ErrorCode::NotPrimary { shard, term: self.term, primary: None }),
        }
    }

    /// Stages records in the log (in memory, not yet on disk) and sends them to the
    /// followers; [`Replica::sync_log`] makes them durable.
    pub(super) fn log(&mut self, now: Time, records: Vec<(u64, Bytes)>) {
        let n = records.len() as u64;
        if let Err(e) = self.wal.stage(records) {
            return self.log_failed("log append", &e);
        }
        self.unsynced += n;
        let last = self.wal.last().index;
        if let Role::Primary(p) = &mut self.role {
            let held = p.followers.iter().map(|f| f.durable).min().unwrap_or(last);
            p.appended.logged(last, now, held);
        }
        self.pump(now);
    }

    /// Writes and fsyncs what the log has staged (one fsync for the whole group), then
    /// commits what a majority now holds and acknowledges it. Nothing staged: nothing done.
    pub fn sync_log(&mut self, now: Time) {
        if self.unsynced == 0 {
            return;
        }
        let n = std::mem::take(&mut self.unsynced);
        let last = self.wal.last().index;
        match self.wal.sync() {
            Ok(_) => {
                self.syncs.fsyncs += 1;
                self.syncs.entries += n;
            }
            Err(e) => return self.log_failed("log sync", &e),
        }
        if let Role::Primary(p) = &mut self.role {
            p.durable_self = last;
        }
        self.advance_commit(now);
        self.pump(now);
    }

    /// Moves the commit index as far as a majority allows and acks; the apply comes later
    /// ([`Replica::apply_committed`]).
    pub(super) fn advance_commit(&mut self, now: Time) {
        let Role::Primary(p) = &self.role else { return };
        let durable: Vec<u64> = if self.cfg.regressions.commit_rule { vec![p.durable_self] } else { p.durable() };
        let mem = self.wal.mem();
        let new = quorum_commit(&durable, self.commit, self.term, |i| mem.term_at(i));
        if new <= self.commit {
            return;
        }
        self.commit = new;
        let Role::Primary(p) = &mut self.role else { return };
        let still_waiting = p.waiters.split_off(&(new + 1));
        let done = std::mem::replace(&mut p.waiters, still_waiting);
        for (index, waiters) in done {
            let replicas: Vec<String> = std::iter::once(self.cfg.node.clone())
                .chain(p.followers.iter().filter(|f| f.durable >= index).map(|f| f.addr.name.clone()))
                .collect();
            for w in waiters {
                let result = match w.refusal {
                    Some(refusal) => Err(refusal),
                    None => Ok(ShardCommit {
                        shard: self.spec.id,
                        term: self.term,
                        index,
                        replicas: replicas.clone(),
                        rows: w.rows,
                    }),
                };
                self.effects.push(Effect::WriteDone { token: w.token, result });
            }
        }
        if !p.ready && new >= p.noop_index {
            // The term's first commit is applied at once: a new primary serves (`any` reads
            // included) only with a table as current as the commit index it took over, never
            // one a crash rolled back.
            if let Err(e) = self.apply_to(new) {
                return self.storage_failed("apply", &e);
            }
            let Role::Primary(p) = &mut self.role else { return };
            p.ready = true;
            self.synced = true;
            info!(term = self.term, commit = new, "primary ready: its term's no-op is committed");
        }
        self.pump(now);
    }

    /// Answers writes that waited past the write timeout: logged, not committed, unknown.
    pub(super) fn expire_waiters(&mut self, now: Time) {
        let Role::Primary(p) = &mut self.role else { return };
        let timeout = self.cfg.write_timeout;
        for waiters in p.waiters.values_mut() {
            let (late, on_time): (Vec<_>, Vec<_>) =
                waiters.drain(..).partition(|w| now.saturating_sub(w.started) >= timeout);
            *waiters = on_time;
            for w in late {
                let result = Err(ErrorCode::Timeout(format!(
                    "not committed by a majority within {timeout:?}; it may still commit"
                )));
                self.effects.push(Effect::WriteDone { token: w.token, result });
            }
        }
        p.waiters.retain(|_, w| !w.is_empty());
    }
}
