//! The replicated log entry: (term, index, operation) under its own CRC-32.
//!
//! An entry is checked when it is written, replayed, replicated and read, so that a
//! damaged entry is never applied. Stored and sent as one self-delimiting record:
//!
//! ```text
//! offset  size  field
//! ------  ----  ------------------------------------------------------
//!      0     4  crc       CRC-32 (crc32fast) of bytes 4..end
//!      4     4  op len L  length of the operation bytes
//!      8     8  term      term of the primary that appended the entry
//!     16     8  index     position in the shard's log, from 1
//!     24     L  op        postcard `Operation`
//! ```
//!
//! Big-endian, like frames. Decoding takes exactly one record: a length that disagrees
//! with the bytes given is an error, not a request for more.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::model::{LogPosition, Row};

/// Size of the fixed part of an entry.
pub const ENTRY_HEADER_LEN: usize = 24;
/// Offset of the CRC.
pub const ENTRY_OFF_CRC: usize = 0;
/// Offset of the operation length.
pub const ENTRY_OFF_LEN: usize = 4;
/// Offset of the term.
pub const ENTRY_OFF_TERM: usize = 8;
/// Offset of the index.
pub const ENTRY_OFF_INDEX: usize = 16;

/// What an entry does to the shard's table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Operation {
    /// Nothing; a new primary commits one in its own term before anything else.
    Noop,
    /// Insert rows (all new keys).
    Write {
        /// The client that sent it (0: none).
        client_id: u64,
        /// The client's sequence number.
        seq: u64,
        /// The rows, checked against the schema.
        rows: Vec<Row>,
    },
    /// Replace one existing row.
    Update {
        /// The client that sent it (0: none).
        client_id: u64,
        /// The client's sequence number.
        seq: u64,
        /// The new row.
        row: Row,
    },
    /// Remove one existing row.
    Delete {
        /// The client that sent it (0: none).
        client_id: u64,
        /// The client's sequence number.
        seq: u64,
        /// The key.
        key: i64,
    },
}

impl Operation {
    /// The (client id, sequence) pair that makes a retried operation idempotent.
    pub fn client_seq(&self) -> Option<(u64, u64)> {
        match *self {
            Operation::Noop => None,
            Operation::Write { client_id, seq, .. }
            | Operation::Update { client_id, seq, .. }
            | Operation::Delete { client_id, seq, .. } => (client_id != 0).then_some((client_id, seq)),
        }
    }

    /// A one-line description for `LOG` and traces.
    pub fn summary(&self) -> String {
        match self {
            Operation::Noop => "noop".into(),
            Operation::Write { rows, .. } => match rows.as_slice() {
                [one] => format!("write key {}", one.key),
                [first, .., last] => format!("write {} rows, keys {}..={}", rows.len(), first.key, last.key),
                [] => "write 0 rows".into(),
            },
            Operation::Update { row, .. } => format!("update key {}", row.key),
            Operation::Delete { key, .. } => format!("delete key {key}"),
        }
    }
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Term of the primary that appended it.
    pub term: u64,
    /// Position in the log, from 1.
    pub index: u64,
    /// What it does.
    pub op: Operation,
}

/// Why bytes are not a log entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// Fewer bytes than the fixed header.
    #[error("log entry truncated: {0} bytes")]
    Truncated(usize),
    /// The declared length disagrees with the record's size.
    #[error("log entry length {declared} does not match {actual} bytes of operation")]
    Length {
        /// What the entry says.
        declared: usize,
        /// What was given.
        actual: usize,
    },
    /// The CRC does not match: the entry is damaged.
    #[error("log entry checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// CRC in the entry.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// The operation does not decode.
    #[error("log entry operation does not decode: {0}")]
    Operation(String),
    /// The operation is too large to encode.
    #[error("log entry operation cannot be encoded: {0}")]
    Encode(String),
}

impl LogEntry {
    /// The entry's (term, index).
    pub fn position(&self) -> LogPosition {
        LogPosition { term: self.term, index: self.index }
    }

    /// Encodes the entry as one record.
    pub fn encode(&self) -> Result<Bytes, EntryError> {
        let op = postcard::to_allocvec(&self.op).map_err(|e| EntryError::Encode(e.to_string()))?;
        let len = u32::try_from(op.len()).map_err(|_| EntryError::Encode("over 4 GiB".into()))?;
        let mut buf = BytesMut::with_capacity(ENTRY_HEADER_LEN + op.len());
        buf.put_u32(0);
        buf.put_u32(len);
        buf.put_u64(self.term);
        buf.put_u64(self.index);
        buf.put_slice(&op);
        let crc = crc32fast::hash(&buf[ENTRY_OFF_LEN..]);
        buf[ENTRY_OFF_CRC..ENTRY_OFF_LEN].copy_from_slice(&crc.to_be_bytes());
        Ok(buf.freeze())
    }

    /// Decodes exactly one record, verifying its CRC before anything else is trusted.
    pub fn decode(record: &[u8]) -> Result<LogEntry, EntryError> {
        let (term, index) = verify(record)?;
        let (op, rest) =
            postcard::take_from_bytes(&record[ENTRY_HEADER_LEN..]).map_err(|e| EntryError::Operation(e.to_string()))?;
        if !rest.is_empty() {
            return Err(EntryError::Operation(format!("{} bytes after the operation", rest.len())));
        }
        Ok(LogEntry { term, index, op })
    }
}

/// Checks a record's length and CRC without decoding the operation; returns (term, index).
pub fn verify(record: &[u8]) -> Result<(u64, u64), EntryError> {
    if record.len() < ENTRY_HEADER_LEN {
        return Err(EntryError::Truncated(record.len()));
    }
    let be32 = |at: usize| u32::from_be_bytes(record[at..at + 4].try_into().expect("4 bytes"));
    let be64 = |at: usize| u64::from_be_bytes(record[at..at + 8].try_into().expect("8 bytes"));
    let declared = be32(ENTRY_OFF_LEN) as usize;
    let actual = record.len() - ENTRY_HEADER_LEN;
    if declared != actual {
        return Err(EntryError::Length { declared, actual });
    }
    let stored = be32(ENTRY_OFF_CRC);
    let computed = crc32fast::hash(&record[ENTRY_OFF_LEN..]);
    if stored != computed {
        return Err(EntryError::Checksum { stored, computed });
    }
    Ok((be64(ENTRY_OFF_TERM), be64(ENTRY_OFF_INDEX)))
}

/// One line of a `LOG` answer: an entry's position, what it does, and its CRC status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// The entry's index.
    pub index: u64,
    /// Its term (0 when the record is too damaged to tell).
    pub term: u64,
    /// Its stored CRC.
    pub crc: u32,
    /// Whether the CRC matched.
    pub crc_ok: bool,
    /// What it does, or why it cannot be read.
    pub summary: String,
    /// Whether it is committed.
    pub committed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Value;

    fn entry() -> LogEntry {
        LogEntry {
            term: 3,
            index: 17,
            op: Operation::Write {
                client_id: 5,
                seq: 6,
                rows: vec![Row::new(9, vec![Value::Str("ann".into()), Value::Int(90)])],
            },
        }
    }

    #[test]
    fn round_trip() {
        let e = entry();
        let bytes = e.encode().unwrap();
        assert_eq!(LogEntry::decode(&bytes).unwrap(), e);
        assert_eq!(verify(&bytes).unwrap(), (3, 17));
        assert_eq!(e.op.client_seq(), Some((5, 6)));
        assert_eq!(e.op.summary(), "write key 9");
    }

    #[test]
    fn every_single_byte_flip_is_caught() {
        let bytes = entry().encode().unwrap();
        for at in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut bad = bytes.to_vec();
                bad[at] ^= flip;
                assert!(LogEntry::decode(&bad).is_err(), "flip {flip:#x} at {at} went unnoticed");
            }
        }
    }

    #[test]
    fn truncation_and_trailing_bytes_are_refused() {
        let bytes = entry().encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(LogEntry::decode(&bytes[..cut]).is_err());
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(matches!(LogEntry::decode(&longer), Err(EntryError::Length { .. })));
    }
}
