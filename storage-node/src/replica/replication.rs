//! Replication to each follower, as the primary sees it.
//!
//! One message is in flight per follower. The primary sends the entries a follower lacks
//! (from `next`), learns from each answer how far the follower's log matches its own,
//! and counts majorities from that. A refusal moves `next` back to where the follower
//! asks; a follower too far behind, or behind the log's truncated prefix, gets a snapshot
//! of the table instead, read from a pinned view a chunk at a time as it is sent
//! ([`super::copy`]) and paced to the configured rate ([`super::pace`]). Appends and
//! chunks are cut by bytes to fit a frame ([`super::room`]). With nothing to send, an
//! empty append goes out every sync heartbeat: it carries the commit index and shows the
//! follower is alive.

use shardline_protocol::{
    ContactStamp, CopyProgress, ErrorCode, LogPosition, PeerRequest, PeerResponse, ServerAddr, ShardId,
};
use tracing::{debug, info, warn};

use super::copy::{Cut, Outgoing, SNAPSHOT_CHUNK_ROWS};
use super::pace::Pacer;
use super::room::MAX_BATCH_ENTRIES;
use super::{Effect, Link, Replica, Role, Time};
use crate::disk::Disk;
use crate::store::{SnapshotSource, StoreError, TableStore};

/// What the one message in flight to a follower was.
#[derive(Debug, Clone, Copy)]
enum InFlight {
    /// An append whose last entry was `sent_last`.
    Append { sent_last: u64 },
    /// Snapshot chunk `chunk`.
    Snapshot { chunk: usize },
}

/// One follower as the primary sees it.
#[derive(Debug)]
pub(super) struct Follower {
    pub addr: ServerAddr,
    /// Whether it counts toward majorities (a learner, still catching up, does not).
    pub voter: bool,
    /// The follower's last entry known to be on its disk and matching ours.
    pub durable: u64,
    /// Whether it answered recently.
    pub reachable: bool,
    next: u64,
    seq: u64,
    in_flight: Option<(u64, Time, InFlight)>,
    last_sent: Option<Time>,
    sent_commit: u64,
    snapshot: Option<Outgoing>,
    /// The follower's newest stamp, to echo (see [`super::fresh`]).
    stamp: Option<ContactStamp>,
}

impl Follower {
    /// A follower (a voter or a learner) to send entries from `next`, known to hold `durable`.
    pub(super) fn new(addr: ServerAddr, voter: bool, next: u64, durable: u64) -> Follower {
        Follower {
            addr,
            voter,
            durable,
            reachable: true,
            next,
            seq: 0,
            in_flight: None,
            last_sent: None,
            sent_commit: 0,
            snapshot: None,
            stamp: None,
        }
    }
}

impl<D: Disk, T: TableStore> Replica<D, T> {
    /// Sends each follower what it needs now, where nothing is in flight to it.
    pub(super) fn pump(&mut self, now: Time) {
        let Role::Primary(p) = &self.role else { return };
        let count = p.followers.len();
        for slot in 0..count {
            self.pump_one(now, slot);
        }
    }

    fn pump_one(&mut self, now: Time, slot: usize) {
        let last = self.wal.last().index;
        let (commit, term, me) = (self.commit, self.term, self.cfg.node.clone());
        let (shard, beat, timeout, lag) =
            (self.spec.id, self.cfg.sync_heartbeat, self.cfg.peer_timeout, self.cfg.snapshot_lag);
        let room = self.room;
        let by_rows = self.cfg.regressions.chunks_by_rows;
        let applied = self.applied.index;
        // Only a primary that holds its lease and is ready may vouch that its commit index
        // covers every write acknowledged before the follower's stamp.
        let vouches = self.lease_until.is_some_and(|t| now < t) && self.ready();
        let Role::Primary(p) = &mut self.role else { return };
        let epoch = p.epoch;
        let f = &mut p.followers[slot];
        if let Some((_, sent, _)) = f.in_flight {
            if now.saturating_sub(sent) < timeout {
                return;
            }
            if f.reachable {
                warn!(to = %f.addr.name, "follower unreachable: no answer in time");
            }
            f.reachable = false;
            f.in_flight = None;
        }
        let due = f.last_sent.is_none_or(|t| now.saturating_sub(t) >= beat);
        let wants = f.snapshot.is_some() || f.next <= last || f.sent_commit < commit;
        if !due && (!wants || !f.reachable) {
            return;
        }
        let mem = self.wal.mem();
        let prev_index = f.next - 1;
        let prev_term = mem.term_at(prev_index);
        // A snapshot when the log no longer holds what the follower needs, or when it is far
        // behind and the table is ahead of it. A primary whose table is itself behind (rolled
        // back in a crash, re-applied only as entries commit) sends entries instead: its
        // snapshot would hold nothing the follower lacks, and it would be sent again forever.
        let far_behind = last.saturating_sub(prev_index) > lag && applied > prev_index;
        if f.snapshot.is_none() && (prev_term.is_none() || far_behind) {
            if !self.pacer.ready(now) {
                // Pin the view only once its first chunk may leave: it is then as fresh as
                // it can be, rather than one taken earlier and held back.
                return;
            }
            let cut = if by_rows { Cut::Rows(SNAPSHOT_CHUNK_ROWS) } else { Cut::Bytes(room.chunk()) };
            if !f.begin_snapshot(self.table.snapshot(), cut) {
                return;
            }
        }
        let (request, kind) = if f.snapshot.is_some() {
            let header = SnapshotHeader { shard, term, primary: me };
            match f.next_snapshot_chunk(&mut self.pacer, now, header) {
                Some(message) => message,
                None => return,
            }
        } else {
            let entries = mem.records_from(f.next, MAX_BATCH_ENTRIES, room.batch());
            let sent_last = prev_index + entries.len() as u64;
            let prev = LogPosition { term: prev_term.unwrap_or(0), index: prev_index };
            let echo = f.stamp.filter(|_| vouches);
            let request = PeerRequest::Append { shard, term, primary: me, prev, entries, commit, echo };
            (request, InFlight::Append { sent_last })
        };
        f.seq += 1;
        let link = Link { epoch, slot, seq: f.seq };
        f.in_flight = Some((f.seq, now, kind));
        f.last_sent = Some(now);
        f.sent_commit = commit;
        self.effects.push(Effect::Send { link, to: f.addr.clone(), request });
    }

    /// A follower answered the message `link` (or the call failed: `Err`).
    pub fn on_peer_answer(&mut self, now: Time, link: Link, answer: Result<PeerResponse, String>) {
        let Role::Primary(p) = &mut self.role else { return };
        if p.epoch != link.epoch {
            return;
        }
        let Some(f) = p.followers.get_mut(link.slot) else { return };
        let Some((seq, _, kind)) = f.in_flight else { return };
        if seq != link.seq {
            return;
        }
        f.in_flight = None;
        if let Ok(PeerResponse::Appended { stamp, .. }) = &answer {
            f.stamp = Some(*stamp);
        }
        let mut progress = None;
        match (answer, kind) {
            (Ok(PeerResponse::Appended { term, .. }), _) if term > self.term => {
                return self.on_higher_term(term);
            }
            (Ok(PeerResponse::Appended { success: true, last: matched, .. }), InFlight::Append { sent_last }) => {
                f.reachable = true;
                f.next = matched.index.max(sent_last) + 1;
                progress = Some(matched.index);
            }
            (Ok(PeerResponse::Appended { success: false, retry_from, .. }), InFlight::Append { .. }) => {
                f.reachable = true;
                debug!(next = f.next, retry_from, "follower refused: moving back");
                f.next = retry_from.clamp(1, f.next.max(1));
                // It came back with less (a wiped directory, a log cut at corruption, a
                // snapshot reset): it holds nothing from `next` on, whatever it held before.
                if f.durable >= f.next {
                    f.durable = f.next - 1;
                }
            }
            (Ok(PeerResponse::SnapshotStored { chunk, .. }), InFlight::Snapshot { chunk: sent })
                if chunk as usize == sent =>
            {
                f.reachable = true;
                let out = f.snapshot.as_mut().expect("a snapshot in flight");
                if out.stored(sent) {
                    let (included, copied) = (out.included().index, out.progress(&f.addr.name).copied);
                    info!(to = %f.addr.name, upto = included, rows = copied.rows, bytes = copied.bytes, "snapshot sent");
                    f.snapshot = None;
                    f.next = included + 1;
                    progress = Some(included);
                }
            }
            (Ok(PeerResponse::Error(e @ ErrorCode::UnknownShard { .. })), _) => {
                // Its node has no replica of the shard (a wiped or replaced directory not yet
                // re-created): it holds nothing, whatever it acknowledged before, and must not
                // be counted toward a majority at its old position.
                f.durable = 0;
                f.next = 1;
                f.failed(&ErrorCode::to_string(&e));
            }
            (Ok(PeerResponse::Error(e)), _) => f.failed(&ErrorCode::to_string(&e)),
            (Ok(other), _) => f.failed(&format!("unexpected answer {other:?}")),
            (Err(e), _) => f.failed(&e),
        }
        if let Some(durable) = progress {
            f.durable = durable;
            self.advance_commit(now);
        }
        self.pump(now);
    }
}

/// What every snapshot chunk a primary sends names besides its contents.
struct SnapshotHeader {
    shard: ShardId,
    term: u64,
    primary: String,
}

impl Follower {
    /// Starts a snapshot from the pinned view `source`: whether there is one to send.
    fn begin_snapshot(&mut self, source: Result<impl SnapshotSource, StoreError>, cut: Cut) -> bool {
        match source {
            Ok(source) => {
                let out = Outgoing::new(source, cut);
                let (upto, rows) = (out.included().index, out.total().rows);
                info!(to = %self.addr.name, upto, rows, "sending a snapshot");
                self.snapshot = Some(out);
                true
            }
            Err(e) => {
                warn!(%e, "could not read a snapshot");
                false
            }
        }
    }

    /// The snapshot chunk to send this follower now, or `None`: held back to the snapshot
    /// rate (a later tick sends it), or the view failed to read (the snapshot starts over).
    fn next_snapshot_chunk(
        &mut self,
        pacer: &mut Pacer,
        now: Time,
        header: SnapshotHeader,
    ) -> Option<(PeerRequest, InFlight)> {
        let out = self.snapshot.as_mut()?;
        if !pacer.ready(now) {
            return None;
        }
        let chunk = match out.read_next() {
            Ok(chunk) => chunk,
            Err(e) => {
                warn!(%e, "could not read a snapshot chunk: starting the snapshot over");
                self.snapshot = None;
                return None;
            }
        };
        pacer.sent(now, chunk.bytes);
        let number = out.next_chunk();
        let request = PeerRequest::Snapshot {
            shard: header.shard,
            term: header.term,
            primary: header.primary,
            last_included: out.included(),
            chunk: number as u32,
            rows: chunk.rows,
            marks: chunk.marks,
            done: chunk.done,
            total: out.total(),
        };
        Some((request, InFlight::Snapshot { chunk: number }))
    }

    fn failed(&mut self, why: &str) {
        if self.reachable {
            warn!(to = %self.addr.name, why, "follower unreachable");
        }
        self.reachable = false;
        // A snapshot starts over: the follower may have lost what it stored.
        self.snapshot = None;
    }
}

impl Follower {
    /// The snapshot copy under way to this follower, if any.
    pub(super) fn copy(&self) -> Option<CopyProgress> {
        self.snapshot.as_ref().map(|out| out.progress(&self.addr.name))
    }
}
