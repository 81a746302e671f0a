//! An in-memory table with redb's durability rules, for the simulator.
//!
//! It keeps two copies: what a reader sees now, and what the last durable commit left.
//! [`MemTable::crash`] throws the first away, as a real crash rolls redb back to its last
//! `Durability::Immediate` commit. Its commits pass the same failpoints as the redb
//! table's (`table-commit` on each apply, `term-commit` on each adopted term).
//!
//! Both copies are shared, copied on the next write (`Arc::make_mut`), so a snapshot
//! pins the state it started from as a redb read transaction does, at the cost of one
//! copy of the table in the simulator, never in a node.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use shardline_protocol::{ClientSeqMark, LogEntry, LogPosition, Operation, Row, Schema, ShardSpec, Value};

use super::{ClientMark, SnapshotSource, StoreError, TableMeta, TableStore, DEDUP_WINDOW};
use crate::failpoint::{Failpoints, Point};

#[derive(Debug, Clone, Default)]
struct State {
    spec: Option<ShardSpec>,
    schema: Option<Schema>,
    term: u64,
    applied: LogPosition,
    installing: bool,
    rows: BTreeMap<i64, Vec<Value>>,
    clients: BTreeMap<(u64, u64), ClientMark>,
    by_index: BTreeMap<u64, (u64, u64)>,
}

#[derive(Debug, Default)]
struct Copies {
    now: Arc<State>,
    durable: Arc<State>,
}

/// An in-memory shard table; clones share it (and its failpoints).
#[derive(Debug, Clone, Default)]
pub struct MemTable {
    inner: Arc<Mutex<Copies>>,
    failpoints: Arc<Failpoints>,
}

impl MemTable {
    /// An empty, unconfigured table.
    pub fn new() -> MemTable {
        MemTable::default()
    }

    /// The same table as a (simulated) process opens it: its commits pass `failpoints`,
    /// as a redb table's pass those it was opened with.
    pub fn with_failpoints(&self, failpoints: Arc<Failpoints>) -> MemTable {
        MemTable { inner: self.inner.clone(), failpoints }
    }

    /// A crash: everything after the last durable commit is gone.
    pub fn crash(&self) {
        let mut c = self.inner.lock().expect("mem table lock");
        c.now = c.durable.clone();
    }

    fn commit(&self, durable: bool, point: Option<Point>, change: impl FnOnce(&mut State)) -> Result<(), StoreError> {
        self.failpoints.around_commit(point, || {
            let mut c = self.inner.lock().expect("mem table lock");
            change(Arc::make_mut(&mut c.now));
            if durable {
                c.durable = c.now.clone();
            }
            Ok(())
        })
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.inner.lock().expect("mem table lock").now)
    }
}

impl TableStore for MemTable {
    type Snapshot = MemSnapshot;

    fn meta(&self) -> Result<Option<TableMeta>, StoreError> {
        Ok(self.read(|s| {
            s.spec.map(|spec| TableMeta {
                spec,
                schema: s.schema.clone().unwrap_or(Schema { columns: vec![] }),
                term: s.term,
                applied: s.applied,
                installing: s.installing,
            })
        }))
    }

    fn configure(&self, spec: &ShardSpec, schema: &Schema) -> Result<(), StoreError> {
        self.commit(true, None, |s| {
            s.spec = Some(*spec);
            s.schema = Some(schema.clone());
        })
    }

    fn set_term(&self, term: u64) -> Result<(), StoreError> {
        self.commit(true, Some(Point::TermCommit), |s| s.term = term)
    }

    fn apply(&self, entries: &[LogEntry], durable: bool) -> Result<(), StoreError> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        self.commit(durable, Some(Point::TableCommit), |s| {
            for entry in entries {
                match &entry.op {
                    Operation::Noop => {}
                    Operation::Write { rows, .. } => {
                        for row in rows {
                            s.rows.insert(row.key, row.values.clone());
                        }
                    }
                    Operation::Update { row, .. } => {
                        s.rows.insert(row.key, row.values.clone());
                    }
                    Operation::Delete { key, .. } => {
                        s.rows.remove(key);
                    }
                }
                if let Some((client, seq)) = entry.op.client_seq() {
                    s.clients.insert((client, seq), ClientMark { seq, term: entry.term, index: entry.index });
                    s.by_index.insert(entry.index, (client, seq));
                }
            }
            let cutoff = last.index.saturating_sub(DEDUP_WINDOW);
            let keep = s.by_index.split_off(&cutoff);
            for mark in std::mem::replace(&mut s.by_index, keep).into_values() {
                s.clients.remove(&mark);
            }
            s.applied = last.position();
        })
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.commit(true, None, |_| {})
    }

    fn contains(&self, key: i64) -> Result<bool, StoreError> {
        Ok(self.read(|s| s.rows.contains_key(&key)))
    }

    fn read_range(&self, low: i64, high: i64) -> Result<Vec<Row>, StoreError> {
        if low > high {
            return Ok(Vec::new());
        }
        Ok(self.read(|s| s.rows.range(low..=high).map(|(k, v)| Row { key: *k, values: v.clone() }).collect()))
    }

    fn read_at(&self, low: i64, high: i64) -> Result<(Vec<Row>, LogPosition), StoreError> {
        Ok(self.read(|s| {
            let rows = if low > high {
                Vec::new()
            } else {
                s.rows.range(low..=high).map(|(k, v)| Row { key: *k, values: v.clone() }).collect()
            };
            (rows, s.applied)
        }))
    }

    fn client_mark(&self, client: u64, seq: u64) -> Result<Option<ClientMark>, StoreError> {
        Ok(self.read(|s| s.clients.get(&(client, seq)).copied()))
    }

    fn snapshot(&self) -> Result<MemSnapshot, StoreError> {
        Ok(MemSnapshot(self.inner.lock().expect("mem table lock").now.clone()))
    }

    fn begin_install(&self) -> Result<(), StoreError> {
        self.commit(true, None, |s| {
            s.rows.clear();
            s.clients.clear();
            s.by_index.clear();
            s.installing = true;
            s.applied = LogPosition::default();
        })
    }

    fn install_rows(&self, chunk: &[Row]) -> Result<(), StoreError> {
        self.commit(false, None, |s| {
            for row in chunk {
                s.rows.insert(row.key, row.values.clone());
            }
        })
    }

    fn finish_install(&self, last_included: LogPosition, marks: &[ClientSeqMark]) -> Result<(), StoreError> {
        self.commit(true, None, |s| {
            for m in marks {
                s.clients
                    .insert((m.client, m.seq), ClientMark { seq: m.seq, term: m.entry.term, index: m.entry.index });
                s.by_index.insert(m.entry.index, (m.client, m.seq));
            }
            s.installing = false;
            s.applied = last_included;
        })
    }
}

/// The table's state when the snapshot began, shared until the next write copies it.
#[derive(Debug)]
pub struct MemSnapshot(Arc<State>);

impl SnapshotSource for MemSnapshot {
    fn applied(&self) -> LogPosition {
        self.0.applied
    }

    fn row_count(&self) -> u64 {
        self.0.rows.len() as u64
    }

    fn rows_after(&self, after: Option<i64>, visit: &mut dyn FnMut(Row) -> bool) -> Result<(), StoreError> {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        for (key, values) in self.0.rows.range((from, Bound::Unbounded)) {
            if !visit(Row { key: *key, values: values.clone() }) {
                break;
            }
        }
        Ok(())
    }

    fn marks_after(
        &self,
        after: Option<(u64, u64)>,
        visit: &mut dyn FnMut(ClientSeqMark) -> bool,
    ) -> Result<(), StoreError> {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        for (&(client, _), mark) in self.0.clients.range((from, Bound::Unbounded)) {
            if !visit(mark.of(client)) {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failpoint::{Action, Fired};
    use shardline_protocol::ShardId;

    fn entry(index: u64, key: i64) -> LogEntry {
        let row = Row::new(key, vec![Value::Int(index as i64)]);
        LogEntry { term: 1, index, op: Operation::Write { client_id: 7, seq: index, rows: vec![row] } }
    }

    #[test]
    fn a_snapshot_is_a_pinned_view() {
        let t = MemTable::new();
        t.configure(&ShardSpec { id: ShardId(1), low: 0, size: 100 }, &Schema::seed()).unwrap();
        crate::store::contract::snapshot_is_pinned_and_resumable(&t);
    }

    #[test]
    fn a_crash_rolls_back_to_the_last_durable_commit() {
        let t = MemTable::new();
        t.configure(&ShardSpec { id: ShardId(1), low: 0, size: 10 }, &Schema::seed()).unwrap();
        t.apply(&[entry(1, 1)], true).unwrap();
        t.apply(&[entry(2, 2)], false).unwrap();
        assert!(t.contains(2).unwrap());
        t.crash();
        assert!(!t.contains(2).unwrap() && t.contains(1).unwrap());
        assert_eq!(t.meta().unwrap().unwrap().applied.index, 1);
        assert_eq!(t.client_mark(7, 1).unwrap().map(|m| m.index), Some(1));
        assert_eq!(t.client_mark(7, 2).unwrap(), None);
    }

    #[test]
    fn a_commit_at_a_failpoint_survives_the_crash_only_if_it_was_made_durable() {
        for (action, durable, survives) in [
            (Action::CrashAfter, true, true),
            (Action::CrashAfter, false, false),
            (Action::CrashBefore, true, false),
            (Action::Tear, true, false),
        ] {
            let failpoints = Arc::new(Failpoints::simulated());
            let t = MemTable::new().with_failpoints(failpoints.clone());
            t.configure(&ShardSpec { id: ShardId(1), low: 0, size: 10 }, &Schema::seed()).unwrap();
            failpoints.arm(Point::TableCommit, action, 2);
            t.apply(&[entry(1, 1)], true).unwrap();
            let died = t.apply(&[entry(2, 2)], durable).unwrap_err();
            assert!(matches!(died, StoreError::Died(Fired { point: Point::TableCommit, .. })), "{died}");
            assert!(t.set_term(3).is_err(), "a dead process commits nothing more");
            t.crash();
            assert_eq!(t.contains(2).unwrap(), survives, "{action} durable {durable}");
            assert!(t.contains(1).unwrap() && t.meta().unwrap().unwrap().term == 0);
        }
    }
}
