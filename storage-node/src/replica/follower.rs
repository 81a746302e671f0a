//! A follower's side of replication: appends (Raft's AppendEntries) and snapshot chunks.
//!
//! Every message carries the sender's term: an older term is refused, a newer one is
//! adopted durably before anything else. Entries are checked against their CRC on
//! arrival, a divergent suffix is cut by term (never by commit mark), and the reply
//! reports the last index known to match the primary and to be on disk.

use bytes::Bytes;
use shardline_protocol::{
    log_entry, ClientSeqMark, ContactStamp, CopyDirection, CopyProgress, CopySize, ErrorCode, LogPosition,
    PeerResponse, Row, ServerAddr,
};
use tracing::{info, warn};

use super::fresh::Contact;
use super::room::{mark_size, row_size};
use super::rules::{plan_append, AppendPlan};
use super::{Replica, Role, Time};
use crate::disk::Disk;
use crate::error::internal;
use crate::store::TableStore;

/// An append, as the replica receives it.
#[derive(Debug)]
pub struct AppendRequest {
    /// The sender's term.
    pub term: u64,
    /// The sender's server name.
    pub primary: String,
    /// The entry just before `entries`.
    pub prev: LogPosition,
    /// Encoded log records.
    pub entries: Vec<Bytes>,
    /// The sender's commit index.
    pub commit: u64,
    /// This replica's own stamp, echoed by a primary holding its lease (see [`super::fresh`]).
    pub echo: Option<ContactStamp>,
}

/// A snapshot chunk, as the replica receives it.
#[derive(Debug)]
pub struct SnapshotChunk {
    /// The sender's term.
    pub term: u64,
    /// The sender's server name.
    pub primary: String,
    /// The last log entry the snapshot covers.
    pub last_included: LogPosition,
    /// The chunk's number, from 0.
    pub chunk: u32,
    /// Its rows.
    pub rows: Vec<Row>,
    /// Some of the client marks the snapshot includes (installed with the last chunk).
    pub marks: Vec<ClientSeqMark>,
    /// Whether it is the last chunk.
    pub done: bool,
    /// The whole snapshot as the sender estimates it.
    pub total: CopySize,
}

impl<D: Disk, T: TableStore> Replica<D, T> {
    /// Checks the sender's term; adopts a newer one and follows the sender.
    fn accept_primary(&mut self, term: u64, primary: &str) -> Result<(), ErrorCode> {
        if term < self.term {
            return Err(ErrorCode::StaleTerm { current: self.term, got: term });
        }
        if term > self.term {
            self.adopt_term(term).map_err(internal)?;
            self.step_down(Role::Idle);
        }
        match &self.role {
            Role::Primary(_) => {
                Err(ErrorCode::BadRequest(format!("{primary} claims term {term}, which this replica leads")))
            }
            Role::Follower { primary: p } if p.name == primary => Ok(()),
            _ => {
                info!(term, primary, "following the primary that contacted us");
                let addr = ServerAddr { name: primary.to_owned(), addr: String::new() };
                self.role = Role::Follower { primary: addr };
                Ok(())
            }
        }
    }

    /// An append from a primary (Raft's AppendEntries), applied before it returns: the same
    /// as [`Replica::receive_append`] then [`Replica::apply_committed`].
    pub fn on_append(&mut self, req: AppendRequest, now: Time) -> PeerResponse {
        let answer = self.receive_append(req, now);
        self.apply_committed();
        answer
    }

    /// One append, as a group of one (see [`Replica::receive_appends`]).
    pub fn receive_append(&mut self, req: AppendRequest, now: Time) -> PeerResponse {
        self.receive_appends(vec![req], now).pop().expect("one answer per append")
    }

    /// Appends from a primary (Raft's AppendEntries) that arrived together, logged with
    /// one fsync for the group but not applied: each answer says only what is on this
    /// replica's disk, so the driver sends them first and then calls
    /// [`Replica::apply_committed`], keeping the table's commit off the primary's
    /// acknowledgement path. An append that changes the term or cuts the log first makes
    /// what the group has staged durable and answers it, so no answer ever covers entries
    /// a later append of the group removed.
    pub fn receive_appends(&mut self, reqs: Vec<AppendRequest>, now: Time) -> Vec<PeerResponse> {
        let mut group = AppendGroup { answers: Vec::with_capacity(reqs.len()), held: Vec::new(), staged: 0 };
        for req in reqs {
            let answer = self.stage_append(req, now, &mut group);
            group.answers.push(answer);
        }
        self.flush_appends(&mut group);
        group.answers.into_iter().map(|a| a.expect("every append answered")).collect()
    }

    /// Checks one append of a group and stages its entries: its answer now (a refusal),
    /// or `None` when it waits for the group's fsync.
    fn stage_append(&mut self, req: AppendRequest, now: Time, group: &mut AppendGroup) -> Option<PeerResponse> {
        let stamp = self.stamp(now);
        if req.term > self.term {
            // What is staged answers at the term it was sent in, before this one is adopted.
            self.flush_appends(group);
        }
        if let Err(e) = self.accept_primary(req.term, &req.primary) {
            return Some(match e {
                ErrorCode::StaleTerm { current, .. } => PeerResponse::Appended {
                    term: current,
                    success: false,
                    last: self.wal.last(),
                    retry_from: 0,
                    stamp,
                },
                other => PeerResponse::Error(other),
            });
        }
        self.take_echo(req.echo, req.commit, now);
        let refuse = |task: &Self, retry_from: u64| PeerResponse::Appended {
            term: task.term,
            success: false,
            last: task.wal.last(),
            retry_from,
            stamp,
        };
        if self.installing {
            return Some(refuse(self, 1));
        }
        let incoming = match incoming_positions(&req) {
            Ok(incoming) => incoming,
            Err(refused) => return Some(PeerResponse::Error(refused)),
        };
        let plan = {
            let mem = self.wal.mem();
            plan_append(mem.base(), mem.last(), req.prev, &incoming, |i| mem.term_at(i))
        };
        let skip = match plan {
            AppendPlan::Reject { retry_from } => return Some(refuse(self, retry_from)),
            AppendPlan::Accept { truncate_from, skip } => {
                if let Some(from) = truncate_from {
                    // What the group staged first is answered (and counts toward the commit
                    // index) before anything is cut.
                    self.flush_appends(group);
                    if from <= self.commit {
                        warn!(from, commit = self.commit, "primary asked to cut a committed entry: refused");
                        let why = format!("primary asked to cut committed entry {from} (commit {})", self.commit);
                        return Some(PeerResponse::Error(ErrorCode::Internal(why)));
                    }
                    info!(from, "cutting a divergent log suffix");
                    if let Err(e) = self.wal.truncate_from(from) {
                        self.log_failed("log truncate", &e);
                        return Some(PeerResponse::Error(internal(e)));
                    }
                }
                skip
            }
        };
        let records: Vec<(u64, Bytes)> =
            incoming.iter().zip(req.entries).skip(skip).map(|(pos, r)| (pos.term, r)).collect();
        let n = records.len() as u64;
        if n > 0 {
            if let Err(e) = self.wal.stage(records) {
                self.log_failed("log append", &e);
                let error = internal(e);
                group.fail(&error);
                return Some(PeerResponse::Error(error));
            }
            group.staged += n;
        }
        let matched = incoming.last().copied().unwrap_or(req.prev);
        group.held.push(Held { slot: group.answers.len(), matched, commit: req.commit, stamp });
        None
    }

    /// Makes what the group staged durable with one fsync, then answers the appends held
    /// for it and moves the commit index as they say.
    fn flush_appends(&mut self, group: &mut AppendGroup) {
        if group.staged > 0 {
            let n = std::mem::take(&mut group.staged);
            if let Err(e) = self.wal.sync() {
                self.log_failed("log append", &e);
                return group.fail(&internal(e));
            }
            self.syncs.fsyncs += 1;
            self.syncs.entries += n;
        }
        for held in std::mem::take(&mut group.held) {
            let matched = held.matched;
            let new_commit =
                if self.cfg.regressions.apply_uncommitted { matched.index } else { held.commit.min(matched.index) };
            if new_commit > self.commit {
                self.commit = new_commit;
            }
            self.primary_commit = Some(held.commit);
            group.answers[held.slot] = Some(PeerResponse::Appended {
                term: self.term,
                success: true,
                last: matched,
                retry_from: 0,
                stamp: held.stamp,
            });
        }
    }

    /// Keeps a primary's echo of this run's stamp as the latest proof of contact: the
    /// newest stamp wins (appends may be answered out of order after a timeout).
    fn take_echo(&mut self, echo: Option<ContactStamp>, commit: u64, now: Time) {
        let Some(echo) = echo.filter(|e| e.run == self.cfg.incarnation) else { return };
        let at = Time::from_nanos(echo.at_nanos);
        if at > now || self.contact.is_some_and(|c| c.at > at || (c.at == at && c.commit >= commit)) {
            return;
        }
        self.contact = Some(Contact { at, commit });
    }

    /// Applies the committed entries the table lacks, in one batch: a primary's (it
    /// acknowledged them at commit), or what a primary's appends said is committed and this
    /// log holds. A follower whose table then has everything its primary had committed
    /// serves reads again. The driver calls this when it chooses (see the shard task's
    /// apply policy); a `primary` read waits for it.
    pub fn apply_committed(&mut self) {
        if matches!(self.role, Role::Primary(_)) {
            if self.commit > self.applied.index {
                if let Err(e) = self.apply_to(self.commit) {
                    self.storage_failed("apply", &e);
                }
            }
            return;
        }
        if !matches!(self.role, Role::Follower { .. }) {
            return;
        }
        if self.commit > self.applied.index {
            if let Err(e) = self.apply_to(self.commit) {
                return self.storage_failed("apply", &e);
            }
        }
        // Only right after an append that succeeded: its commit index is the primary's now.
        let Some(primary_commit) = self.primary_commit.take() else { return };
        if self.applied.index >= primary_commit && (self.fault.is_some() || !self.synced) {
            if self.fault.is_some() {
                // Only now may a restart find the log whole: it holds all the primary committed.
                if let Err(e) = self.wal.damage_repaired() {
                    return self.log_failed("log repair record", &e);
                }
                info!(applied = self.applied.index, "log repaired from the primary: serving again");
            } else {
                info!(applied = self.applied.index, "caught up with the primary's commit index: serving");
            }
            self.fault = None;
            self.synced = true;
        }
    }

    /// A chunk of a snapshot from a primary.
    pub fn on_snapshot(&mut self, chunk: SnapshotChunk) -> PeerResponse {
        if let Err(e) = self.accept_primary(chunk.term, &chunk.primary) {
            return PeerResponse::Error(e);
        }
        let result = (|| -> Result<(), crate::store::StoreError> {
            if chunk.chunk == 0 {
                info!(upto = chunk.last_included.index, "installing a snapshot");
                self.table.begin_install()?;
                self.installing = true;
                self.install = Some((chunk.term, chunk.last_included, 0));
                self.install_marks.clear();
                self.receiving = Some(CopyProgress {
                    direction: CopyDirection::Receiving,
                    peer: chunk.primary.clone(),
                    upto: chunk.last_included.index,
                    copied: CopySize::default(),
                    total: chunk.total,
                });
                self.wal.reset(chunk.last_included)?;
                self.applied = LogPosition::default();
                self.commit = 0;
                self.overlay.clear();
            } else if self.install != Some((chunk.term, chunk.last_included, chunk.chunk))
                && !(self.cfg.regressions.chunk_identity && self.install.is_some())
            {
                // Chunks name their snapshot (term, last included entry) and their place in
                // it: a chunk of another snapshot, or out of order, is refused.
                let why = format!(
                    "snapshot chunk {} of ({}, {}) does not continue the install under way ({:?})",
                    chunk.chunk, chunk.term, chunk.last_included.index, self.install
                );
                return Err(std::io::Error::other(why).into());
            }
            self.table.install_rows(&chunk.rows)?;
            if let Some(progress) = &mut self.receiving {
                let bytes = chunk.rows.iter().map(row_size).chain(chunk.marks.iter().map(mark_size)).sum::<usize>();
                progress.copied.rows += chunk.rows.len() as u64;
                progress.copied.bytes += bytes as u64;
                progress.total = chunk.total;
            }
            // Marks come after the rows, spread over as many chunks as they need to fit
            // frames; they take effect together, with the last chunk.
            self.install_marks.extend(chunk.marks);
            if let Some(install) = &mut self.install {
                install.2 += 1;
            }
            if chunk.done {
                let marks = std::mem::take(&mut self.install_marks);
                self.table.finish_install(chunk.last_included, &marks)?;
                self.wal.damage_repaired()?;
                self.install = None;
                self.receiving = None;
                self.applied = chunk.last_included;
                self.commit = self.commit.max(chunk.last_included.index);
                self.installing = false;
                self.fault = None;
                self.synced = true;
                info!(upto = chunk.last_included.index, "snapshot installed");
            }
            Ok(())
        })();
        match result {
            Ok(()) => PeerResponse::SnapshotStored { term: self.term, chunk: chunk.chunk },
            Err(e) => PeerResponse::Error(internal(e)),
        }
    }
}

/// Appends that arrived together, as the follower works through them.
struct AppendGroup {
    /// Each append's answer, once known.
    answers: Vec<Option<PeerResponse>>,
    /// Appends whose entries are staged, answered once the group's fsync is done.
    held: Vec<Held>,
    /// Entries staged since the last fsync.
    staged: u64,
}

/// An append waiting for its group's fsync.
struct Held {
    /// Its place in the group.
    slot: usize,
    /// The last entry it showed matches the primary's log.
    matched: LogPosition,
    /// The primary's commit index it carried.
    commit: u64,
    stamp: ContactStamp,
}

impl AppendGroup {
    /// The log failed under the appends held: each is answered with `error`, as nothing
    /// they staged may be on disk.
    fn fail(&mut self, error: &ErrorCode) {
        for held in std::mem::take(&mut self.held) {
            self.answers[held.slot] = Some(PeerResponse::Error(error.clone()));
        }
        self.staged = 0;
    }
}

/// The positions of an append's entries, each checked whole and in sequence after `prev`.
fn incoming_positions(req: &AppendRequest) -> Result<Vec<LogPosition>, ErrorCode> {
    let mut incoming = Vec::with_capacity(req.entries.len());
    for (i, record) in req.entries.iter().enumerate() {
        match log_entry::verify(record) {
            Ok((term, index)) if index == req.prev.index + 1 + i as u64 => incoming.push(LogPosition { term, index }),
            Ok((_, index)) => {
                return Err(ErrorCode::BadRequest(format!("entry {index} out of sequence after {}", req.prev.index)))
            }
            Err(e) => {
                warn!(%e, "entry damaged in transit");
                return Err(ErrorCode::BadRequest(format!("entry damaged in transit: {e}")));
            }
        }
    }
    Ok(incoming)
}
