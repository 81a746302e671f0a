//! What fits in one frame to a follower: room for log entries in an append and for rows in
//! a snapshot chunk, under the frame limit, once the message's own fields are counted.
//!
//! Every message to a follower must fit a frame, or the connection refuses to send it and
//! replication stands still (the same append is tried again forever). So a write whose one
//! log entry could not travel in an append is refused before it is logged
//! ([`Room::entry`]), appends are cut at [`Room::batch`] bytes of entries, and snapshot
//! chunks at [`Room::chunk`] bytes of rows and client marks.

use shardline_protocol::{ClientSeqMark, CopySize, LogPosition, PeerRequest, Row, ShardId};

/// Bytes of entries sent in one append at most, whatever the frame limit.
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// Bytes of rows in one snapshot chunk at most, whatever the frame limit.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// Entries sent in one append at most.
pub const MAX_BATCH_ENTRIES: usize = 512;
/// Most bytes postcard spends on a length prefix below 4 GiB (a u32 as a varint).
const LEN_PREFIX: usize = 5;

/// Room in the frames a primary sends its followers, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    entry: usize,
    batch: usize,
    chunk: usize,
}

impl Room {
    /// The room left under `max_payload` in messages sent by the primary named `node`.
    pub fn new(max_payload: usize, node: &str) -> Room {
        // Every integer at its widest, so the envelope is the most it can ever take.
        let wide = LogPosition { term: u64::MAX, index: u64::MAX };
        let append = PeerRequest::Append {
            shard: ShardId(u32::MAX),
            term: u64::MAX,
            primary: node.to_owned(),
            prev: wide,
            entries: Vec::new(),
            commit: u64::MAX,
            echo: Some(shardline_protocol::ContactStamp { run: u64::MAX, at_nanos: u64::MAX }),
        };
        let chunk = PeerRequest::Snapshot {
            shard: ShardId(u32::MAX),
            term: u64::MAX,
            primary: node.to_owned(),
            last_included: wide,
            chunk: u32::MAX,
            rows: Vec::new(),
            marks: Vec::new(),
            done: true,
            total: CopySize { rows: u64::MAX, bytes: u64::MAX },
        };
        // An empty list's count takes one byte; a longer one's up to a full prefix.
        let envelope = |m: &PeerRequest| size_of(m) + 2 * LEN_PREFIX;
        let entries_room = max_payload.saturating_sub(envelope(&append));
        Room {
            entry: entries_room.saturating_sub(LEN_PREFIX),
            batch: entries_room.saturating_sub(MAX_BATCH_ENTRIES * LEN_PREFIX).min(MAX_BATCH_BYTES),
            chunk: max_payload.saturating_sub(envelope(&chunk)).min(SNAPSHOT_CHUNK_BYTES),
        }
    }

    /// The same room with snapshot chunks held to `bytes` at most.
    pub fn capped_chunks(mut self, bytes: usize) -> Room {
        self.chunk = self.chunk.min(bytes);
        self
    }

    /// The largest encoded log entry a write may make: one that fits an append on its own.
    pub fn entry(&self) -> usize {
        self.entry
    }

    /// Bytes of entries (past the first) one append carries at most.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Bytes of rows and marks one snapshot chunk carries at most (past its first row).
    pub fn chunk(&self) -> usize {
        self.chunk
    }
}

/// Bytes `row` takes in a snapshot chunk.
pub fn row_size(row: &Row) -> usize {
    size_of(row)
}

/// Bytes `mark` takes in a snapshot chunk.
pub fn mark_size(mark: &ClientSeqMark) -> usize {
    size_of(mark)
}

fn size_of<T: serde::Serialize>(value: &T) -> usize {
    // Serializing to a counter cannot fail for these types; if it did, count the value as
    // too large for any frame rather than as free.
    postcard::experimental::serialized_size(value).unwrap_or(usize::MAX / 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use shardline_protocol::{Message, Value};

    const NODE: &str = "Server-with-a-long-name-0";

    fn append(entries: Vec<Bytes>) -> PeerRequest {
        let wide = LogPosition { term: u64::MAX, index: u64::MAX };
        let shard = ShardId(u32::MAX);
        PeerRequest::Append {
            shard,
            term: u64::MAX,
            primary: NODE.into(),
            prev: wide,
            entries,
            commit: u64::MAX,
            echo: Some(shardline_protocol::ContactStamp { run: u64::MAX, at_nanos: u64::MAX }),
        }
    }

    fn payload(m: &PeerRequest) -> usize {
        m.to_frame(1).expect("encodes").payload.len()
    }

    #[test]
    fn the_largest_entry_fits_an_append_alone() {
        for max in [1024, 4096, 65_536, 1 << 20, 16 << 20] {
            let room = Room::new(max, NODE);
            assert!(room.entry() > max / 2, "{max}: {room:?}");
            assert!(payload(&append(vec![Bytes::from(vec![7u8; room.entry()])])) <= max, "{max}");
        }
    }

    #[test]
    fn a_full_batch_fits_an_append() {
        for max in [4096, 65_536, 1 << 20, 2 << 20] {
            let room = Room::new(max, NODE);
            // As the log cuts a batch: past the first, entries while the total is within room.
            let small = (0..MAX_BATCH_ENTRIES).map(|_| Bytes::from(vec![1u8; room.batch() / MAX_BATCH_ENTRIES]));
            assert!(payload(&append(small.collect())) <= max, "{max}: many small entries");
            let first = room.entry().min(room.batch());
            assert!(payload(&append(vec![Bytes::from(vec![1u8; first])])) <= max, "{max}: one big entry");
        }
        assert_eq!(Room::new(64 << 20, NODE).batch(), MAX_BATCH_BYTES, "capped when frames are large");
    }

    /// Items `make(0)`, `make(1)`, ... while their sizes still fit under `limit` with `used`.
    fn fill<T>(used: &mut usize, limit: usize, make: impl Fn(u64) -> T, size: impl Fn(&T) -> usize) -> Vec<T> {
        let mut out = Vec::new();
        for k in 0.. {
            let item = make(k);
            if *used + size(&item) > limit {
                break;
            }
            *used += size(&item);
            out.push(item);
        }
        out
    }

    #[test]
    fn a_full_chunk_fits_a_snapshot_frame() {
        let max = 65_536;
        let room = Room::new(max, NODE);
        let row = |k| Row::new(k, vec![Value::Str("x".repeat(500)), Value::Int(k)]);
        let mark = |k| ClientSeqMark { client: u64::MAX, seq: k, entry: LogPosition { term: u64::MAX, index: k } };
        let mut used = 0;
        let rows = fill(&mut used, room.chunk(), |k| row(k as i64), row_size);
        let marks = fill(&mut used, room.chunk(), mark, mark_size);
        let wide = LogPosition { term: u64::MAX, index: u64::MAX };
        let chunk = PeerRequest::Snapshot {
            shard: ShardId(u32::MAX),
            term: u64::MAX,
            primary: NODE.into(),
            last_included: wide,
            chunk: u32::MAX,
            rows,
            marks,
            done: true,
            total: CopySize { rows: u64::MAX, bytes: u64::MAX },
        };
        assert!(payload(&chunk) <= max, "{} > {max}", payload(&chunk));
    }
}
