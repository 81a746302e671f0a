//! Replication to each follower, as the primary sees it.
//!
//! One message is in flight per follower. The primary sends the entries a follower lacks
//! (from `next`), learns from each answer how far the follower's log matches its own,
//! and counts majorities from that. A refusal moves `next` back to where the follower
//! asks; a follower too far behind, or behind the log's truncated prefix, gets a snapshot
//! of the table instead, in chunks. Appends and chunks are cut by bytes to fit a frame
//! ([`super::room`]). With nothing to send, an empty append goes out every
//! sync heartbeat: it carries the commit index and shows the follower is alive.

use std::ops::Range;

use shardline_protocol::{ClientSeqMark, ErrorCode, LogPosition, PeerRequest, PeerResponse, Row, ServerAddr};
use tracing::{debug, info, warn};

use super::room::{mark_size, row_size, MAX_BATCH_ENTRIES};
use super::{Effect, Link, Replica, Role, Time};
use crate::disk::Disk;
use crate::store::TableStore;

/// What the one message in flight to a follower was.
#[derive(Debug, Clone, Copy)]
enum InFlight {
    /// An append whose last entry was `sent_last`.
    Append { sent_last: u64 },
    /// Snapshot chunk `chunk`.
    Snapshot { chunk: usize },
}

/// Rows in one snapshot chunk when chunks are cut by rows (the test-only
/// [`Regressions::chunks_by_rows`](super::Regressions), as before chunks were cut by bytes).
pub const SNAPSHOT_CHUNK_ROWS: usize = 2000;

/// A snapshot being sent: its rows, then its client marks, cut into chunks by bytes so
/// that no chunk is larger than a frame may be, however wide the rows or many the marks.
#[derive(Debug)]
struct Outgoing {
    included: LogPosition,
    rows: Vec<Row>,
    marks: Vec<ClientSeqMark>,
    /// Each chunk's rows and marks.
    chunks: Vec<(Range<usize>, Range<usize>)>,
}

impl Outgoing {
    /// Cuts the snapshot into chunks of at most `room` bytes each (a single row larger than
    /// that still goes, alone: it was written under a larger limit).
    fn new(included: LogPosition, rows: Vec<Row>, marks: Vec<ClientSeqMark>, room: usize) -> Outgoing {
        let sizes = rows.iter().map(row_size).chain(marks.iter().map(mark_size));
        // Cut points in the sequence of rows followed by marks.
        let mut starts = vec![0];
        let mut bytes = 0;
        for (i, size) in sizes.enumerate() {
            if bytes > 0 && bytes + size > room {
                starts.push(i);
                bytes = 0;
            }
            bytes += size;
        }
        let total = rows.len() + marks.len();
        let n = rows.len();
        let chunks = starts
            .iter()
            .enumerate()
            .map(|(c, &from)| {
                let to = starts.get(c + 1).copied().unwrap_or(total);
                (from.min(n)..to.min(n), from.max(n) - n..to.max(n) - n)
            })
            .collect();
        Outgoing { included, rows, marks, chunks }
    }

    /// Cuts the snapshot into chunks of `per_chunk` rows, the marks all with the last: the
    /// test-only regression of scenario 8.
    fn by_rows(included: LogPosition, rows: Vec<Row>, marks: Vec<ClientSeqMark>, per_chunk: usize) -> Outgoing {
        let n = rows.len().div_ceil(per_chunk).max(1);
        let chunks = (0..n)
            .map(|c| {
                let rows_in = (c * per_chunk).min(rows.len())..((c + 1) * per_chunk).min(rows.len());
                let marks_in = if c + 1 == n { 0..marks.len() } else { 0..0 };
                (rows_in, marks_in)
            })
            .collect();
        Outgoing { included, rows, marks, chunks }
    }

    fn chunks(&self) -> usize {
        self.chunks.len()
    }

    fn chunk(&self, chunk: usize) -> (Range<usize>, Range<usize>) {
        self.chunks[chunk.min(self.chunks.len() - 1)].clone()
    }
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
    next_chunk: usize,
}

impl Follower {
    /// A follower (a voter or a learner) to send entries from `next`, known to hold `durable`.
    pub fn new(addr: ServerAddr, voter: bool, next: u64, durable: u64) -> Follower {
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
            next_chunk: 0,
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
            match self.table.snapshot() {
                Ok(snapshot) => {
                    let (included, rows, marks) = (snapshot.applied, snapshot.rows, snapshot.marks);
                    info!(to = %f.addr.name, upto = included.index, rows = rows.len(), "sending a snapshot");
                    f.snapshot = Some(if by_rows {
                        Outgoing::by_rows(included, rows, marks, SNAPSHOT_CHUNK_ROWS)
                    } else {
                        Outgoing::new(included, rows, marks, room.chunk())
                    });
                    f.next_chunk = 0;
                }
                Err(e) => {
                    warn!(%e, "could not read a snapshot");
                    return;
                }
            }
        }
        f.seq += 1;
        let link = Link { epoch, slot, seq: f.seq };
        let (request, kind) = match &f.snapshot {
            Some(out) => {
                let chunk = f.next_chunk;
                let (rows, marks) = out.chunk(chunk);
                let request = PeerRequest::Snapshot {
                    shard,
                    term,
                    primary: me,
                    last_included: out.included,
                    chunk: chunk as u32,
                    rows: out.rows[rows].to_vec(),
                    marks: out.marks[marks].to_vec(),
                    done: chunk + 1 == out.chunks(),
                };
                (request, InFlight::Snapshot { chunk })
            }
            None => {
                let entries = mem.records_from(f.next, MAX_BATCH_ENTRIES, room.batch());
                let sent_last = prev_index + entries.len() as u64;
                let prev = LogPosition { term: prev_term.unwrap_or(0), index: prev_index };
                let request = PeerRequest::Append { shard, term, primary: me, prev, entries, commit };
                (request, InFlight::Append { sent_last })
            }
        };
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
                let out = f.snapshot.as_ref().expect("a snapshot in flight");
                if sent + 1 >= out.chunks() {
                    let included = out.included.index;
                    f.snapshot = None;
                    f.next = included + 1;
                    progress = Some(included);
                } else {
                    f.next_chunk = sent + 1;
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

impl Follower {
    fn failed(&mut self, why: &str) {
        if self.reachable {
            warn!(to = %self.addr.name, why, "follower unreachable");
        }
        self.reachable = false;
        // A snapshot starts over: the follower may have lost what it stored.
        self.snapshot = None;
        self.next_chunk = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline_protocol::Value;

    fn mark(k: u64) -> ClientSeqMark {
        ClientSeqMark { client: 1, seq: k, entry: LogPosition { term: 1, index: k } }
    }

    #[test]
    fn snapshot_chunks_are_cut_by_bytes() {
        let wide = |key| Row::new(key, vec![Value::Str("x".repeat(400_000)), Value::Int(1)]);
        let narrow = |key| Row::new(key, vec![Value::Str("x".into()), Value::Int(1)]);
        let rows: Vec<Row> = (0..5).map(wide).chain((5..10).map(narrow)).collect();
        let out = Outgoing::new(LogPosition::default(), rows, vec![], 1 << 20);
        assert_eq!(out.chunks(), 3, "two wide rows a chunk: {:?}", out.chunks);
        let all: usize = (0..out.chunks()).map(|c| out.chunk(c).0.len()).sum();
        assert_eq!(all, 10, "every row is in exactly one chunk");
        let empty = Outgoing::new(LogPosition::default(), vec![], vec![], 1 << 20);
        assert_eq!((empty.chunks(), empty.chunk(0)), (1, (0..0, 0..0)), "an empty table is one empty chunk");
    }

    #[test]
    fn marks_are_spread_over_chunks_after_the_rows() {
        let rows: Vec<Row> = (0..20).map(|k| Row::new(k, vec![Value::Str("y".repeat(100))])).collect();
        let marks: Vec<ClientSeqMark> = (0..500).map(mark).collect();
        let room = 1024;
        let out = Outgoing::new(LogPosition::default(), rows.clone(), marks.clone(), room);
        assert!(out.chunks() > 3, "{:?}", out.chunks);
        let (mut next_row, mut next_mark) = (0, 0);
        for c in 0..out.chunks() {
            let (r, m) = out.chunk(c);
            assert_eq!((r.start, m.start), (next_row, next_mark), "chunk {c} continues the last");
            assert!(m.is_empty() || r.end == rows.len(), "marks only once every row is out");
            let bytes: usize = rows[r.clone()].iter().map(row_size).sum::<usize>()
                + marks[m.clone()].iter().map(mark_size).sum::<usize>();
            assert!(bytes <= room, "chunk {c}: {bytes} bytes");
            (next_row, next_mark) = (r.end, m.end);
        }
        assert_eq!((next_row, next_mark), (rows.len(), marks.len()), "everything is sent once");
    }
}
