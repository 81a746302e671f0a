//! The replica's log as readers outside the core see it: `LOG <shard>` lines, and the
//! (term, index, crc) digest the simulator's convergence checks compare.

use shardline_protocol::{LogEntry, LogLine};

use super::Replica;
use crate::disk::Disk;
use crate::store::TableStore;

impl<D: Disk, T: TableStore> Replica<D, T> {
    /// The (term, index, crc) of every entry the log keeps, for convergence checks.
    pub fn log_digest(&self) -> Vec<(u64, u64, u32)> {
        let mem = self.wal.mem();
        (mem.base().index + 1..=mem.last().index)
            .filter_map(|i| mem.record(i).map(|r| (mem.term_at(i).unwrap_or(0), i, crc_of(&r))))
            .collect()
    }

    /// The last `count` log entries, for `LOG <shard>`.
    pub fn log_lines(&self, count: u32) -> Vec<LogLine> {
        let mem = self.wal.mem();
        let last = mem.last().index;
        let from = last.saturating_sub(u64::from(count)).max(mem.base().index) + 1;
        let mut lines: Vec<LogLine> = (from..=last)
            .filter_map(|i| mem.record(i).map(|r| (i, r)))
            .map(|(index, record)| {
                let crc = crc_of(&record);
                let (term, crc_ok, summary) = match LogEntry::decode(&record) {
                    Ok(e) => (e.term, true, e.op.summary()),
                    Err(e) => (0, false, e.to_string()),
                };
                LogLine { index, term, crc, crc_ok, summary, committed: index <= self.commit }
            })
            .collect();
        if let Some((index, why)) = &self.fault {
            lines.push(LogLine {
                index: *index,
                term: 0,
                crc: 0,
                crc_ok: false,
                summary: why.clone(),
                committed: false,
            });
        }
        lines
    }
}

fn crc_of(record: &[u8]) -> u32 {
    u32::from_be_bytes(record[..4].try_into().expect("a record starts with its crc"))
}
