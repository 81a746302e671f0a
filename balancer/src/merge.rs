//! Merging per-shard answers into one, with no I/O and without decoding rows.
//!
//! A `Response::Rows` payload is postcard: the variant's index, the row count as a varint,
//! then the rows back to back. Shards own disjoint key ranges and each answers in key
//! order, so the answer to a read across shards is the shards' row bytes concatenated in
//! key order under the summed count: spliced, never deserialized.
//!
//! `Response::Committed` answers are small (one entry per shard), so they are decoded,
//! concatenated and encoded again.

use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use shardline_protocol::{kind, ErrorCode, Frame, Message, Response};

/// The frame kind of `Response::Rows`.
pub fn rows_kind() -> u8 {
    static KIND: OnceLock<u8> = OnceLock::new();
    *KIND.get_or_init(|| Response::Rows(Vec::new()).to_frame(0).expect("an empty answer encodes").kind)
}

/// Reads a postcard (LEB128) varint: the value and the bytes it took.
fn read_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn put_varint(mut value: u64, dst: &mut BytesMut) {
    while value >= 0x80 {
        dst.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    dst.put_u8(value as u8);
}

/// Splits a `Response::Rows` payload into its row count and the rows' bytes.
fn rows_body(payload: &Bytes) -> Option<(u64, Bytes)> {
    let (count, used) = read_varint(payload.get(1..)?)?;
    Some((count, payload.slice(1 + used..)))
}

/// Concatenates `Response::Rows` frames (already in key order) into one payload.
///
/// Every frame must be of kind [`rows_kind`]; a frame whose payload does not start with a
/// count is refused as `Internal` (a node sent something it should not have).
pub fn merge_rows(parts: &[Frame]) -> Result<Bytes, ErrorCode> {
    if let [one] = parts {
        return Ok(one.payload.clone());
    }
    let mut total = 0u64;
    let mut bodies = Vec::with_capacity(parts.len());
    for part in parts {
        let body = (part.kind == rows_kind())
            .then(|| rows_body(&part.payload))
            .flatten()
            .ok_or_else(|| ErrorCode::Internal("a node answered a read with no rows".into()))?;
        total += body.0;
        bodies.push(body.1);
    }
    let len = bodies.iter().map(Bytes::len).sum::<usize>() + 11;
    let mut out = BytesMut::with_capacity(len);
    out.put_u8(rows_kind() - kind::RESPONSE_BASE);
    put_varint(total, &mut out);
    for body in bodies {
        out.extend_from_slice(&body);
    }
    Ok(out.freeze())
}

/// Merges `Response::Committed` frames into one response, commits in shard order.
pub fn merge_commits(parts: &[Frame]) -> Result<Response, ErrorCode> {
    let mut commits = Vec::new();
    for part in parts {
        match Response::from_frame(part) {
            Ok(Response::Committed(c)) => commits.extend(c),
            Ok(other) => return Err(ErrorCode::Internal(format!("a node answered a write with {other:?}"))),
            Err(e) => return Err(ErrorCode::Internal(e.to_string())),
        }
    }
    commits.sort_by_key(|c| c.shard);
    Ok(Response::Committed(commits))
}

/// The error an error frame carries (or why it does not decode).
pub fn error_of(frame: &Frame) -> ErrorCode {
    match Response::from_frame(frame) {
        Ok(Response::Error(e)) => e,
        Ok(other) => ErrorCode::Internal(format!("expected an error, got {other:?}")),
        Err(e) => ErrorCode::Internal(format!("undecodable answer: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline_protocol::{Row, ShardCommit, ShardId, Value};

    fn rows(keys: std::ops::Range<i64>) -> Vec<Row> {
        keys.map(|k| Row::new(k, vec![Value::Str(format!("n{k}")), Value::Int(k)])).collect()
    }

    fn frame(r: Response) -> Frame {
        r.to_frame(1).unwrap()
    }

    #[test]
    fn row_bytes_are_spliced_in_order() {
        // 200 rows make the count a two-byte varint.
        let parts =
            [frame(Response::Rows(rows(0..3))), frame(Response::Rows(vec![])), frame(Response::Rows(rows(10..210)))];
        let merged = merge_rows(&parts).unwrap();
        let back = Frame::new(rows_kind(), 1, merged);
        let mut want = rows(0..3);
        want.extend(rows(10..210));
        assert_eq!(Response::from_frame(&back).unwrap(), Response::Rows(want));
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

    #[test]
    fn wrong_answers_are_refused() {
        let parts = [frame(Response::Pong), frame(Response::Rows(rows(0..1)))];
        assert!(matches!(merge_rows(&parts), Err(ErrorCode::Internal(_))));
    }

    #[test]
    fn commits_merge_by_shard() {
        let c = |s: u32| ShardCommit {
            shard: ShardId(s),
            term: 1,
            index: u64::from(s),
            replicas: vec!["A".into()],
            rows: 1,
        };
        let parts = [frame(Response::Committed(vec![c(2)])), frame(Response::Committed(vec![c(1)]))];
        assert_eq!(merge_commits(&parts).unwrap(), Response::Committed(vec![c(1), c(2)]));
        let err = frame(Response::Error(ErrorCode::NotFound { key: 3 }));
        assert_eq!(error_of(&err), ErrorCode::NotFound { key: 3 });
    }
}
