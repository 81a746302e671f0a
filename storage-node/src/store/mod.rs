//! A shard replica's table (rows, metadata, client marks) behind a trait.
//!
//! - [`redb`]: the real one, one redb file per replica.
//! - [`mem`]: an in-memory one with the same durability rules, for the simulator: a
//!   crash rolls it back to its last durable commit, as redb does.

pub mod mem;
pub mod redb;

use shardline_protocol::{ClientSeqMark, LogEntry, LogPosition, Row, Schema, ShardSpec};

pub use self::redb::{ClientMark, StoreError, Table, TableMeta, DEDUP_WINDOW};
pub use mem::MemTable;

/// A consistent, pinned view of a table for a replica too far behind for the log, read a
/// piece at a time as a snapshot is sent, so that no copy of the whole table is ever held.
///
/// Reads resume after a key (or a client mark), so a chunk can be read again, identically,
/// from where it started: the view never changes while it is held.
pub trait SnapshotSource: Send + std::fmt::Debug + 'static {
    /// The last log entry the view reflects.
    fn applied(&self) -> LogPosition;
    /// How many rows the view holds.
    fn row_count(&self) -> u64;
    /// Hands `visit` the rows with a key past `after` (every row if `None`), in key order,
    /// until it returns false or the rows run out.
    fn rows_after(&self, after: Option<i64>, visit: &mut dyn FnMut(Row) -> bool) -> Result<(), StoreError>;
    /// Hands `visit` the client marks a retry must still find, past `after` in (client,
    /// seq) order, until it returns false or the marks run out.
    fn marks_after(
        &self,
        after: Option<(u64, u64)>,
        visit: &mut dyn FnMut(ClientSeqMark) -> bool,
    ) -> Result<(), StoreError>;
}

/// Every row and client mark of a view, read whole: for tests and small tables only.
pub fn read_all(source: &impl SnapshotSource) -> Result<(Vec<Row>, Vec<ClientSeqMark>), StoreError> {
    let (mut rows, mut marks) = (Vec::new(), Vec::new());
    source.rows_after(None, &mut |row| {
        rows.push(row);
        true
    })?;
    source.marks_after(None, &mut |mark| {
        marks.push(mark);
        true
    })?;
    Ok((rows, marks))
}

/// What a replica needs of its table. Commits marked durable survive a crash; the others
/// may roll back to the last durable one (the log is the durable copy of those).
pub trait TableStore: Clone + Send + Sync + 'static {
    /// The stored metadata, or `None` for a table never configured.
    fn meta(&self) -> Result<Option<TableMeta>, StoreError>;
    /// Stores the shard's range and schema, durably.
    fn configure(&self, spec: &ShardSpec, schema: &Schema) -> Result<(), StoreError>;
    /// Durably adopts `term`.
    fn set_term(&self, term: u64) -> Result<(), StoreError>;
    /// Applies committed entries in order; `durable` forces an fsync.
    fn apply(&self, entries: &[LogEntry], durable: bool) -> Result<(), StoreError>;
    /// Makes every earlier non-durable commit durable.
    fn sync(&self) -> Result<(), StoreError>;
    /// Whether a row with `key` exists.
    fn contains(&self, key: i64) -> Result<bool, StoreError>;
    /// Rows with `low <= key <= high`, in key order.
    fn read_range(&self, low: i64, high: i64) -> Result<Vec<Row>, StoreError>;
    /// Rows with `low <= key <= high`, in key order, and the applied position of the very
    /// view they were read from (what a session read answers with).
    fn read_at(&self, low: i64, high: i64) -> Result<(Vec<Row>, LogPosition), StoreError>;
    /// Where `client`'s write `seq` was applied, if it was (within the dedup window).
    fn client_mark(&self, client: u64, seq: u64) -> Result<Option<ClientMark>, StoreError>;
    /// The pinned view a snapshot is read from.
    type Snapshot: SnapshotSource;
    /// Pins a consistent view of every row, the applied position they reflect and the
    /// client marks a retry must still find; later commits do not change it.
    fn snapshot(&self) -> Result<Self::Snapshot, StoreError>;
    /// Starts a snapshot install: clears rows and marks, durably flags the install.
    fn begin_install(&self) -> Result<(), StoreError>;
    /// Adds one chunk of snapshot rows.
    fn install_rows(&self, chunk: &[Row]) -> Result<(), StoreError>;
    /// Finishes a snapshot install, durably: the rows (and these client marks) reflect the
    /// log up to `last_included`.
    fn finish_install(&self, last_included: LogPosition, marks: &[ClientSeqMark]) -> Result<(), StoreError>;
}

/// Checks both tables hold to the same contract.
#[cfg(test)]
pub(crate) mod contract {
    use super::*;
    use shardline_protocol::{Operation, Value};

    fn write(index: u64, key: i64) -> LogEntry {
        let row = Row::new(key, vec![Value::Str("n".into()), Value::Int(key)]);
        LogEntry { term: 1, index, op: Operation::Write { client_id: 7, seq: index, rows: vec![row] } }
    }

    /// A snapshot reads what the table held when it began, whatever commits after, and
    /// resumes after any key or mark.
    pub(crate) fn snapshot_is_pinned_and_resumable(t: &impl TableStore) {
        let entries: Vec<LogEntry> = (1..=5).map(|i| write(i, i as i64 * 10)).collect();
        t.apply(&entries, false).unwrap();
        let view = t.snapshot().unwrap();
        let gone = LogEntry { term: 1, index: 6, op: Operation::Delete { client_id: 7, seq: 6, key: 20 } };
        t.apply(&[gone, write(7, 90)], true).unwrap();
        assert_eq!((view.applied().index, view.row_count()), (5, 5));
        let (rows, marks) = read_all(&view).unwrap();
        let keys: Vec<i64> = rows.iter().map(|r| r.key).collect();
        assert_eq!(keys, vec![10, 20, 30, 40, 50], "later commits do not show");
        assert_eq!(marks.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        let mut after = Vec::new();
        view.rows_after(Some(20), &mut |row| {
            after.push(row.key);
            after.len() < 2
        })
        .unwrap();
        assert_eq!(after, vec![30, 40], "resumes past the key and stops when told");
        let mut seqs = Vec::new();
        view.marks_after(Some((7, 3)), &mut |m| {
            seqs.push(m.seq);
            true
        })
        .unwrap();
        assert_eq!(seqs, vec![4, 5]);
        assert_eq!(read_all(&t.snapshot().unwrap()).unwrap().0.len(), 5, "a new view sees the commits");
    }
}
