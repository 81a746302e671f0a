//! Merging per-shard answers into one, with no I/O and without decoding rows.
//!
//! A `Response::Rows` payload is postcard: the variant's index, the row count as a varint,
//! then the rows back to back. Shards own disjoint key ranges and each answers in key
//! order, so the answer to a read across shards is the shards' row bytes concatenated in
//! key order under the summed count: spliced, never deserialized.
//!
//! `Response::Committed` answers are small (one entry per shard), so they are decoded,
//! concatenated and encoded again.

use shardline_protocol::rows;
use shardline_protocol::{ErrorCode, Frame, Message, Response};

/// The frame kind of `Response::Rows`.
pub fn rows_kind() -> u8 {
    rows::ROWS_KIND
}

/// Concatenates `Response::Rows` frames (already in key order) into one payload; a frame
/// that is not one is refused as `Internal` (a node sent something it should not have).
pub fn merge_rows(parts: &[Frame]) -> Result<bytes::Bytes, ErrorCode> {
    rows::merge_rows(parts).map_err(|_| ErrorCode::Internal("a node answered a read with no rows".into()))
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
    use shardline_protocol::{ShardCommit, ShardId};

    fn frame(r: Response) -> Frame {
        r.to_frame(1).unwrap()
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
