//! The node's on-disk log, read record by record so a test can damage one entry.
//!
//! Layout: `<data-dir>/shards/<shard number>/log/<first index, 20 digits>.seg`, each file
//! holding [`LogEntry`](shardline_protocol::LogEntry) records back to back (the byte table
//! is in `protocol/src/log_entry.rs`).

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use shardline_protocol::log_entry::{verify, ENTRY_HEADER_LEN, ENTRY_OFF_LEN};
use shardline_protocol::ShardId;

/// Where one record sits on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// The segment file.
    pub path: PathBuf,
    /// Offset of the record's first byte in the file.
    pub offset: u64,
    /// The record's length, header included.
    pub len: usize,
    /// Its term.
    pub term: u64,
    /// Its index.
    pub index: u64,
}

impl Record {
    /// File offset of the middle byte of the record's operation.
    pub(crate) fn op_middle(&self) -> u64 {
        let op_len = self.len - ENTRY_HEADER_LEN;
        self.offset + (ENTRY_HEADER_LEN + op_len / 2) as u64
    }
}

/// The log directory of `shard` under `data_dir`.
pub(crate) fn log_dir(data_dir: &Path, shard: ShardId) -> PathBuf {
    data_dir.join("shards").join(shard.0.to_string()).join("log")
}

/// The segment files of `shard`, oldest first.
pub(crate) fn segments(data_dir: &Path, shard: ShardId) -> Result<Vec<PathBuf>, String> {
    let dir = log_dir(data_dir, shard);
    let listing = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = listing
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    Ok(files)
}

/// Every whole, CRC-valid record of `shard`'s log, in file order. A damaged record or a
/// short tail is an error (this reads a log the test has not damaged yet).
pub(crate) fn records(data_dir: &Path, shard: ShardId) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    for path in segments(data_dir, shard)? {
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut at = 0usize;
        while at < bytes.len() {
            let rest = &bytes[at..];
            if rest.len() < ENTRY_HEADER_LEN {
                return Err(format!("{}: {} stray bytes at offset {at}", path.display(), rest.len()));
            }
            let op_len =
                u32::from_be_bytes(rest[ENTRY_OFF_LEN..ENTRY_OFF_LEN + 4].try_into().expect("4 bytes")) as usize;
            let len = ENTRY_HEADER_LEN + op_len;
            if rest.len() < len {
                return Err(format!("{}: record at {at} declares {len} bytes, {} left", path.display(), rest.len()));
            }
            let (term, index) = verify(&rest[..len]).map_err(|e| format!("{}: record at {at}: {e}", path.display()))?;
            out.push(Record { path: path.clone(), offset: at as u64, len, term, index });
            at += len;
        }
    }
    Ok(out)
}

/// XORs the byte at `offset` of `path` with `mask` (non-zero), in place.
pub(crate) fn flip_byte(path: &Path, offset: u64, mask: u8) -> std::io::Result<()> {
    assert_ne!(mask, 0, "a zero mask changes nothing");
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut byte)?;
    byte[0] ^= mask;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(&byte)?;
    file.sync_all()
}
