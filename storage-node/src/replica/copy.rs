//! A snapshot on its way to one follower, read from a pinned view of the table a chunk at a
//! time as it is sent, never whole.
//!
//! The snapshot is the table's rows in key order, then its client marks in (client, seq)
//! order. A cursor names where the next chunk starts; a chunk is read from there up to
//! the room a frame has ([`super::room`]), and the cursor moves past it only once the
//! follower has stored it. So a chunk sent again after a lost answer is read again from
//! the same place of the same view: the same rows and marks under the same number.

use shardline_protocol::{ClientSeqMark, CopyDirection, CopyProgress, CopySize, LogPosition, Row};

use super::room::{mark_size, row_size};
use crate::store::{SnapshotSource, StoreError};

/// Rows in one snapshot chunk when chunks are cut by rows (the test-only
/// [`Regressions::chunks_by_rows`](super::Regressions), as before chunks were cut by bytes).
pub const SNAPSHOT_CHUNK_ROWS: usize = 2000;

/// Where a chunk starts in the sequence of rows, then marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    /// At the rows past this key (from the first, if `None`).
    Rows(Option<i64>),
    /// At the marks past this (client, seq) (from the first, if `None`).
    Marks(Option<(u64, u64)>),
}

/// How chunks are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// At most this many bytes of rows and marks (a single larger row still goes, alone:
    /// it was written under a larger limit).
    Bytes(usize),
    /// This many rows, every mark with the last rows: the test-only regression of
    /// scenario 8.
    Rows(usize),
}

/// One chunk, read.
#[derive(Debug)]
pub struct Chunk {
    /// Its rows.
    pub rows: Vec<Row>,
    /// Its client marks.
    pub marks: Vec<ClientSeqMark>,
    /// Whether it is the last.
    pub done: bool,
    /// Bytes of rows and marks.
    pub bytes: usize,
    end: Cursor,
}

/// A snapshot being sent to one follower.
#[derive(Debug)]
pub struct Outgoing {
    source: Box<dyn SnapshotSource>,
    cut: Cut,
    /// Where the chunk to send next starts, and its number.
    start: Cursor,
    next_chunk: usize,
    /// The chunk in flight: its number, where it ends, its rows and bytes, whether last.
    in_flight: Option<(usize, Cursor, CopySize, bool)>,
    /// What the follower has stored.
    copied: CopySize,
    /// Bytes of the rows read so far, to estimate the whole from.
    seen: CopySize,
}

impl Outgoing {
    /// A snapshot of `source`, to be cut as `cut` says.
    pub fn new(source: impl SnapshotSource, cut: Cut) -> Outgoing {
        let zero = CopySize::default();
        let source = Box::new(source);
        Outgoing { source, cut, start: Cursor::Rows(None), next_chunk: 0, in_flight: None, copied: zero, seen: zero }
    }

    /// The last log entry the snapshot covers.
    pub fn included(&self) -> LogPosition {
        self.source.applied()
    }

    /// The number of the chunk to send next.
    pub fn next_chunk(&self) -> usize {
        self.next_chunk
    }

    /// Reads the chunk to send next (again, if it was sent and not stored).
    pub fn read_next(&mut self) -> Result<Chunk, StoreError> {
        let chunk = match self.cut {
            Cut::Bytes(room) => self.read(room, usize::MAX)?,
            Cut::Rows(per_chunk) => self.read(usize::MAX, per_chunk)?,
        };
        if self.in_flight.is_none_or(|(n, ..)| n != self.next_chunk) {
            // Read for the first time (not sent again): its rows tell the bytes per row.
            self.seen.rows += chunk.rows.len() as u64;
            self.seen.bytes += chunk.rows.iter().map(row_size).sum::<usize>() as u64;
        }
        let size = CopySize { rows: chunk.rows.len() as u64, bytes: chunk.bytes as u64 };
        self.in_flight = Some((self.next_chunk, chunk.end, size, chunk.done));
        Ok(chunk)
    }

    /// The follower stored chunk `number`: returns whether the snapshot is complete.
    pub fn stored(&mut self, number: usize) -> bool {
        let Some((n, end, size, done)) = self.in_flight.filter(|f| f.0 == number) else {
            return false;
        };
        self.in_flight = None;
        self.start = end;
        self.next_chunk = n + 1;
        self.copied.rows += size.rows;
        self.copied.bytes += size.bytes;
        done
    }

    /// The whole snapshot as estimated now: its rows exactly, its bytes from the rows read
    /// so far (marks are counted once sent).
    pub fn total(&self) -> CopySize {
        let rows = self.source.row_count();
        let per_row = if self.seen.rows == 0 { 0.0 } else { self.seen.bytes as f64 / self.seen.rows as f64 };
        CopySize { rows, bytes: ((rows as f64 * per_row) as u64).max(self.copied.bytes) }
    }

    /// Progress as the sender reports it, `peer` being the follower.
    pub fn progress(&self, peer: &str) -> CopyProgress {
        CopyProgress {
            direction: CopyDirection::Sending,
            peer: peer.to_owned(),
            upto: self.included().index,
            copied: self.copied,
            total: self.total(),
        }
    }

    /// Reads from `start` while the chunk holds at most `room` bytes (past its first item)
    /// and `max_rows` rows; marks follow the rows once every row is in.
    fn read(&self, room: usize, max_rows: usize) -> Result<Chunk, StoreError> {
        let (mut rows, mut marks, mut bytes, mut full) = (Vec::new(), Vec::new(), 0usize, false);
        let mut end = self.start;
        if let Cursor::Rows(after) = self.start {
            self.source.rows_after(after, &mut |row| {
                let size = row_size(&row);
                if (bytes > 0 && bytes + size > room) || rows.len() == max_rows {
                    full = true;
                    return false;
                }
                bytes += size;
                end = Cursor::Rows(Some(row.key));
                rows.push(row);
                true
            })?;
            if !full {
                end = Cursor::Marks(None);
            }
        }
        if let (false, Cursor::Marks(after)) = (full, end) {
            self.source.marks_after(after, &mut |mark| {
                let size = mark_size(&mark);
                if bytes > 0 && bytes + size > room {
                    full = true;
                    return false;
                }
                bytes += size;
                end = Cursor::Marks(Some((mark.client, mark.seq)));
                marks.push(mark);
                true
            })?;
        }
        Ok(Chunk { rows, marks, done: !full, bytes, end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemTable, TableStore};
    use shardline_protocol::{LogEntry, Operation, Schema, ShardId, ShardSpec, Value};

    /// A table holding `rows` (key k with a string of `width(k)` bytes) and `marks` marks.
    fn table(rows: i64, width: impl Fn(i64) -> usize, marks: u64) -> MemTable {
        let t = MemTable::new();
        t.configure(&ShardSpec { id: ShardId(1), low: 0, size: 1 << 40 }, &Schema::seed()).unwrap();
        let mut entries = Vec::new();
        for k in 0..rows {
            let row = Row::new(k, vec![Value::Str("x".repeat(width(k))), Value::Int(1)]);
            entries.push(Operation::Write { client_id: 0, seq: 0, rows: vec![row] });
        }
        for seq in 1..=marks {
            entries.push(Operation::Update { client_id: 9, seq, row: Row::new(0, vec![Value::Str("y".repeat(100))]) });
        }
        let entries: Vec<LogEntry> =
            entries.into_iter().enumerate().map(|(i, op)| LogEntry { term: 1, index: i as u64 + 1, op }).collect();
        t.apply(&entries, true).unwrap();
        t
    }

    /// Sends every chunk, each stored at once; returns the chunks.
    fn send_all(out: &mut Outgoing) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        for n in 0..10_000 {
            let chunk = out.read_next().unwrap();
            let done = chunk.done;
            chunks.push(chunk);
            assert_eq!(out.stored(n), done);
            if done {
                return chunks;
            }
        }
        panic!("the snapshot never ended");
    }

    #[test]
    fn chunks_are_cut_by_bytes() {
        let t = table(10, |k| if k < 5 { 400_000 } else { 1 }, 0);
        let mut out = Outgoing::new(t.snapshot().unwrap(), Cut::Bytes(1 << 20));
        let chunks = send_all(&mut out);
        assert_eq!(chunks.len(), 3, "two wide rows a chunk");
        assert_eq!(chunks.iter().map(|c| c.rows.len()).sum::<usize>(), 10, "every row in exactly one chunk");
        let empty = MemTable::new();
        empty.configure(&ShardSpec { id: ShardId(1), low: 0, size: 10 }, &Schema::seed()).unwrap();
        let chunks = send_all(&mut Outgoing::new(empty.snapshot().unwrap(), Cut::Bytes(1 << 20)));
        assert_eq!(chunks.len(), 1, "an empty table is one empty chunk");
        assert!(chunks[0].rows.is_empty() && chunks[0].marks.is_empty());
    }

    #[test]
    fn marks_follow_the_rows_and_everything_goes_once() {
        let t = table(20, |_| 100, 500);
        let room = 1024;
        let mut out = Outgoing::new(t.snapshot().unwrap(), Cut::Bytes(room));
        let chunks = send_all(&mut out);
        assert!(chunks.len() > 3);
        let (mut keys, mut seqs, mut marks_began) = (Vec::new(), Vec::new(), false);
        for (n, c) in chunks.iter().enumerate() {
            assert!(!marks_began || c.rows.is_empty(), "chunk {n}: no row after a mark");
            marks_began |= !c.marks.is_empty();
            let bytes: usize =
                c.rows.iter().map(row_size).sum::<usize>() + c.marks.iter().map(mark_size).sum::<usize>();
            assert_eq!(bytes, c.bytes);
            assert!(bytes <= room, "chunk {n}: {bytes} bytes");
            keys.extend(c.rows.iter().map(|r| r.key));
            seqs.extend(c.marks.iter().map(|m| m.seq));
        }
        assert_eq!(keys, (0..20).collect::<Vec<_>>(), "every row once, in order");
        assert_eq!(seqs, (1..=500).collect::<Vec<_>>(), "every mark once, in order");
        let p = out.progress("F");
        assert_eq!((p.copied.rows, p.total.rows), (20, 20));
    }

    #[test]
    fn a_chunk_not_stored_is_read_again_the_same() {
        let t = table(50, |_| 100, 3);
        let mut out = Outgoing::new(t.snapshot().unwrap(), Cut::Bytes(1000));
        let first = out.read_next().unwrap();
        assert!(out.stored(0) == first.done);
        let second = out.read_next().unwrap();
        // Later writes change the table, not the snapshot under way.
        t.apply(&[LogEntry { term: 1, index: 99, op: Operation::Delete { client_id: 0, seq: 0, key: 12 } }], false)
            .unwrap();
        assert!(!out.stored(0), "an answer for another chunk moves nothing");
        let again = out.read_next().unwrap();
        assert_eq!((again.rows, again.marks, out.next_chunk()), (second.rows, second.marks, 1));
        let p = out.progress("F");
        assert_eq!(p.copied.rows, first.rows.len() as u64, "progress counts stored chunks only");
        assert!(p.total.bytes >= 50 * 100, "{:?}", p.total);
    }

    #[test]
    fn chunks_by_rows_put_every_mark_in_the_last() {
        let t = table(4000, |_| 1, 7);
        let chunks = send_all(&mut Outgoing::new(t.snapshot().unwrap(), Cut::Rows(SNAPSHOT_CHUNK_ROWS)));
        let shape: Vec<(usize, usize)> = chunks.iter().map(|c| (c.rows.len(), c.marks.len())).collect();
        assert_eq!(shape, vec![(2000, 0), (2000, 7)]);
    }
}
