//! A `Response::Rows` answer built and spliced as bytes, never as typed rows.
//!
//! Its payload is postcard: the variant's index, the positions the rows were read at
//! (postcard `Vec<ShardPosition>`, a few bytes a shard), the row count as a varint, then
//! each row (its key as a zigzag varint, then its other columns as postcard `Vec<Value>`)
//! back to back. A storage node keeps exactly those column bytes per key, so it answers a
//! read by copying stored bytes behind each key ([`RowsWriter`]); a balancer answers a
//! read across shards by concatenating the shards' positions and row bytes under the
//! summed count ([`merge_rows`]), since shards own disjoint ranges and each answers in key
//! order. Only the positions are decoded on the way, never a row.

use bytes::{BufMut, Bytes, BytesMut};

use crate::consistency::ShardPosition;
use crate::message::kind;
use crate::{Frame, Row};

/// The frame kind of `Response::Rows`: its variant index is 5 (checked by a test).
pub const ROWS_KIND: u8 = kind::RESPONSE_BASE + 5;

/// Reads a postcard (LEB128) varint: the value and the bytes it took.
pub fn read_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Appends `value` as a postcard (LEB128) varint.
pub fn put_varint(mut value: u64, dst: &mut impl BufMut) {
    while value >= 0x80 {
        dst.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    dst.put_u8(value as u8);
}

/// Appends `key` as postcard encodes an `i64` (zigzag, then varint).
pub fn put_key(key: i64, dst: &mut impl BufMut) {
    put_varint(((key << 1) ^ (key >> 63)) as u64, dst);
}

/// Builds a `Response::Rows` payload row by row, in key order.
#[derive(Debug, Default)]
pub struct RowsWriter {
    at: Vec<ShardPosition>,
    rows: BytesMut,
    count: u64,
}

impl RowsWriter {
    /// An empty answer.
    pub fn new() -> RowsWriter {
        RowsWriter::default()
    }

    /// Adds a row from its key and its other columns as stored (postcard `Vec<Value>`).
    pub fn push_encoded(&mut self, key: i64, values: &[u8]) {
        put_key(key, &mut self.rows);
        self.rows.extend_from_slice(values);
        self.count += 1;
    }

    /// Adds a typed row.
    pub fn push(&mut self, row: &Row) {
        let values = postcard::to_allocvec(&row.values).expect("values encode");
        self.push_encoded(row.key, &values);
    }

    /// Records the position the rows of one shard are read at.
    pub fn read_at(&mut self, position: ShardPosition) {
        self.at.push(position);
    }

    /// Rows added so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Bytes the payload will take.
    pub fn payload_len(&self) -> usize {
        1 + 10 + positions_len(&self.at) + self.rows.len()
    }

    /// The answer's payload.
    pub fn into_payload(self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.payload_len());
        out.put_u8(ROWS_KIND - kind::RESPONSE_BASE);
        put_positions(&self.at, &mut out);
        put_varint(self.count, &mut out);
        out.extend_from_slice(&self.rows);
        out.freeze()
    }

    /// The answer as a frame answering request `request_id`.
    pub fn into_frame(self, request_id: u64) -> Frame {
        Frame::new(ROWS_KIND, request_id, self.into_payload())
    }
}

/// Bytes `at` takes encoded (at most: 10 for the count, 25 a position).
fn positions_len(at: &[ShardPosition]) -> usize {
    10 + 25 * at.len()
}

fn put_positions(at: &[ShardPosition], out: &mut BytesMut) {
    let bytes = postcard::to_allocvec(at).expect("positions encode");
    out.extend_from_slice(&bytes);
}

/// Splits a `Response::Rows` payload into its positions, its row count and the rows' bytes.
pub fn rows_body(payload: &Bytes) -> Option<(Vec<ShardPosition>, u64, Bytes)> {
    let after_kind = payload.get(1..)?;
    let (at, rest) = postcard::take_from_bytes::<Vec<ShardPosition>>(after_kind).ok()?;
    let start = payload.len() - rest.len();
    let (count, used) = read_varint(rest)?;
    Some((at, count, payload.slice(start + used..)))
}

/// A read answer that is not a `Response::Rows` payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an answer to a read holds no rows")]
pub struct NotRows;

/// Concatenates `Response::Rows` frames (already in key order, shards' ranges disjoint)
/// into one payload.
pub fn merge_rows(parts: &[Frame]) -> Result<Bytes, NotRows> {
    if let [one] = parts {
        return Ok(one.payload.clone());
    }
    let mut total = 0u64;
    let mut at = Vec::with_capacity(parts.len());
    let mut bodies = Vec::with_capacity(parts.len());
    for part in parts {
        let (part_at, count, body) =
            (part.kind == ROWS_KIND).then(|| rows_body(&part.payload)).flatten().ok_or(NotRows)?;
        total += count;
        at.extend(part_at);
        bodies.push(body);
    }
    let mut out = BytesMut::with_capacity(bodies.iter().map(Bytes::len).sum::<usize>() + 11 + positions_len(&at));
    out.put_u8(ROWS_KIND - kind::RESPONSE_BASE);
    put_positions(&at, &mut out);
    put_varint(total, &mut out);
    for body in bodies {
        out.extend_from_slice(&body);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Message, Response, Value};

    fn rows(keys: impl Iterator<Item = i64>) -> Vec<Row> {
        keys.map(|k| Row::new(k, vec![Value::Str(format!("n{k}")), Value::Int(k)])).collect()
    }

    #[test]
    fn the_rows_kind_is_the_variants() {
        assert_eq!(Response::Rows { at: Vec::new(), rows: Vec::new() }.to_frame(0).unwrap().kind, ROWS_KIND);
    }

    #[test]
    fn written_rows_decode_as_the_typed_answer() {
        // Negative, zero and extreme keys; 200 rows make the count a two-byte varint.
        let want = rows([i64::MIN, -300, -1, 0, 1, 63, 64, i64::MAX].into_iter().chain(1000..1200));
        let mut w = RowsWriter::new();
        for row in &want {
            w.push(row);
        }
        let at = vec![ShardPosition { shard: crate::ShardId(3), term: 7, index: 1 << 40 }];
        w.read_at(at[0]);
        assert_eq!(w.count(), want.len() as u64);
        let frame = w.into_frame(9);
        assert_eq!(frame, Response::Rows { at, rows: want }.to_frame(9).unwrap());
        let empty = Response::Rows { at: Vec::new(), rows: Vec::new() };
        assert_eq!(RowsWriter::new().into_frame(1), empty.to_frame(1).unwrap());
    }

    #[test]
    fn row_bytes_are_spliced_in_order() {
        let at =
            |shard: u32| vec![ShardPosition { shard: crate::ShardId(shard), term: 2, index: u64::from(shard) * 300 }];
        let frame = |s: u32, r: Vec<Row>| Response::Rows { at: at(s), rows: r }.to_frame(1).unwrap();
        let parts = [frame(1, rows(0..3)), frame(2, vec![]), frame(3, rows(10..210))];
        let merged = merge_rows(&parts).unwrap();
        let back = Frame::new(ROWS_KIND, 1, merged);
        let want = Response::Rows { at: [at(1), at(2), at(3)].concat(), rows: rows((0..3).chain(10..210)) };
        assert_eq!(Response::from_frame(&back).unwrap(), want);
        let wrong = [Response::Pong.to_frame(1).unwrap(), frame(1, rows(0..1))];
        assert_eq!(merge_rows(&wrong), Err(NotRows));
    }

    #[test]
    fn varints_round_trip() {
        for v in [0, 1, 127, 128, 300, 16_384, u64::MAX] {
            let mut b = BytesMut::new();
            put_varint(v, &mut b);
            assert_eq!(read_varint(&b), Some((v, b.len())));
        }
        assert_eq!(read_varint(&[0x80, 0x80]), None);
    }
}
