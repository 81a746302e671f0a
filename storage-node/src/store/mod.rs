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

/// A consistent copy of a table, for a replica that is too far behind for the log.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The last log entry the rows reflect.
    pub applied: LogPosition,
    /// Every row, in key order.
    pub rows: Vec<Row>,
    /// The client marks within the dedup window.
    pub marks: Vec<ClientSeqMark>,
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
    /// Where `client`'s write `seq` was applied, if it was (within the dedup window).
    fn client_mark(&self, client: u64, seq: u64) -> Result<Option<ClientMark>, StoreError>;
    /// Every row and the applied position they reflect, with the client marks a retry must
    /// still find, in one consistent view.
    fn snapshot(&self) -> Result<Snapshot, StoreError>;
    /// Starts a snapshot install: clears rows and marks, durably flags the install.
    fn begin_install(&self) -> Result<(), StoreError>;
    /// Adds one chunk of snapshot rows.
    fn install_rows(&self, chunk: &[Row]) -> Result<(), StoreError>;
    /// Finishes a snapshot install, durably: the rows (and these client marks) reflect the
    /// log up to `last_included`.
    fn finish_install(&self, last_included: LogPosition, marks: &[ClientSeqMark]) -> Result<(), StoreError>;
}
