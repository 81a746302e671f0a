//! Refused writes never take effect, and the values that prove it are unique.
//!
//! The simulator gives every write a fresh value, so seeing a value proves that the write
//! carrying it took effect. A value written only by refused operations must therefore never
//! be read and never be in the replicas' final table. (A refused delete carries no value:
//! [`super::linearizable`] catches it by leaving refusals out of every order.)

use std::collections::{BTreeMap, HashMap};

use super::Violation;
use crate::history::{History, Key, Op, OpKind, Outcome, Value};

/// Checks that no value written only by a refused operation is read or in `final_state`
/// (keys not in the map are absent).
pub fn refused_absent(history: &History, final_state: &BTreeMap<Key, Option<Value>>) -> Result<(), Violation> {
    for (key, ops) in history.by_key() {
        // Values on this key written by refused ops, minus any some other op also wrote.
        let mut refused: HashMap<Value, &Op> = HashMap::new();
        for op in ops.iter().filter(|op| op.outcome == Outcome::Refused) {
            if let Some(value) = op.kind.written() {
                refused.entry(value).or_insert(op);
            }
        }
        for op in ops.iter().filter(|op| op.outcome != Outcome::Refused) {
            if let Some(value) = op.kind.written() {
                refused.remove(&value);
            }
        }
        let violation = |value: Value, seen_by: Option<&Op>| Violation::RefusedObserved {
            key,
            value,
            refused: Box::new(refused[&value].clone()),
            seen_by: seen_by.cloned().map(Box::new),
        };
        for op in &ops {
            if let (OpKind::Read, Outcome::Read(Some(value))) = (op.kind, op.outcome) {
                if refused.contains_key(&value) {
                    return Err(violation(value, Some(op)));
                }
            }
        }
        if let Some(Some(value)) = final_state.get(&key) {
            if refused.contains_key(value) {
                return Err(violation(*value, None));
            }
        }
    }
    Ok(())
}

/// Checks that no two writes in the history carry the same value, refused ones included.
pub fn unique_values(history: &History) -> Result<(), Violation> {
    let mut writers: HashMap<Value, &Op> = HashMap::new();
    for op in &history.ops {
        let Some(value) = op.kind.written() else { continue };
        if let Some(first) = writers.insert(value, op) {
            return Err(Violation::DuplicateValue {
                value,
                first: Box::new(first.clone()),
                second: Box::new(op.clone()),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: Key, kind: OpKind, outcome: Outcome) -> Op {
        Op { client: 1, key, kind, invoke: 0, complete: 1, outcome }
    }

    #[test]
    fn refused_values_never_seen_pass() {
        let history: History = [op(1, OpKind::Insert(5), Outcome::Refused), op(1, OpKind::Read, Outcome::Read(None))]
            .into_iter()
            .collect();
        refused_absent(&history, &BTreeMap::new()).unwrap();
        // The same value on another key proves nothing about this one.
        refused_absent(&history, &BTreeMap::from([(2, Some(5))])).unwrap();
    }

    #[test]
    fn a_refused_value_read_later_fails() {
        let refused = op(1, OpKind::Update(5), Outcome::Refused);
        let read = op(1, OpKind::Read, Outcome::Read(Some(5)));
        let history: History = [refused.clone(), read.clone()].into_iter().collect();
        let violation = refused_absent(&history, &BTreeMap::new()).unwrap_err();
        assert_eq!(
            violation,
            Violation::RefusedObserved { key: 1, value: 5, refused: Box::new(refused), seen_by: Some(Box::new(read)) }
        );
        assert!(violation.to_string().starts_with("refused_absent: key 1: value 5"), "{violation}");
    }

    #[test]
    fn a_refused_value_in_the_final_state_fails() {
        let history: History = [op(1, OpKind::Insert(5), Outcome::Refused)].into_iter().collect();
        let violation = refused_absent(&history, &BTreeMap::from([(1, Some(5))])).unwrap_err();
        assert!(matches!(violation, Violation::RefusedObserved { seen_by: None, .. }), "{violation}");
        assert!(violation.to_string().contains("is in the final state"), "{violation}");
    }

    #[test]
    fn a_value_also_written_by_an_unrefused_op_is_not_proof() {
        let history: History = [op(1, OpKind::Insert(5), Outcome::Refused), op(1, OpKind::Insert(5), Outcome::Unknown)]
            .into_iter()
            .collect();
        refused_absent(&history, &BTreeMap::from([(1, Some(5))])).unwrap();
        let violation = unique_values(&history).unwrap_err();
        assert!(matches!(violation, Violation::DuplicateValue { value: 5, .. }), "{violation}");
    }

    #[test]
    fn distinct_values_are_unique() {
        let history: History = [
            op(1, OpKind::Insert(5), Outcome::Ok),
            op(1, OpKind::Delete, Outcome::Ok),
            op(1, OpKind::Delete, Outcome::Ok),
            op(2, OpKind::Update(6), Outcome::Refused),
        ]
        .into_iter()
        .collect();
        unique_values(&history).unwrap();
    }
}
