//! The write batch: rows laid out so a router can split them by key without decoding them.
//!
//! A `Write` frame's payload is a [`WriteBatch`], not postcard: an index of (key, end
//! offset) pairs, then the row bodies. The balancer reads the index only, groups rows by
//! shard, and forwards each shard's rows as a slice of the original bytes.
//!
//! ```text
//! offset      size  field
//! ----------  ----  ------------------------------------------------------------
//!          0     8  client id     who sent the write (for at-most-once retries)
//!          8     8  sequence      the client's sequence number for this write
//!         16     4  row count n
//!         20  12*n  index         per row: key (i64), end offset (u32) of its body,
//!                                 counted from the start of the body area
//!   20 + 12n     …  bodies        per row: postcard `Vec<Value>` (columns 1..)
//! ```
//!
//! Big-endian throughout. End offsets never decrease and the last one equals the body
//! area's length, so every row's body is `bodies[end(i-1)..end(i)]`.

use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::model::{Row, Value};

/// Size of the fixed part before the index.
pub const BATCH_PREFIX_LEN: usize = 20;
/// Size of one index entry.
pub const INDEX_ENTRY_LEN: usize = 12;

/// Why bytes are not a well-formed write batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// Shorter than its prefix or its declared index.
    #[error("write batch truncated: {0}")]
    Truncated(&'static str),
    /// An end offset goes backwards or past the body area.
    #[error("write batch index is inconsistent at row {0}")]
    BadIndex(usize),
    /// A row body is not a postcard list of values.
    #[error("row {row} does not decode: {reason}")]
    BadRow {
        /// Which row.
        row: usize,
        /// What postcard said.
        reason: String,
    },
    /// A row is too large to index (over 4 GiB of bodies).
    #[error("write batch too large")]
    TooLarge,
}

/// A parsed, validated write batch; cheap to clone and to slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteBatch {
    client_id: u64,
    seq: u64,
    /// The index: n entries of (key, end).
    index: Bytes,
    /// The body area.
    bodies: Bytes,
}

impl WriteBatch {
    /// Encodes rows into a batch, sorted by key so that each shard's rows are contiguous.
    pub fn encode(client_id: u64, seq: u64, rows: &[Row]) -> Result<WriteBatch, BatchError> {
        let mut order: Vec<&Row> = rows.iter().collect();
        order.sort_by_key(|r| r.key);
        let mut index = BytesMut::with_capacity(order.len() * INDEX_ENTRY_LEN);
        let mut bodies = Vec::with_capacity(order.len() * 16);
        for row in order {
            bodies = postcard::to_extend(&row.values, bodies)
                .map_err(|e| BatchError::BadRow { row: 0, reason: e.to_string() })?;
            index.put_i64(row.key);
            index.put_u32(u32::try_from(bodies.len()).map_err(|_| BatchError::TooLarge)?);
        }
        Ok(WriteBatch { client_id, seq, index: index.freeze(), bodies: Bytes::from(bodies) })
    }

    /// Parses a payload without copying it; checks the index, not the bodies.
    pub fn parse(mut payload: Bytes) -> Result<WriteBatch, BatchError> {
        if payload.len() < BATCH_PREFIX_LEN {
            return Err(BatchError::Truncated("prefix"));
        }
        let client_id = payload.get_u64();
        let seq = payload.get_u64();
        let n = payload.get_u32() as usize;
        let index_len =
            n.checked_mul(INDEX_ENTRY_LEN).filter(|&l| l <= payload.len()).ok_or(BatchError::Truncated("index"))?;
        let index = payload.split_to(index_len);
        let bodies = payload;
        let mut prev = 0usize;
        for i in 0..n {
            let end = end_at(&index, i);
            if end < prev || end > bodies.len() {
                return Err(BatchError::BadIndex(i));
            }
            prev = end;
        }
        if prev != bodies.len() {
            return Err(BatchError::BadIndex(n));
        }
        Ok(WriteBatch { client_id, seq, index, bodies })
    }

    /// Bytes of the encoded batch.
    pub fn encoded_len(&self) -> usize {
        BATCH_PREFIX_LEN + self.index.len() + self.bodies.len()
    }

    /// Appends the encoded batch to `dst`.
    pub fn write_to(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        dst.put_u64(self.client_id);
        dst.put_u64(self.seq);
        dst.put_u32((self.index.len() / INDEX_ENTRY_LEN) as u32);
        dst.extend_from_slice(&self.index);
        dst.extend_from_slice(&self.bodies);
    }

    /// The encoded batch as one buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.write_to(&mut buf);
        buf.freeze()
    }

    /// The same rows under another (client id, sequence), e.g. stamped by a balancer for a
    /// client that sent none; the row bytes are shared, not copied.
    pub fn with_client(&self, client_id: u64, seq: u64) -> WriteBatch {
        WriteBatch { client_id, seq, ..self.clone() }
    }

    /// The sending client's id.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The client's sequence number for this write.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.index.len() / INDEX_ENTRY_LEN
    }

    /// Whether the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The key of row `i`.
    pub fn key(&self, i: usize) -> i64 {
        let at = i * INDEX_ENTRY_LEN;
        i64::from_be_bytes(self.index[at..at + 8].try_into().expect("8 bytes"))
    }

    /// All keys, in batch order.
    pub fn keys(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.len()).map(|i| self.key(i))
    }

    /// The encoded body of row `i`, without copying.
    pub fn body(&self, i: usize) -> Bytes {
        let start = if i == 0 { 0 } else { end_at(&self.index, i - 1) };
        self.bodies.slice(start..end_at(&self.index, i))
    }

    /// Decodes row `i`.
    pub fn row(&self, i: usize) -> Result<Row, BatchError> {
        let body = self.body(i);
        let bad = |reason: String| BatchError::BadRow { row: i, reason };
        let (values, rest): (Vec<Value>, _) = postcard::take_from_bytes(&body).map_err(|e| bad(e.to_string()))?;
        if !rest.is_empty() {
            return Err(bad(format!("{} bytes after the row", rest.len())));
        }
        Ok(Row { key: self.key(i), values })
    }

    /// Decodes every row.
    pub fn rows(&self) -> Result<Vec<Row>, BatchError> {
        (0..self.len()).map(|i| self.row(i)).collect()
    }

    /// Groups consecutive rows that `group_of` puts together: `(group, row range)` runs.
    ///
    /// `group_of` returns `Err(key)` for a key no group takes; the first such key is
    /// returned. A sorted batch gives one run per group.
    pub fn runs<G: PartialEq + Copy>(
        &self,
        mut group_of: impl FnMut(i64) -> Option<G>,
    ) -> Result<Vec<(G, Range<usize>)>, i64> {
        let mut runs: Vec<(G, Range<usize>)> = Vec::new();
        for i in 0..self.len() {
            let key = self.key(i);
            let g = group_of(key).ok_or(key)?;
            match runs.last_mut() {
                Some((last, range)) if *last == g => range.end = i + 1,
                _ => runs.push((g, i..i + 1)),
            }
        }
        Ok(runs)
    }

    /// A batch of the rows in `ranges`, same client and sequence. One range shares the
    /// original body bytes; several are gathered into one new buffer.
    pub fn select(&self, ranges: &[Range<usize>]) -> WriteBatch {
        let mut index = BytesMut::with_capacity(ranges.iter().map(|r| r.len()).sum::<usize>() * INDEX_ENTRY_LEN);
        let bodies = match ranges {
            [one] => self.body_span(one.clone()),
            many => {
                let mut gathered = BytesMut::new();
                for r in many {
                    gathered.extend_from_slice(&self.body_span(r.clone()));
                }
                gathered.freeze()
            }
        };
        let mut end = 0usize;
        for r in ranges {
            for i in r.clone() {
                end += self.body_len(i);
                index.put_i64(self.key(i));
                index.put_u32(end as u32);
            }
        }
        WriteBatch { client_id: self.client_id, seq: self.seq, index: index.freeze(), bodies }
    }

    fn body_len(&self, i: usize) -> usize {
        let start = if i == 0 { 0 } else { end_at(&self.index, i - 1) };
        end_at(&self.index, i) - start
    }

    fn body_span(&self, rows: Range<usize>) -> Bytes {
        if rows.is_empty() {
            return Bytes::new();
        }
        let start = if rows.start == 0 { 0 } else { end_at(&self.index, rows.start - 1) };
        self.bodies.slice(start..end_at(&self.index, rows.end - 1))
    }
}

fn end_at(index: &[u8], i: usize) -> usize {
    let at = i * INDEX_ENTRY_LEN + 8;
    u32::from_be_bytes(index[at..at + 4].try_into().expect("4 bytes")) as usize
}

impl serde::Serialize for WriteBatch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> serde::Deserialize<'de> for WriteBatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<WriteBatch, D::Error> {
        let bytes = Bytes::deserialize(d)?;
        WriteBatch::parse(bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(keys: &[i64]) -> Vec<Row> {
        keys.iter().map(|&k| Row::new(k, vec![Value::Str(format!("name{k}")), Value::Int(k * 2)])).collect()
    }

    #[test]
    fn encode_sorts_and_round_trips() {
        let batch = WriteBatch::encode(7, 9, &rows(&[30, 10, 20])).unwrap();
        let back = WriteBatch::parse(batch.to_bytes()).unwrap();
        assert_eq!(back, batch);
        assert_eq!((back.client_id(), back.seq()), (7, 9));
        assert_eq!(back.keys().collect::<Vec<_>>(), vec![10, 20, 30]);
        assert_eq!(back.rows().unwrap(), rows(&[10, 20, 30]));
    }

    #[test]
    fn split_by_shard_shares_bytes_for_one_run() {
        let batch = WriteBatch::encode(1, 1, &rows(&[1, 2, 5000, 5001, 9000])).unwrap();
        let runs = batch.runs(|k| Some(k / 4096)).unwrap();
        assert_eq!(runs, vec![(0, 0..2), (1, 2..4), (2, 4..5)]);
        let middle = batch.select(&[runs[1].1.clone()]);
        assert_eq!(middle.rows().unwrap(), rows(&[5000, 5001]));
        let back = WriteBatch::parse(middle.to_bytes()).unwrap();
        assert_eq!(back.rows().unwrap(), rows(&[5000, 5001]));
        let scattered = batch.select(&[0..1, 4..5]);
        assert_eq!(scattered.rows().unwrap(), rows(&[1, 9000]));
    }

    #[test]
    fn keys_no_group_takes_are_named() {
        let batch = WriteBatch::encode(1, 1, &rows(&[1, 99999])).unwrap();
        assert_eq!(batch.runs(|k| (k < 4096).then_some(0)), Err(99999));
    }

    #[test]
    fn malformed_batches_are_refused() {
        assert_eq!(WriteBatch::parse(Bytes::from_static(&[0; 5])), Err(BatchError::Truncated("prefix")));
        let mut huge_count = BytesMut::new();
        huge_count.put_u64(1);
        huge_count.put_u64(1);
        huge_count.put_u32(u32::MAX);
        assert_eq!(WriteBatch::parse(huge_count.freeze()), Err(BatchError::Truncated("index")));
        let good = WriteBatch::encode(1, 1, &rows(&[1, 2])).unwrap().to_bytes();
        let mut short = BytesMut::from(&good[..good.len() - 1]);
        assert!(matches!(WriteBatch::parse(short.split().freeze()), Err(BatchError::BadIndex(_))));
    }
}
