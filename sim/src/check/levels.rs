//! The read levels' promises, checked against the committed log.
//!
//! The simulator records the entries every primary applied (a primary applies only
//! committed entries), so the checker knows each shard's committed log even after the
//! replicas truncated its prefix: [`CommittedLog`]. Every read at a level other than
//! primary names the applied index it was served at; then:
//!
//! - [`reads_committed`] (every level, `any` included): the value read is the key's
//!   state in the committed log at that index: a committed prefix, never uncommitted or
//!   lost data.
//! - [`session_monotonic`]: a session read is served at an index no lower than any
//!   commit this client saw acknowledged, or any position it read at, before it asked
//!   (read-your-writes, monotonic reads), across failovers (indexes are comparable
//!   across terms because the committed log is one).
//! - [`bounded_fresh`]: a bounded read is served at an index no lower than every write
//!   acknowledged (to any client) `max_lag_ms` before it was asked, less
//!   `max_lag_entries`; `drift_ppm` widens `max_lag_ms` by the nodes' clock drift.
//!
//! With [`reads_committed`] holding, an index is as good as the data: a read "at" an
//! index returned exactly the state there.

use std::collections::BTreeMap;

use shardline_protocol::{LogEntry, Operation, Value as Cell};

use super::Violation;
use crate::history::{History, Key, Level, LevelRead, Value};

/// One committed entry's effect on the keys it touched.
type Change = Vec<(Key, Option<Value>)>;

/// Each shard's committed log: index → what the entry did.
#[derive(Debug, Default, Clone)]
pub struct CommittedLog {
    shards: BTreeMap<u32, BTreeMap<u64, Change>>,
}

impl CommittedLog {
    /// The log from entries primaries applied (repeats, from later primaries, are ignored).
    pub fn from_entries(entries: impl IntoIterator<Item = (u32, LogEntry)>) -> CommittedLog {
        let mut log = CommittedLog::default();
        for (shard, entry) in entries {
            log.shards.entry(shard).or_default().entry(entry.index).or_insert_with(|| change(&entry.op));
        }
        log
    }

    /// The highest index `i` such that the log holds every entry `1..=i` of `shard`.
    fn known_to(&self, shard: u32) -> u64 {
        let Some(entries) = self.shards.get(&shard) else { return 0 };
        let mut last = 0;
        for &i in entries.keys() {
            if i != last + 1 {
                break;
            }
            last = i;
        }
        last
    }

    /// The key's value once entries `1..=at` of its shard are applied.
    fn state_at(&self, shard: u32, key: Key, at: u64) -> Option<Value> {
        let entries = self.shards.get(&shard)?;
        entries.range(..=at).rev().find_map(|(_, change)| change.iter().find(|(k, _)| *k == key)).and_then(|c| c.1)
    }
}

fn change(op: &Operation) -> Change {
    let value = |values: &[Cell]| match values.get(1) {
        Some(Cell::Int(v)) => Some(*v as u64),
        _ => None,
    };
    match op {
        Operation::Noop => Vec::new(),
        Operation::Write { rows, .. } => rows.iter().map(|r| (r.key, value(&r.values))).collect(),
        Operation::Update { row, .. } => vec![(row.key, value(&row.values))],
        Operation::Delete { key, .. } => vec![(*key, None)],
    }
}

fn stale(checker: &'static str, read: &LevelRead, detail: String) -> Violation {
    Violation::StaleRead { checker, read: Box::new(read.clone()), detail }
}

/// Every level read returned the committed state at the index it was served at.
pub fn reads_committed(history: &History, log: &CommittedLog) -> Result<(), Violation> {
    for read in &history.level_reads {
        if read.at > log.known_to(read.shard) {
            // Entries this run's primaries never applied (the run ended first): not judged.
            continue;
        }
        let want = log.state_at(read.shard, read.key, read.at);
        if want != read.value {
            let show = want.map_or_else(|| "absent".to_string(), |v| v.to_string());
            return Err(stale("reads_committed", read, format!("the committed log has {show} at that index")));
        }
    }
    Ok(())
}

/// Session reads never go back before what their client saw or wrote.
pub fn session_monotonic(history: &History) -> Result<(), Violation> {
    for read in history.level_reads.iter().filter(|r| r.level == Level::Session) {
        let same = |client: u32, shard: u32, complete: u64| {
            client == read.client && shard == read.shard && complete <= read.invoke
        };
        let wrote = history.acked.iter().filter(|a| same(a.client, a.shard, a.complete)).map(|a| a.index).max();
        let saw = history.level_reads.iter().filter(|r| same(r.client, r.shard, r.complete)).map(|r| r.at).max();
        let floor = wrote.unwrap_or(0).max(saw.unwrap_or(0));
        if read.at < floor {
            let detail = format!(
                "served below the session's floor {floor} (own writes up to {}, reads up to {})",
                wrote.unwrap_or(0),
                saw.unwrap_or(0)
            );
            return Err(stale("session_monotonic", read, detail));
        }
    }
    Ok(())
}

/// Bounded reads miss no write acknowledged more than their bound before they were asked.
pub fn bounded_fresh(history: &History, drift_ppm: u64) -> Result<(), Violation> {
    for read in &history.level_reads {
        let Level::Bounded { max_lag_ms, max_lag_entries } = read.level else { continue };
        let lag = max_lag_ms * 1_000_000;
        let lag = lag + lag / 1_000_000 * 2 * drift_ppm + 1_000;
        let Some(cutoff) = read.invoke.checked_sub(lag) else { continue };
        let acked =
            history.acked.iter().filter(|a| a.shard == read.shard && a.complete < cutoff).map(|a| a.index).max();
        let floor = acked.unwrap_or(0).saturating_sub(max_lag_entries);
        if read.at < floor {
            let detail = format!(
                "served at {} but a write acknowledged more than {max_lag_ms} ms before sits at {}",
                read.at,
                acked.unwrap_or(0)
            );
            return Err(stale("bounded_fresh", read, detail));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Acked;
    use shardline_protocol::Row;

    const MS: u64 = 1_000_000;

    fn log() -> CommittedLog {
        let put = |index, key, v: i64| {
            let row = Row::new(key, vec![Cell::Str(String::new()), Cell::Int(v)]);
            (1, LogEntry { term: 1, index, op: Operation::Update { client_id: 1, seq: index, row } })
        };
        let noop = |index| (1, LogEntry { term: 1, index, op: Operation::Noop });
        let delete =
            |index, key| (1, LogEntry { term: 2, index, op: Operation::Delete { client_id: 1, seq: index, key } });
        CommittedLog::from_entries([noop(1), put(2, 7, 10), put(3, 8, 11), put(4, 7, 12), delete(5, 7), noop(7)])
    }

    fn read(client: u32, level: Level, invoke: u64, value: Option<Value>, at: u64) -> LevelRead {
        LevelRead { client, shard: 1, key: 7, level, invoke, complete: invoke + MS, value, at }
    }

    fn acked(client: u32, index: u64, complete: u64) -> Acked {
        Acked { client, shard: 1, key: 7, index, complete }
    }

    #[test]
    fn a_read_must_return_the_committed_state_at_its_index() {
        let log = log();
        assert_eq!(log.known_to(1), 5, "index 6 is missing");
        let mut h = History::new();
        h.level_reads = vec![
            read(1, Level::Any, 0, None, 1),
            read(1, Level::Any, 0, Some(10), 3),
            read(1, Level::Any, 0, Some(12), 4),
            read(1, Level::Any, 0, None, 5),
            read(1, Level::Any, 0, Some(99), 7),
        ];
        assert!(reads_committed(&h, &log).is_ok(), "index 7 lies past the gap: not judged");
        h.level_reads.push(read(2, Level::Any, 0, Some(12), 3));
        let v = reads_committed(&h, &log).unwrap_err();
        assert!(v.to_string().starts_with("reads_committed"), "{v}");
        // A value the committed log never held at all (uncommitted data) is caught too.
        h.level_reads.pop();
        h.level_reads.push(read(2, Level::Any, 0, Some(13), 4));
        assert!(reads_committed(&h, &log).is_err());
    }

    #[test]
    fn a_session_never_goes_back() {
        let mut h = History::new();
        h.acked = vec![acked(1, 4, 10 * MS), acked(2, 5, 10 * MS)];
        h.level_reads = vec![read(1, Level::Session, 20 * MS, Some(12), 4), read(1, Level::Session, 30 * MS, None, 5)];
        assert!(session_monotonic(&h).is_ok());
        // Read-your-writes: its own write at 4 acknowledged before, then served at 3.
        h.level_reads.push(read(1, Level::Session, 40 * MS, Some(10), 3));
        let v = session_monotonic(&h).unwrap_err();
        assert!(v.to_string().starts_with("session_monotonic"), "{v}");
        // Another client's session has its own floor: client 2 wrote 5 and read 5.
        h.level_reads.pop();
        h.level_reads.push(read(2, Level::Session, 40 * MS, None, 5));
        assert!(session_monotonic(&h).is_ok());
        // Monotonic reads: client 3 read at 5 once (an `any` read), then a session read at 4.
        h.level_reads.push(read(3, Level::Any, 50 * MS, None, 5));
        h.level_reads.push(read(3, Level::Session, 60 * MS, Some(12), 4));
        assert!(session_monotonic(&h).is_err());
    }

    #[test]
    fn a_bounded_read_sees_what_was_acknowledged_before_its_bound() {
        let bounded = Level::Bounded { max_lag_ms: 100, max_lag_entries: 0 };
        let entries = Level::Bounded { max_lag_ms: 100, max_lag_entries: 2 };
        let mut h = History::new();
        h.acked = vec![acked(1, 4, 100 * MS), acked(1, 5, 190 * MS)];
        // At 250 ms the write acked at 100 ms is over 100 ms old; the one at 190 ms is not.
        h.level_reads = vec![read(2, bounded, 250 * MS, Some(12), 4), read(2, entries, 400 * MS, Some(10), 3)];
        assert!(bounded_fresh(&h, 500).is_ok());
        h.level_reads.push(read(2, bounded, 250 * MS, Some(10), 3));
        let v = bounded_fresh(&h, 500).unwrap_err();
        assert!(v.to_string().starts_with("bounded_fresh"), "{v}");
        h.level_reads.pop();
        h.level_reads.push(read(2, entries, 400 * MS, Some(10), 2));
        assert!(bounded_fresh(&h, 500).is_err(), "3 entries behind, 2 allowed");
    }
}
