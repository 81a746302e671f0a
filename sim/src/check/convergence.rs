//! Replicas converge: the committed log prefix and the tables are the same everywhere.

use std::collections::{BTreeMap, BTreeSet};

use super::{Slot, Violation};
use crate::history::{Key, Value};

/// One log entry as the checker sees it: `(term, index, crc)`.
pub type EntryId = (u64, u64, u32);

/// Checks that the entries at indices up to `committed` agree across replicas; each item of
/// `logs` is `(replica, [(term, index, crc)])` in log order.
///
/// A replica may have compacted a prefix or lag behind, so only indices that two replicas
/// both hold are compared. Each log must itself be well formed: contiguous indices and
/// terms that never decrease.
pub fn logs_converge(logs: &[(String, Vec<EntryId>)], committed: u64) -> Result<(), Violation> {
    let mut slots: BTreeMap<u64, Vec<Slot>> = BTreeMap::new();
    for (replica, entries) in logs {
        for pair in entries.windows(2) {
            let ((term, index, _), (next_term, next_index, _)) = (pair[0], pair[1]);
            let fault = if next_index != index + 1 {
                Some(format!("index {next_index} follows index {index}"))
            } else if next_term < term {
                Some(format!("term {next_term} at index {next_index} follows term {term}"))
            } else {
                None
            };
            if let Some(fault) = fault {
                return Err(Violation::Malformed {
                    checker: "logs_converge",
                    detail: format!("{replica}'s log: {fault}"),
                });
            }
        }
        for &(term, index, crc) in entries.iter().filter(|(_, index, _)| *index <= committed) {
            slots.entry(index).or_default().push(Slot { replica: replica.clone(), term, crc });
        }
    }
    for (index, held) in slots {
        let first = &held[0];
        if let Some(other) = held.iter().find(|slot| (slot.term, slot.crc) != (first.term, first.crc)) {
            return Err(Violation::LogsDiverge { index, first: first.clone(), second: other.clone() });
        }
    }
    Ok(())
}

/// Checks that every replica's table is the same, reporting the lowest key that differs.
pub fn tables_converge(tables: &[(String, BTreeMap<Key, Value>)]) -> Result<(), Violation> {
    let Some((first, reference)) = tables.first() else { return Ok(()) };
    let mut worst: Option<Violation> = None;
    for (replica, table) in &tables[1..] {
        let keys: BTreeSet<&Key> = reference.keys().chain(table.keys()).collect();
        let Some(&key) = keys.into_iter().find(|key| reference.get(key) != table.get(key)) else { continue };
        if matches!(worst, Some(Violation::TablesDiverge { key: lowest, .. }) if lowest <= key) {
            continue;
        }
        worst = Some(Violation::TablesDiverge {
            key,
            first: first.clone(),
            first_value: reference.get(&key).copied(),
            second: replica.clone(),
            second_value: table.get(&key).copied(),
        });
    }
    worst.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(replica: &str, first: u64, terms: &[u64]) -> (String, Vec<EntryId>) {
        let entries = terms.iter().zip(first..).map(|(&term, index)| (term, index, (term * 1000 + index) as u32));
        (replica.to_string(), entries.collect())
    }

    #[test]
    fn equal_compacted_and_lagging_logs_converge() {
        let logs = [log("a", 1, &[1, 1, 2, 2, 3]), log("b", 3, &[2, 2, 3]), log("c", 1, &[1, 1, 2]), log("d", 1, &[])];
        logs_converge(&logs, 5).unwrap();
        // Past the commit point, a deposed primary's suffix may differ.
        let logs = [log("a", 1, &[1, 1, 2, 2]), log("b", 1, &[1, 1, 3, 3])];
        logs_converge(&logs, 2).unwrap();
    }

    #[test]
    fn a_committed_entry_that_differs_fails() {
        let logs = [log("a", 1, &[1, 1, 2, 2]), log("b", 2, &[1, 3, 3])];
        let violation = logs_converge(&logs, 4).unwrap_err();
        let Violation::LogsDiverge { index: 3, first, second } = &violation else { panic!("{violation}") };
        assert_eq!((first.replica.as_str(), first.term, second.replica.as_str(), second.term), ("a", 2, "b", 3));
        assert!(violation.to_string().starts_with("logs_converge: index 3: a has term 2"), "{violation}");
        // Same term, different contents.
        let mut b = log("b", 1, &[1, 1]);
        b.1[1].2 ^= 1;
        assert!(matches!(logs_converge(&[log("a", 1, &[1, 1]), b], 2), Err(Violation::LogsDiverge { index: 2, .. })));
    }

    #[test]
    fn a_log_with_a_gap_or_a_falling_term_is_malformed() {
        let mut gap = log("a", 1, &[1, 1, 1]);
        gap.1.remove(1);
        let violation = logs_converge(&[gap], 3).unwrap_err();
        assert!(violation.to_string().contains("a's log: index 3 follows index 1"), "{violation}");
        let violation = logs_converge(&[log("a", 1, &[2, 1])], 2).unwrap_err();
        assert!(matches!(violation, Violation::Malformed { checker: "logs_converge", .. }), "{violation}");
    }

    #[test]
    fn equal_tables_converge() {
        let table = BTreeMap::from([(1, 10), (2, 20)]);
        tables_converge(&[]).unwrap();
        tables_converge(&[("a".into(), table.clone()), ("b".into(), table.clone()), ("c".into(), table)]).unwrap();
    }

    #[test]
    fn the_lowest_differing_key_is_reported() {
        let a = BTreeMap::from([(1, 10), (2, 20), (3, 30)]);
        let b = BTreeMap::from([(1, 10), (2, 20), (3, 31)]);
        let c = BTreeMap::from([(1, 10), (3, 30)]);
        let tables = [("a".to_string(), a), ("b".to_string(), b), ("c".to_string(), c)];
        let violation = tables_converge(&tables).unwrap_err();
        let expected = Violation::TablesDiverge {
            key: 2,
            first: "a".into(),
            first_value: Some(20),
            second: "c".into(),
            second_value: None,
        };
        assert_eq!(violation, expected);
        assert_eq!(violation.to_string(), "tables_converge: key 2: a has 20, c has absent");
    }
}
