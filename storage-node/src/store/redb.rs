//! A shard replica's table in redb: the rows, the replica's metadata, and client marks.
//!
//! One redb file per shard replica (`<shard dir>/table.redb`), three tables:
//!
//! | table | key | value |
//! |---|---|---|
//! | `rows` | shard key (i64) | postcard `Vec<Value>`: the other columns |
//! | `meta` | name | postcard: `spec`, `schema`, `term`, `applied` (term, index), `installing` |
//! | `clients` | (client id, seq) | postcard `ClientMark`: the entry that applied it |
//! | `clients_by_index` | log index | (client id, seq), to forget marks past [`DEDUP_WINDOW`] |
//!
//! Applying committed entries updates rows, marks and `applied` in one transaction, so a
//! table is always exactly "the log applied up to `applied`". Those commits skip the fsync
//! (`Durability::None`): the log is the durable copy, and after a crash redb rolls back
//! to its last durable commit and the shard replays the log from there. Terms, shard
//! configuration and snapshot installs commit with `Durability::Immediate`.

use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ::redb::{
    Database, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use shardline_protocol::rows::RowsWriter;
use shardline_protocol::{ClientSeqMark, LogEntry, LogPosition, Operation, Row, Schema, ShardSpec, Value};

use super::{SnapshotSource, TableStore};
use crate::failpoint::{Failpoints, Fired, Point};

const ROWS: TableDefinition<i64, &[u8]> = TableDefinition::new("rows");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const CLIENTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("clients");
const CLIENTS_BY_INDEX: TableDefinition<u64, (u64, u64)> = TableDefinition::new("clients_by_index");

/// Client marks older than this many log entries are forgotten: a retry must arrive
/// within this many writes to the shard to be recognised.
pub const DEDUP_WINDOW: u64 = 100_000;

/// Why a table operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// redb failed.
    #[error("table: {0}")]
    Redb(#[from] ::redb::Error),
    /// A stored value does not decode.
    #[error("table value `{0}` does not decode: {1}")]
    Decode(&'static str, String),
    /// The log failed.
    #[error("log: {0}")]
    Io(#[from] std::io::Error),
    /// A failpoint killed the (simulated) process: nothing more is written.
    #[error(transparent)]
    Died(#[from] Fired),
}

impl StoreError {
    /// Whether the stored data itself is damaged (a checksum, a length, a value that does
    /// not decode), as opposed to the disk or the system failing now.
    pub fn is_damage(&self) -> bool {
        match self {
            StoreError::Redb(::redb::Error::Corrupted(_)) | StoreError::Decode(..) => true,
            StoreError::Io(e) => e.kind() == std::io::ErrorKind::InvalidData,
            StoreError::Redb(_) | StoreError::Died(_) => false,
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> StoreError {
                StoreError::Redb(e.into())
            }
        }
    )*};
}
from_redb!(
    ::redb::DatabaseError,
    ::redb::TransactionError,
    ::redb::TableError,
    ::redb::StorageError,
    ::redb::CommitError,
    ::redb::SetDurabilityError
);

/// The replica's persisted metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct TableMeta {
    /// The shard and its key range.
    pub spec: ShardSpec,
    /// The table's schema.
    pub schema: Schema,
    /// The highest term this replica has adopted.
    pub term: u64,
    /// The last log entry applied to the rows.
    pub applied: LogPosition,
    /// A snapshot install began and did not finish: the rows are not to be trusted.
    pub installing: bool,
}

/// Where a client's write was applied: what a retry of it is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientMark {
    /// The client's sequence number.
    pub seq: u64,
    /// Term of the entry that carried it.
    pub term: u64,
    /// Index of that entry.
    pub index: u64,
}

impl ClientMark {
    /// The mark of `client`'s write, as a snapshot carries it.
    pub fn of(self, client: u64) -> ClientSeqMark {
        ClientSeqMark { client, seq: self.seq, entry: LogPosition { term: self.term, index: self.index } }
    }
}

/// One shard replica's redb database.
#[derive(Debug, Clone)]
pub struct Table {
    db: Arc<Database>,
    failpoints: Arc<Failpoints>,
    /// The rows and client marks as of the last commit, shared by every read (and the
    /// primary's checks of existing keys and retries) until the next commit: one read
    /// transaction per commit instead of one per lookup. Every commit drops it, so no stale
    /// view pins pages that later commits freed.
    reader: Arc<Mutex<Option<Arc<View>>>>,
}

/// The tables as of one commit.
#[derive(Debug)]
struct View {
    rows: ReadOnlyTable<i64, &'static [u8]>,
    clients: ReadOnlyTable<(u64, u64), &'static [u8]>,
    /// The last entry applied to these rows (read in the same transaction).
    applied: LogPosition,
}

impl Table {
    /// Opens or creates the table file; `configure` must have run before `meta` is `Some`.
    pub fn open(path: &Path, failpoints: Arc<Failpoints>) -> Result<Table, StoreError> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        tx.open_table(ROWS)?;
        tx.open_table(META)?;
        tx.open_table(CLIENTS)?;
        tx.open_table(CLIENTS_BY_INDEX)?;
        tx.commit()?;
        Ok(Table { db: Arc::new(db), failpoints, reader: Arc::default() })
    }

    fn write(
        &self,
        durability: Durability,
        point: Option<Point>,
        body: impl FnOnce(&::redb::WriteTransaction) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(durability)?;
        body(&tx)?;
        // A transaction dropped uncommitted (crash-before) is rolled back, as an abort would.
        let committed = self.failpoints.around_commit(point, || tx.commit().map_err(StoreError::from));
        // Dropped after the commit (whatever its outcome), before anyone hears of it: a
        // read that follows an acknowledgement opens a view that holds the change.
        *self.reader.lock().expect("reader lock") = None;
        committed
    }

    /// The tables as of the last commit.
    fn view(&self) -> Result<Arc<View>, StoreError> {
        let mut reader = self.reader.lock().expect("reader lock");
        if let Some(view) = reader.as_ref() {
            return Ok(view.clone());
        }
        let tx = self.db.begin_read()?;
        let applied = get(&tx.open_table(META)?, "applied")?.unwrap_or_default();
        let view = Arc::new(View { rows: tx.open_table(ROWS)?, clients: tx.open_table(CLIENTS)?, applied });
        *reader = Some(view.clone());
        Ok(view)
    }

    /// Appends the rows with `low <= key <= high` to `out` as stored, in key order: the
    /// stored column bytes are the answer's, so nothing is decoded or encoded again.
    /// Returns the applied position of the view they were read from; a view that has not
    /// applied `floor` adds no rows (a session read it cannot serve).
    pub fn read_encoded(
        &self,
        low: i64,
        high: i64,
        floor: u64,
        out: &mut RowsWriter,
    ) -> Result<LogPosition, StoreError> {
        let view = self.view()?;
        if low > high || view.applied.index < floor {
            return Ok(view.applied);
        }
        for item in view.rows.range(low..=high)? {
            let (key, value) = item?;
            out.push_encoded(key.value(), value.value());
        }
        Ok(view.applied)
    }
}

impl TableStore for Table {
    type Snapshot = RedbSnapshot;

    /// The stored metadata, or `None` for a table never configured.
    fn meta(&self) -> Result<Option<TableMeta>, StoreError> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        let Some(spec) = get::<ShardSpec>(&meta, "spec")? else {
            return Ok(None);
        };
        Ok(Some(TableMeta {
            spec,
            schema: get(&meta, "schema")?.unwrap_or(Schema { columns: vec![] }),
            term: get(&meta, "term")?.unwrap_or(0),
            applied: get(&meta, "applied")?.unwrap_or_default(),
            installing: get(&meta, "installing")?.unwrap_or(false),
        }))
    }

    /// Stores the shard's range and schema.
    fn configure(&self, spec: &ShardSpec, schema: &Schema) -> Result<(), StoreError> {
        self.write(Durability::Immediate, None, |tx| {
            let mut meta = tx.open_table(META)?;
            put(&mut meta, "spec", spec)?;
            put(&mut meta, "schema", schema)?;
            Ok(())
        })
    }

    /// Durably adopts `term`.
    fn set_term(&self, term: u64) -> Result<(), StoreError> {
        self.write(Durability::Immediate, Some(Point::TermCommit), |tx| put(&mut tx.open_table(META)?, "term", &term))
    }

    /// Applies committed entries in order; `durable` forces an fsync.
    fn apply(&self, entries: &[LogEntry], durable: bool) -> Result<(), StoreError> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let durability = if durable { Durability::Immediate } else { Durability::None };
        self.write(durability, Some(Point::TableCommit), |tx| {
            let mut rows = tx.open_table(ROWS)?;
            let mut clients = tx.open_table(CLIENTS)?;
            let mut by_index = tx.open_table(CLIENTS_BY_INDEX)?;
            for entry in entries {
                match &entry.op {
                    Operation::Noop => {}
                    Operation::Write { rows: new, .. } => {
                        for row in new {
                            rows.insert(row.key, encode(&row.values)?.as_slice())?;
                        }
                    }
                    Operation::Update { row, .. } => {
                        rows.insert(row.key, encode(&row.values)?.as_slice())?;
                    }
                    Operation::Delete { key, .. } => {
                        rows.remove(*key)?;
                    }
                }
                if let Some((client, seq)) = entry.op.client_seq() {
                    let mark = ClientMark { seq, term: entry.term, index: entry.index };
                    clients.insert((client, seq), encode(&mark)?.as_slice())?;
                    by_index.insert(entry.index, (client, seq))?;
                }
            }
            let cutoff = last.index.saturating_sub(DEDUP_WINDOW);
            let old: Vec<(u64, (u64, u64))> = by_index
                .range(..cutoff)?
                .map(|item| item.map(|(k, v)| (k.value(), v.value())))
                .collect::<Result<_, _>>()?;
            for (index, mark) in old {
                clients.remove(mark)?;
                by_index.remove(index)?;
            }
            put(&mut tx.open_table(META)?, "applied", &last.position())
        })
    }

    /// Makes every earlier non-durable commit durable (before the log drops its prefix).
    fn sync(&self) -> Result<(), StoreError> {
        self.write(Durability::Immediate, None, |_| Ok(()))
    }

    /// Whether a row with `key` exists.
    fn contains(&self, key: i64) -> Result<bool, StoreError> {
        Ok(self.view()?.rows.get(key)?.is_some())
    }

    /// Rows with `low <= key <= high`, in key order.
    fn read_range(&self, low: i64, high: i64) -> Result<Vec<Row>, StoreError> {
        if low > high {
            return Ok(Vec::new());
        }
        let tx = self.db.begin_read()?;
        let rows = tx.open_table(ROWS)?;
        let mut out = Vec::new();
        for item in rows.range(low..=high)? {
            let (key, value) = item?;
            out.push(Row { key: key.value(), values: decode("rows", value.value())? });
        }
        Ok(out)
    }

    /// Rows with `low <= key <= high` and the applied position, from one cached view.
    fn read_at(&self, low: i64, high: i64) -> Result<(Vec<Row>, LogPosition), StoreError> {
        let view = self.view()?;
        let mut out = Vec::new();
        if low <= high {
            for item in view.rows.range(low..=high)? {
                let (key, value) = item?;
                out.push(Row { key: key.value(), values: decode("rows", value.value())? });
            }
        }
        Ok((out, view.applied))
    }

    /// Where `client`'s write `seq` was applied, if it was (within the dedup window).
    fn client_mark(&self, client: u64, seq: u64) -> Result<Option<ClientMark>, StoreError> {
        let mark = self.view()?.clients.get((client, seq))?.map(|v| decode("clients", v.value())).transpose()?;
        Ok(mark)
    }

    /// A view pinned by a redb read transaction: later commits do not change what it reads.
    fn snapshot(&self) -> Result<RedbSnapshot, StoreError> {
        let tx = self.db.begin_read()?;
        let applied = get(&tx.open_table(META)?, "applied")?.unwrap_or_default();
        let rows = tx.open_table(ROWS)?;
        let clients = tx.open_table(CLIENTS)?;
        Ok(RedbSnapshot { applied, row_count: rows.len()?, rows, clients })
    }

    /// Starts a snapshot install: clears rows and marks, durably flags the install.
    fn begin_install(&self) -> Result<(), StoreError> {
        self.write(Durability::Immediate, None, |tx| {
            tx.delete_table(ROWS)?;
            tx.delete_table(CLIENTS)?;
            tx.delete_table(CLIENTS_BY_INDEX)?;
            tx.open_table(ROWS)?;
            tx.open_table(CLIENTS)?;
            tx.open_table(CLIENTS_BY_INDEX)?;
            let mut meta = tx.open_table(META)?;
            put(&mut meta, "installing", &true)?;
            put(&mut meta, "applied", &LogPosition::default())
        })
    }

    /// Adds one chunk of snapshot rows.
    fn install_rows(&self, chunk: &[Row]) -> Result<(), StoreError> {
        self.write(Durability::None, None, |tx| {
            let mut rows = tx.open_table(ROWS)?;
            for row in chunk {
                rows.insert(row.key, encode(&row.values)?.as_slice())?;
            }
            Ok(())
        })
    }

    /// Finishes a snapshot install: the rows now reflect the log up to `last_included`.
    fn finish_install(&self, last_included: LogPosition, marks: &[ClientSeqMark]) -> Result<(), StoreError> {
        self.write(Durability::Immediate, None, |tx| {
            let mut clients = tx.open_table(CLIENTS)?;
            let mut by_index = tx.open_table(CLIENTS_BY_INDEX)?;
            for m in marks {
                let mark = ClientMark { seq: m.seq, term: m.entry.term, index: m.entry.index };
                clients.insert((m.client, m.seq), encode(&mark)?.as_slice())?;
                by_index.insert(m.entry.index, (m.client, m.seq))?;
            }
            let mut meta = tx.open_table(META)?;
            put(&mut meta, "installing", &false)?;
            put(&mut meta, "applied", &last_included)
        })
    }
}

/// A table's rows and client marks as one redb read transaction saw them; holding it keeps
/// that transaction's pages from being reused, so the file may grow while it is held.
#[derive(Debug)]
pub struct RedbSnapshot {
    applied: LogPosition,
    row_count: u64,
    rows: ::redb::ReadOnlyTable<i64, &'static [u8]>,
    clients: ::redb::ReadOnlyTable<(u64, u64), &'static [u8]>,
}

impl SnapshotSource for RedbSnapshot {
    fn applied(&self) -> LogPosition {
        self.applied
    }

    fn row_count(&self) -> u64 {
        self.row_count
    }

    fn rows_after(&self, after: Option<i64>, visit: &mut dyn FnMut(Row) -> bool) -> Result<(), StoreError> {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        for item in self.rows.range::<i64>((from, Bound::Unbounded))? {
            let (key, value) = item?;
            if !visit(Row { key: key.value(), values: decode("rows", value.value())? }) {
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
        for item in self.clients.range::<(u64, u64)>((from, Bound::Unbounded))? {
            let (key, value) = item?;
            let mark: ClientMark = decode("clients", value.value())?;
            if !visit(mark.of(key.value().0)) {
                break;
            }
        }
        Ok(())
    }
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(value).map_err(|e| StoreError::Decode("encode", e.to_string()))
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Decode(what, e.to_string()))
}

fn get<T: DeserializeOwned>(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &'static str,
) -> Result<Option<T>, StoreError> {
    meta.get(name)?.map(|v| decode(name, v.value())).transpose()
}

fn put<T: Serialize>(meta: &mut ::redb::Table<&str, &[u8]>, name: &str, value: &T) -> Result<(), StoreError> {
    meta.insert(name, encode(value)?.as_slice())?;
    Ok(())
}

/// Decodes a stored row body, for callers holding raw values.
pub fn decode_values(bytes: &[u8]) -> Result<Vec<Value>, StoreError> {
    decode("rows", bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline_protocol::ShardId;

    fn table() -> (tempfile::TempDir, Table) {
        let dir = tempfile::tempdir().unwrap();
        let t = Table::open(&dir.path().join("t.redb"), Arc::new(Failpoints::none())).unwrap();
        t.configure(&ShardSpec { id: ShardId(1), low: 0, size: 100 }, &Schema::seed()).unwrap();
        (dir, t)
    }

    fn write(index: u64, keys: &[i64]) -> LogEntry {
        let rows = keys.iter().map(|&k| Row::new(k, vec![Value::Str("n".into()), Value::Int(k)])).collect();
        LogEntry { term: 1, index, op: Operation::Write { client_id: 7, seq: index, rows } }
    }

    #[test]
    fn apply_read_and_marks() {
        let (_dir, t) = table();
        t.apply(&[write(1, &[3, 1, 2]), write(2, &[9])], false).unwrap();
        let del = LogEntry { term: 1, index: 3, op: Operation::Delete { client_id: 0, seq: 0, key: 2 } };
        t.apply(&[del], true).unwrap();
        let keys: Vec<i64> = t.read_range(0, 100).unwrap().iter().map(|r| r.key).collect();
        assert_eq!(keys, vec![1, 3, 9]);
        assert_eq!(t.read_range(2, 3).unwrap().len(), 1);
        assert_eq!(t.meta().unwrap().unwrap().applied, LogPosition { term: 1, index: 3 });
        assert_eq!(t.client_mark(7, 2).unwrap(), Some(ClientMark { seq: 2, term: 1, index: 2 }));
        assert!(t.contains(9).unwrap() && !t.contains(2).unwrap());
    }

    /// The stored bytes spliced into an answer decode as the typed read, and a read after
    /// a commit sees it although an earlier read left a view open.
    #[test]
    fn encoded_reads_match_typed_reads_and_see_every_commit() {
        use shardline_protocol::{Message, Response};
        let (_dir, t) = table();
        let encoded = |low, high| {
            let mut out = RowsWriter::new();
            t.read_encoded(low, high, 0, &mut out).unwrap();
            Response::from_frame(&out.into_frame(1)).unwrap()
        };
        t.apply(&[write(1, &[3, 1, 2])], false).unwrap();
        assert_eq!(encoded(0, 100), Response::Rows { at: Vec::new(), rows: t.read_range(0, 100).unwrap() });
        assert_eq!(encoded(2, 2), Response::Rows { at: Vec::new(), rows: t.read_range(2, 2).unwrap() });
        t.apply(&[write(2, &[50])], false).unwrap();
        let del = LogEntry { term: 1, index: 3, op: Operation::Delete { client_id: 0, seq: 0, key: 1 } };
        t.apply(&[del], false).unwrap();
        let Response::Rows { rows, .. } = encoded(0, 100) else { panic!("not rows") };
        assert_eq!(rows.iter().map(|r| r.key).collect::<Vec<_>>(), vec![2, 3, 50]);
        assert_eq!(encoded(5, 4), Response::Rows { at: Vec::new(), rows: Vec::new() });
    }

    #[test]
    fn a_snapshot_is_a_pinned_view() {
        let (_dir, t) = table();
        crate::store::contract::snapshot_is_pinned_and_resumable(&t);
    }

    #[test]
    fn snapshot_install_replaces_everything() {
        let (_dir, t) = table();
        t.apply(&[write(1, &[1, 2])], true).unwrap();
        t.set_term(4).unwrap();
        t.begin_install().unwrap();
        assert!(t.meta().unwrap().unwrap().installing);
        t.install_rows(&[Row::new(50, vec![Value::Str("x".into()), Value::Int(1)])]).unwrap();
        let mark = ClientSeqMark { client: 7, seq: 9, entry: LogPosition { term: 3, index: 38 } };
        t.finish_install(LogPosition { term: 3, index: 40 }, &[mark]).unwrap();
        let meta = t.meta().unwrap().unwrap();
        assert_eq!((meta.installing, meta.applied.index, meta.term), (false, 40, 4));
        let (rows, marks) = super::super::read_all(&t.snapshot().unwrap()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(marks, vec![mark], "the marks travel with the snapshot");
        assert_eq!(t.client_mark(7, 9).unwrap(), Some(ClientMark { seq: 9, term: 3, index: 38 }));
    }
}
