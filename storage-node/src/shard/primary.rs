//! The primary's write path: validate, log, replicate, commit on a majority, apply, ack.
//!
//! A group of writes becomes consecutive log entries, staged (so replication tasks can
//! send them at once), then synced with one fsync. The commit index moves when a majority
//! of replicas (the primary included) hold an entry of the current term durably; entries
//! up to it are applied to the table and only then acknowledged, so a read after an ack
//! sees the write.
//!
//! Refusals are definite: a write refused (`NotPrimary`, `LeaseExpired`, `NoQuorum`, a
//! validation error) was never logged. A logged write that does not commit in time is
//! answered `Timeout`: its outcome is unknown, and a retry with the same (client, seq)
//! is applied at most once.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shardline_protocol::{ControlResponse, ErrorCode, LogEntry, Operation, ServerAddr, ShardCommit, ShardId};
use tokio::sync::{oneshot, watch};
use tokio::task::{block_in_place, JoinHandle};
use tracing::{info, warn, Instrument};

use super::peer::PeerTask;
use super::rules::{majority, quorum_commit};
use super::task::{Role, ShardTask};
use super::validate::validate;

/// A write's reply channel.
pub(super) type Reply = oneshot::Sender<Result<ShardCommit, ErrorCode>>;

/// Tells replication tasks apart across primary terms.
static EPOCH: AtomicU64 = AtomicU64::new(1);

/// A write waiting for its entry to commit.
#[derive(Debug)]
pub(super) struct Waiter {
    reply: Reply,
    started: Instant,
    rows: u64,
}

/// One follower as the primary sees it.
#[derive(Debug)]
pub(super) struct FollowerSlot {
    addr: ServerAddr,
    /// The follower's last entry known to be on its disk and matching ours.
    durable: u64,
    /// Whether its replication task heard from it recently.
    reachable: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

/// The state a replica holds only while it leads.
#[derive(Debug)]
pub(super) struct PrimaryState {
    epoch: u64,
    followers: Vec<FollowerSlot>,
    /// (last index, commit index), watched by the replication tasks.
    progress: watch::Sender<(u64, u64)>,
    waiters: BTreeMap<u64, Vec<Waiter>>,
    pending_clients: HashMap<(u64, u64), u64>,
    durable_self: u64,
    noop_index: u64,
    /// The no-op of this term has committed: everything before it is applied.
    pub ready: bool,
}

impl PrimaryState {
    /// Stops replication and fails every waiting write as indeterminate.
    pub(super) fn shut_down(self, shard: ShardId) {
        for f in &self.followers {
            f.task.abort();
        }
        let n: usize = self.waiters.values().map(Vec::len).sum();
        if n > 0 {
            warn!(%shard, writes = n, "stepping down with writes in flight: their outcome is unknown");
        }
        for waiter in self.waiters.into_values().flatten() {
            let _ = waiter.reply.send(Err(ErrorCode::Timeout(
                "the primary stepped down before the write committed; it may or may not be applied".into(),
            )));
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
        1 + self.followers.len()
    }
}

impl ShardTask {
    /// Takes the primary role at `term` and commits a no-op in it.
    pub(super) fn become_primary(&mut self, term: u64, followers: Vec<ServerAddr>, lease_ms: u64) -> ControlResponse {
        if term < self.term {
            return ControlResponse::Error(ErrorCode::StaleTerm { current: self.term, got: term });
        }
        if let Some((_, why)) = &self.fault {
            return ControlResponse::Error(ErrorCode::Unavailable { shard: self.spec.id, reason: why.clone() });
        }
        if self.installing {
            let reason = "installing a snapshot".into();
            return ControlResponse::Error(ErrorCode::Unavailable { shard: self.spec.id, reason });
        }
        let lease_until = Instant::now() + Duration::from_millis(lease_ms);
        if term == self.term {
            if let Role::Primary(p) = &self.role {
                let same = p.followers.iter().map(|f| &f.addr).eq(followers.iter());
                if !same {
                    // A new follower set at the same term (servers added or removed): swap
                    // the replication tasks, keep the log, the waiters and what is known.
                    let known: HashMap<String, u64> =
                        p.followers.iter().map(|f| (f.addr.name.clone(), f.durable)).collect();
                    let epoch = EPOCH.fetch_add(1, Ordering::Relaxed);
                    let watch_rx = p.progress.subscribe();
                    let slots: Vec<FollowerSlot> = followers
                        .into_iter()
                        .enumerate()
                        .map(|(slot, addr)| {
                            let durable = known.get(&addr.name).copied().unwrap_or(0);
                            self.spawn_follower(epoch, slot, addr, watch_rx.clone(), durable)
                        })
                        .collect();
                    info!(term, followers = slots.len(), "follower set changed");
                    let Role::Primary(p) = &mut self.role else { unreachable!("checked above") };
                    for f in std::mem::replace(&mut p.followers, slots) {
                        f.task.abort();
                    }
                    p.epoch = epoch;
                }
                self.lease_until = Some(lease_until);
                self.advance_commit();
                self.publish();
                return ControlResponse::Ok;
            }
        }
        if term > self.term {
            if let Err(e) = self.adopt_term(term) {
                return ControlResponse::Error(ErrorCode::Internal(e.to_string()));
            }
        }
        self.step_down(Role::Idle);

        // Entries logged but not applied (from earlier terms) commit with our no-op:
        // writes validated from now on must see their effects.
        let pending: Vec<Bytes> = {
            let mem = self.log.read().expect("log lock");
            (self.applied.index + 1..=mem.last().index).filter_map(|i| mem.record(i)).collect()
        };
        // Retries of those writes must find them too, not collide with them.
        let mut inherited = HashMap::new();
        for record in pending {
            match LogEntry::decode(&record) {
                Ok(e) => {
                    self.overlay.record(&e.op, e.index);
                    if let Some(client_seq) = e.op.client_seq() {
                        inherited.insert(client_seq, e.index);
                    }
                }
                Err(e) => return ControlResponse::Error(ErrorCode::Internal(e.to_string())),
            }
        }

        let epoch = EPOCH.fetch_add(1, Ordering::Relaxed);
        let last = self.wal.last().index;
        let (progress, watch_rx) = watch::channel((last, self.commit));
        let slots: Vec<FollowerSlot> = followers
            .into_iter()
            .enumerate()
            .map(|(slot, addr)| self.spawn_follower(epoch, slot, addr, watch_rx.clone(), 0))
            .collect();
        info!(term, followers = slots.len(), last, "leading");
        self.role = Role::Primary(Box::new(PrimaryState {
            epoch,
            followers: slots,
            progress,
            waiters: BTreeMap::new(),
            pending_clients: inherited,
            durable_self: last,
            noop_index: last + 1,
            ready: false,
        }));
        self.lease_until = Some(lease_until);
        let noop = LogEntry { term, index: last + 1, op: Operation::Noop };
        match noop.encode() {
            Ok(record) => self.log_and_sync(vec![(term, record)]),
            Err(e) => return ControlResponse::Error(ErrorCode::Internal(e.to_string())),
        }
        self.advance_commit();
        self.publish();
        ControlResponse::Ok
    }

    /// Starts replicating to one follower.
    fn spawn_follower(
        &self,
        epoch: u64,
        slot: usize,
        addr: ServerAddr,
        progress: watch::Receiver<(u64, u64)>,
        durable: u64,
    ) -> FollowerSlot {
        let reachable = Arc::new(AtomicBool::new(true));
        let peer = PeerTask {
            shard: self.spec.id,
            term: self.term,
            me: self.node.clone(),
            epoch,
            slot,
            addr: addr.clone(),
            log: self.log.clone(),
            table: self.table.clone(),
            progress,
            events: self.tx.clone(),
            reachable: reachable.clone(),
            cfg: self.cfg.clone(),
        };
        let span = tracing::info_span!("replicate", to = %addr.name);
        let task = tokio::spawn(peer.run().instrument(span));
        FollowerSlot { addr, durable, reachable, task }
    }

    /// Validates, logs and syncs a group of writes; acks come when they commit.
    pub(super) fn write_group(&mut self, writes: Vec<(Operation, Instant, Reply)>) {
        let shard = self.spec.id;
        let refusal = match &self.role {
            Role::Primary(p) => {
                let reachable = 1 + p.followers.iter().filter(|f| f.reachable.load(Ordering::Relaxed)).count();
                let needed = majority(p.replicas());
                if self.lease_until.is_none_or(|t| Instant::now() >= t) {
                    Some(ErrorCode::LeaseExpired { shard })
                } else if reachable < needed {
                    Some(ErrorCode::NoQuorum { shard, acked: reachable as u32, needed: needed as u32 })
                } else {
                    None
                }
            }
            Role::Follower { primary } => {
                Some(ErrorCode::NotPrimary { shard, term: self.term, primary: Some(primary.clone()) })
            }
            Role::Idle => Some(ErrorCode::NotPrimary { shard, term: self.term, primary: None }),
        };
        if let Some(e) = refusal {
            for (_, _, reply) in writes {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
        let Role::Primary(p) = &mut self.role else { unreachable!("checked above") };
        let term = self.term;
        let mut next = self.log.read().expect("log lock").last().index + 1;
        let mut records = Vec::new();
        for (op, started, reply) in writes {
            let client_seq = op.client_seq();
            if let Some((client_id, seq)) = client_seq {
                if let Some(&index) = p.pending_clients.get(&(client_id, seq)) {
                    p.waiters.entry(index).or_default().push(Waiter { reply, started, rows: 0 });
                    continue;
                }
                match self.table.client_mark(client_id, seq) {
                    Ok(Some(mark)) => {
                        let replicas = std::iter::once(self.node.clone())
                            .chain(p.followers.iter().map(|f| f.addr.name.clone()))
                            .collect();
                        let commit = ShardCommit { shard, term: mark.term, index: mark.index, replicas, rows: 0 };
                        let _ = reply.send(Ok(commit));
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let _ = reply.send(Err(ErrorCode::Internal(e.to_string())));
                        continue;
                    }
                }
            }
            let table = &self.table;
            let exists = |key| table.contains(key).map_err(|e| ErrorCode::Internal(e.to_string()));
            let op = match validate(op, &self.spec, &self.schema, &self.overlay, exists) {
                Ok(op) => op,
                Err(e) => {
                    let _ = reply.send(Err(e));
                    continue;
                }
            };
            let rows = match &op {
                Operation::Write { rows, .. } => rows.len() as u64,
                _ => 1,
            };
            let entry = LogEntry { term, index: next, op };
            let record = match entry.encode() {
                Ok(r) => r,
                Err(e) => {
                    let _ = reply.send(Err(ErrorCode::BadRequest(e.to_string())));
                    continue;
                }
            };
            self.overlay.record(&entry.op, next);
            if let Some(client_seq) = client_seq {
                p.pending_clients.insert(client_seq, next);
            }
            p.waiters.entry(next).or_default().push(Waiter { reply, started, rows });
            records.push((term, record));
            next += 1;
        }
        if !records.is_empty() {
            self.log_and_sync(records);
            self.advance_commit();
            self.publish();
        }
    }

    /// Stages records (replication starts at once), then fsyncs them.
    fn log_and_sync(&mut self, records: Vec<(u64, Bytes)>) {
        let n = records.len() as u64;
        if let Err(e) = self.wal.stage(records) {
            return self.storage_failed("log append", &e);
        }
        let last = self.wal.last().index;
        if let Role::Primary(p) = &self.role {
            p.progress.send_replace((last, self.commit));
        }
        match block_in_place(|| self.wal.sync()) {
            Ok(_) => {
                let mut c = self.shared.counters.lock().expect("counters lock");
                c.fsyncs += 1;
                c.entries_synced += n;
            }
            Err(e) => return self.storage_failed("log sync", &e),
        }
        if let Role::Primary(p) = &mut self.role {
            p.durable_self = last;
        }
    }

    /// A replication task reports a follower's durable position.
    pub(super) fn on_progress(&mut self, epoch: u64, slot: usize, durable: u64) {
        let Role::Primary(p) = &mut self.role else {
            return;
        };
        if p.epoch != epoch {
            return;
        }
        if let Some(f) = p.followers.get_mut(slot) {
            f.durable = durable;
        }
        self.advance_commit();
    }

    /// Moves the commit index as far as a majority allows, applies, and acks.
    pub(super) fn advance_commit(&mut self) {
        let Role::Primary(p) = &self.role else { return };
        let durable: Vec<u64> = std::iter::once(p.durable_self).chain(p.followers.iter().map(|f| f.durable)).collect();
        let new = {
            let mem = self.log.read().expect("log lock");
            quorum_commit(&durable, self.commit, self.term, |i| mem.term_at(i))
        };
        if new <= self.commit {
            return;
        }
        if let Err(e) = self.apply_to(new) {
            return self.storage_failed("apply", &e);
        }
        self.commit = new;
        let Role::Primary(p) = &mut self.role else {
            return;
        };
        let still_waiting = p.waiters.split_off(&(new + 1));
        let done = std::mem::replace(&mut p.waiters, still_waiting);
        p.pending_clients.retain(|_, index| *index > new);
        for (index, waiters) in done {
            let replicas: Vec<String> = std::iter::once(self.node.clone())
                .chain(p.followers.iter().filter(|f| f.durable >= index).map(|f| f.addr.name.clone()))
                .collect();
            for w in waiters {
                let commit = ShardCommit {
                    shard: self.spec.id,
                    term: self.term,
                    index,
                    replicas: replicas.clone(),
                    rows: w.rows,
                };
                let _ = w.reply.send(Ok(commit));
            }
        }
        if !p.ready && new >= p.noop_index {
            p.ready = true;
            self.synced = true;
            info!(term = self.term, commit = new, "primary ready: its term's no-op is committed");
        }
        p.progress.send_replace((self.wal.last().index, new));
        self.publish();
    }

    /// Answers writes that waited past the write timeout: logged, not committed, unknown.
    pub(super) fn expire_waiters(&mut self) {
        let Role::Primary(p) = &mut self.role else {
            return;
        };
        let timeout = self.cfg.write_timeout;
        let now = Instant::now();
        for waiters in p.waiters.values_mut() {
            let (late, on_time): (Vec<_>, Vec<_>) =
                waiters.drain(..).partition(|w| now.duration_since(w.started) >= timeout);
            *waiters = on_time;
            for w in late {
                let _ = w.reply.send(Err(ErrorCode::Timeout(format!(
                    "not committed by a majority within {timeout:?}; it may still commit"
                ))));
            }
        }
        p.waiters.retain(|_, w| !w.is_empty());
    }
}
