//! Replication to each follower, as the primary sees it.
//!
//! Appends are pipelined: up to [`WINDOW_MESSAGES`] messages and [`WINDOW_BYTES`] bytes of
//! entries are in flight to a follower at once (Raft thesis §10.2.1), each sent from `next`,
//! which moves past what was sent without waiting for the answer. Answers are cumulative:
//! a success says how far the follower's log matches the primary's and is on its disk,
//! which covers every earlier message, and majorities are counted from that. A refusal,
//! a failed call or a message unanswered in time drops the whole window and moves `next`
//! back (to where the follower asks, or to where the first unanswered message started);
//! answers to dropped messages are ignored by their sequence number. An unreachable
//! follower, or one being sent a snapshot, gets one message at a time. A follower too far
//! behind, or behind the log's truncated prefix, gets a snapshot of the table instead,
//! read from a pinned view a chunk at a time as it is sent ([`super::copy`]) and paced to
//! the configured rate ([`super::pace`]). Appends and chunks are cut by bytes to fit a
//! frame ([`super::room`]). With nothing to send, an
//! empty append goes out every sync heartbeat: it carries the commit index and shows the
//! follower is alive.

use std::collections::VecDeque;

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

/// Messages a primary keeps in flight to one follower at most.
pub const WINDOW_MESSAGES: usize = 8;
/// Bytes of log entries a primary keeps in flight to one follower at most.
pub const WINDOW_BYTES: usize = 4 << 20;

/// What a message in flight to a follower was.
#[derive(Debug, Clone, Copy)]
enum InFlight {
    /// An append of the entries from `from` on (perhaps none).
    Append { from: u64 },
    /// Snapshot chunk `chunk`.
    Snapshot { chunk: usize },
}

/// One message in flight to a follower.
#[derive(Debug, Clone, Copy)]
struct Sent {
    /// Its number on the link.
    seq: u64,
    /// When it was sent.
    at: Time,
    kind: InFlight,
    /// Bytes of entries it carries.
    bytes: usize,
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
    /// Messages sent and not yet answered, oldest first.
    in_flight: VecDeque<Sent>,
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
            in_flight: VecDeque::new(),
            last_sent: None,
            sent_commit: 0,
            snapshot: None,
            stamp: None,
        }
    }
}

impl<D: Disk, T: TableStore> Replica<D, T> {
    /// Sends each follower what it needs now, as far as its window allows.
    pub(super) fn pump(&mut self, now: Time) {
        let Role::Primary(p) = &self.role else { return };
        let count = p.followers.len();
        for slot in 0..count {
            while self.pump_one(now, slot) {}
        }
    }

    /// Sends follower `slot` one message if it needs one now: whether it did.
    fn pump_one(&mut self, now: Time, slot: usize) -> bool {
        let last = self.wal.last().index;
        let (commit, term) = (self.commit, self.term);
        let (shard, beat, timeout, lag) =
            (self.spec.id, self.cfg.sync_heartbeat, self.cfg.peer_timeout, self.cfg.snapshot_lag);
        let room = self.room;
        let by_rows = self.cfg.regressions.chunks_by_rows;
        let applied = self.applied.index;
        // Only a primary that holds its lease and is ready may vouch that its commit index
        // covers every write acknowledged before the follower's stamp.
        let vouches = self.lease_until.is_some_and(|t| now < t) && self.ready();
        let Role::Primary(p) = &mut self.role else { return false };
        let epoch = p.epoch;
        let f = &mut p.followers[slot];
        if !f.may_send(now, Pace { last, commit, beat, timeout }) {
            return false;
        }
        let mem = self.wal.mem();
        let prev_index = f.next - 1;
        let prev_term = mem.term_at(prev_index);
        // A snapshot when the log no longer holds what the follower needs, or when it is far
        // behind and the table is ahead of it. A primary whose table is itself behind (rolled
        // back in a crash, re-applied only as entries commit) sends entries instead: its
        // snapshot would hold nothing the follower lacks, and it would be sent again forever.
        let far_behind = last.saturating_sub(prev_index) > lag && applied > prev_index;
        if f.snapshot.is_none() && f.in_flight.is_empty() && (prev_term.is_none() || far_behind) {
            if !self.pacer.ready(now) {
                // Pin the view only once its first chunk may leave: it is then as fresh as
                // it can be, rather than one taken earlier and held back.
                return false;
            }
            let cut = if by_rows { Cut::Rows(SNAPSHOT_CHUNK_ROWS) } else { Cut::Bytes(room.chunk()) };
            if !f.begin_snapshot(self.table.snapshot(), cut) {
                return false;
            }
        }
        let (request, kind, bytes) = if f.snapshot.is_some() {
            let header = SnapshotHeader { shard, term, primary: self.cfg.node.clone() };
            match f.next_snapshot_chunk(&mut self.pacer, now, header) {
                Some((request, kind)) => (request, kind, 0),
                None => return false,
            }
        } else {
            let entries = mem.records_from(f.next, MAX_BATCH_ENTRIES, room.batch());
            let bytes = entries.iter().map(|e| e.len()).sum();
            let sent_last = prev_index + entries.len() as u64;
            let prev = LogPosition { term: prev_term.unwrap_or(0), index: prev_index };
            let echo = f.stamp.filter(|_| vouches);
            let request =
                PeerRequest::Append { shard, term, primary: self.cfg.node.clone(), prev, entries, commit, echo };
            let kind = InFlight::Append { from: f.next };
            f.next = sent_last + 1;
            (request, kind, bytes)
        };
        f.seq += 1;
        let link = Link { epoch, slot, seq: f.seq };
        f.in_flight.push_back(Sent { seq: f.seq, at: now, kind, bytes });
        if let InFlight::Append { .. } = kind {
            let depth = f.in_flight.len() as u64;
            self.syncs.appends_sent += 1;
            self.syncs.in_flight_sum += depth;
            self.syncs.in_flight_max = self.syncs.in_flight_max.max(depth);
        }
        f.last_sent = Some(now);
        f.sent_commit = commit;
        self.effects.push(Effect::Send { link, to: f.addr.clone(), request });
        true
    }

    /// A follower answered the message `link` (or the call failed: `Err`).
    pub fn on_peer_answer(&mut self, now: Time, link: Link, answer: Result<PeerResponse, String>) {
        self.on_peer_answers(now, vec![(link, answer)]);
    }

    /// Several answers from followers, taken in order, with one commit advance after them
    /// (a follower that grouped several appends into one fsync answers them together).
    pub fn on_peer_answers(&mut self, now: Time, answers: Vec<(Link, Result<PeerResponse, String>)>) {
        let mut progressed = false;
        for (link, answer) in answers {
            match self.take_answer(link, answer) {
                Taken::Progress => progressed = true,
                Taken::Nothing => {}
                Taken::HigherTerm(term) => return self.on_higher_term(term),
            }
        }
        if progressed {
            self.advance_commit(now);
        }
        self.pump(now);
    }

    /// Takes one answer into the follower's state; what it means for the primary.
    fn take_answer(&mut self, link: Link, answer: Result<PeerResponse, String>) -> Taken {
        let Role::Primary(p) = &mut self.role else { return Taken::Nothing };
        if p.epoch != link.epoch {
            return Taken::Nothing;
        }
        let Some(f) = p.followers.get_mut(link.slot) else { return Taken::Nothing };
        // Answers to messages dropped from the window (after a refusal, a failure or a
        // timeout), or given twice, are ignored.
        let Some(at) = f.in_flight.iter().position(|s| s.seq == link.seq) else { return Taken::Nothing };
        let kind = f.in_flight[at].kind;
        if let Ok(PeerResponse::Appended { stamp, .. }) = &answer {
            f.stamp = Some(*stamp);
        }
        let mut progress = None;
        match (answer, kind) {
            (Ok(PeerResponse::Appended { term, .. }), _) if term > self.term => return Taken::HigherTerm(term),
            (Ok(PeerResponse::Appended { success: true, last: matched, .. }), InFlight::Append { .. }) => {
                f.reachable = true;
                // Cumulative: the follower holds everything the earlier messages carried.
                f.in_flight.drain(..=at);
                f.next = f.next.max(matched.index + 1);
                progress = Some(matched.index);
            }
            (Ok(PeerResponse::Appended { success: false, retry_from, .. }), InFlight::Append { .. }) => {
                f.reachable = true;
                // Every later message was sent after the same mismatch: drop them all.
                f.in_flight.clear();
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
                f.in_flight.drain(..=at);
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
        match progress {
            Some(durable) => {
                f.durable = f.durable.max(durable);
                Taken::Progress
            }
            None => Taken::Nothing,
        }
    }
}

/// What one answer from a follower means for the primary.
enum Taken {
    /// The follower holds more: the commit index may move.
    Progress,
    /// Nothing that moves the commit index.
    Nothing,
    /// The follower is at a later term: this primary steps down.
    HigherTerm(u64),
}

/// What every snapshot chunk a primary sends names besides its contents.
struct SnapshotHeader {
    shard: ShardId,
    term: u64,
    primary: String,
}

/// What decides whether a follower is sent another message now.
struct Pace {
    /// The primary's last log index.
    last: u64,
    /// Its commit index.
    commit: u64,
    /// The sync heartbeat.
    beat: Time,
    /// How long an answer may take.
    timeout: Time,
}

impl Follower {
    /// Whether to send this follower a message now: gives up on the window if its oldest
    /// message went unanswered too long; then, with messages in flight, more only while
    /// the follower answers, no snapshot is under way, there is something new to send and
    /// the window has room; with none, when there is something to send or a heartbeat is due.
    fn may_send(&mut self, now: Time, pace: Pace) -> bool {
        if self.in_flight.front().is_some_and(|oldest| now.saturating_sub(oldest.at) >= pace.timeout) {
            if self.reachable {
                warn!(to = %self.addr.name, "follower unreachable: no answer in time");
            }
            self.reachable = false;
            self.rewind();
        }
        if !self.in_flight.is_empty() {
            let room = self.in_flight.len() < WINDOW_MESSAGES
                && self.in_flight.iter().map(|s| s.bytes).sum::<usize>() < WINDOW_BYTES;
            return self.reachable && self.snapshot.is_none() && self.next <= pace.last && room;
        }
        let due = self.last_sent.is_none_or(|t| now.saturating_sub(t) >= pace.beat);
        let wants = self.snapshot.is_some() || self.next <= pace.last || self.sent_commit < pace.commit;
        due || (wants && self.reachable)
    }

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

    /// Drops every message in flight and sends again from where the first of them started
    /// (their answers, if any come, are ignored).
    fn rewind(&mut self) {
        let first = self.in_flight.iter().find_map(|s| match s.kind {
            InFlight::Append { from, .. } => Some(from),
            InFlight::Snapshot { .. } => None,
        });
        if let Some(from) = first {
            self.next = self.next.min(from);
        }
        self.in_flight.clear();
    }

    fn failed(&mut self, why: &str) {
        if self.reachable {
            warn!(to = %self.addr.name, why, "follower unreachable");
        }
        self.reachable = false;
        self.rewind();
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
