//! Checks a write before it is logged, so a refused write changes nothing anywhere.
//!
//! The primary validates against its table *plus* the entries it has logged but not yet
//! applied (the overlay), so two pipelined writes of the same key cannot both pass.
//! Followers never validate: they apply what the primary logged, deterministically.

use std::collections::HashMap;

use shardline_protocol::{ErrorCode, Operation, Row, Schema, ShardSpec};

/// Keys touched by logged-but-unapplied entries: whether each exists afterwards, and the
/// index of the last entry that touched it.
#[derive(Debug, Default)]
pub struct Overlay {
    keys: HashMap<i64, (bool, u64)>,
}

impl Overlay {
    /// Whether `key` exists once pending entries apply, and the index of the last pending
    /// entry that decides it, if a pending entry touches it.
    pub fn exists(&self, key: i64) -> Option<(bool, u64)> {
        self.keys.get(&key).copied()
    }

    /// Records the effect of an entry at `index`.
    pub fn record(&mut self, op: &Operation, index: u64) {
        match op {
            Operation::Noop => {}
            Operation::Write { rows, .. } => {
                for r in rows {
                    self.keys.insert(r.key, (true, index));
                }
            }
            Operation::Update { row, .. } => {
                self.keys.insert(row.key, (true, index));
            }
            Operation::Delete { key, .. } => {
                self.keys.insert(*key, (false, index));
            }
        }
    }

    /// Forgets keys whose last pending entry is applied now.
    pub fn applied_through(&mut self, index: u64) {
        self.keys.retain(|_, (_, at)| *at > index);
    }

    /// Forgets everything (the pending entries may be truncated by a new primary).
    pub fn clear(&mut self) {
        self.keys.clear();
    }
}

/// A write refused by validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// Why.
    pub error: ErrorCode,
    /// The pending (logged, not yet committed) entry the refusal rests on, if it rests on
    /// one: a `DuplicateKey` or `NotFound` that only holds if that entry commits may be
    /// answered only once it has (else the answer would report a state nobody committed).
    pub after: Option<u64>,
}

impl From<ErrorCode> for Refusal {
    fn from(error: ErrorCode) -> Refusal {
        Refusal { error, after: None }
    }
}

/// Checks `op` and turns it into the log operation; `exists` looks a key up in the table.
pub fn validate(
    op: Operation,
    spec: &ShardSpec,
    schema: &Schema,
    overlay: &Overlay,
    mut exists: impl FnMut(i64) -> Result<bool, ErrorCode>,
) -> Result<Operation, Refusal> {
    let mut after = None;
    let mut present = |key: i64| -> Result<bool, ErrorCode> {
        if !spec.contains(key) {
            return Err(ErrorCode::KeyOutOfRange { key });
        }
        match overlay.exists(key) {
            Some((e, index)) => {
                after = after.max(Some(index));
                Ok(e)
            }
            None => exists(key),
        }
    };
    let checked = check(op, schema, &mut present);
    checked.map_err(|error| {
        let pending = matches!(error, ErrorCode::DuplicateKey { .. } | ErrorCode::NotFound { .. });
        Refusal { error, after: if pending { after } else { None } }
    })
}

fn check(
    op: Operation,
    schema: &Schema,
    present: &mut impl FnMut(i64) -> Result<bool, ErrorCode>,
) -> Result<Operation, ErrorCode> {
    let check =
        |row: &mut Row| schema.check_row(row).map_err(|e| ErrorCode::SchemaViolation(format!("key {}: {e}", row.key)));
    match op {
        Operation::Noop => Err(ErrorCode::BadRequest("a no-op is not a write".into())),
        Operation::Write { client_id, seq, mut rows } => {
            if rows.is_empty() {
                return Err(ErrorCode::BadRequest("a write needs at least one row".into()));
            }
            rows.sort_by_key(|r| r.key);
            for row in rows.iter_mut() {
                check(row)?;
                if present(row.key)? {
                    return Err(ErrorCode::DuplicateKey { key: row.key });
                }
            }
            if let Some(w) = rows.windows(2).find(|w| w[0].key == w[1].key) {
                return Err(ErrorCode::DuplicateKey { key: w[0].key });
            }
            Ok(Operation::Write { client_id, seq, rows })
        }
        Operation::Update { client_id, seq, mut row } => {
            check(&mut row)?;
            if !present(row.key)? {
                return Err(ErrorCode::NotFound { key: row.key });
            }
            Ok(Operation::Update { client_id, seq, row })
        }
        Operation::Delete { client_id, seq, key } => {
            if !present(key)? {
                return Err(ErrorCode::NotFound { key });
            }
            Ok(Operation::Delete { client_id, seq, key })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline_protocol::{ShardId, Value};

    fn spec() -> ShardSpec {
        ShardSpec { id: ShardId(1), low: 0, size: 100 }
    }

    fn row(key: i64) -> Row {
        Row::new(key, vec![Value::Str("a".into()), Value::Int(1)])
    }

    fn insert(rows: Vec<Row>) -> Operation {
        Operation::Write { client_id: 0, seq: 0, rows }
    }

    fn run(op: Operation, overlay: &Overlay, table: &[i64]) -> Result<Operation, ErrorCode> {
        validate(op, &spec(), &Schema::seed(), overlay, |k| Ok(table.contains(&k))).map_err(|r| r.error)
    }

    #[test]
    fn each_bad_write_gets_its_error() {
        let none = Overlay::default();
        assert_eq!(run(insert(vec![row(5)]), &none, &[5]), Err(ErrorCode::DuplicateKey { key: 5 }));
        assert_eq!(run(insert(vec![row(500)]), &none, &[]), Err(ErrorCode::KeyOutOfRange { key: 500 }));
        assert_eq!(run(insert(vec![row(1), row(1)]), &none, &[]), Err(ErrorCode::DuplicateKey { key: 1 }));
        assert!(matches!(
            run(insert(vec![Row::new(1, vec![Value::Int(3), Value::Int(1)])]), &none, &[]),
            Err(ErrorCode::SchemaViolation(_))
        ));
        let upd = Operation::Update { client_id: 0, seq: 0, row: row(9) };
        assert_eq!(run(upd, &none, &[]), Err(ErrorCode::NotFound { key: 9 }));
        let del = Operation::Delete { client_id: 0, seq: 0, key: 9 };
        assert_eq!(run(del, &none, &[]), Err(ErrorCode::NotFound { key: 9 }));
        assert!(matches!(run(insert(vec![]), &none, &[]), Err(ErrorCode::BadRequest(_))));
    }

    #[test]
    fn pending_entries_count_before_the_table() {
        let mut overlay = Overlay::default();
        overlay.record(&run(insert(vec![row(7)]), &Overlay::default(), &[]).unwrap(), 3);
        assert_eq!(run(insert(vec![row(7)]), &overlay, &[]), Err(ErrorCode::DuplicateKey { key: 7 }));
        overlay.record(&Operation::Delete { client_id: 0, seq: 0, key: 7 }, 4);
        assert!(run(insert(vec![row(7)]), &overlay, &[7]).is_ok(), "a pending delete frees the key");
        let refusal = validate(insert(vec![row(7)]), &spec(), &Schema::seed(), &overlay, |_| Ok(false));
        assert!(refusal.is_ok(), "the pending delete frees the key");
        overlay.record(&insert(vec![row(7)]), 5);
        let refusal = validate(insert(vec![row(7)]), &spec(), &Schema::seed(), &overlay, |_| Ok(false)).unwrap_err();
        assert_eq!(refusal, Refusal { error: ErrorCode::DuplicateKey { key: 7 }, after: Some(5) }, "rests on entry 5");
        overlay.applied_through(5);
        assert_eq!(overlay.exists(7), None);
    }
}
