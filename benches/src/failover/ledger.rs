//! Every write the load sent, with how it ended, and the check against what the cluster
//! holds afterwards: no acknowledged write lost, no write reported failed present.
//! (`storage-node/tests/harness/ledger.rs` is the model; this one sees the cluster through
//! the balancer.)

use serde::Serialize;
use shardline::{ClientError, ErrorCode, Row};

/// How one write ended, from the client's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Committed on a majority: it must be there.
    Acknowledged,
    /// Refused with an answer that says it was never applied: it must not be there.
    Refused(&'static str),
    /// No answer, or an answer that leaves it open (`Timeout`, `Internal`, `Unavailable`):
    /// it may or may not be there.
    Indeterminate,
}

/// Classifies a write's result. The balancer answers `Timeout` whenever an attempt may
/// have been logged (its `final_error`), so every other error code is a definite refusal;
/// a broken connection or a client-side timeout leaves the outcome open.
pub fn classify<T>(result: &Result<T, ClientError>) -> WriteOutcome {
    match result {
        Ok(_) => WriteOutcome::Acknowledged,
        Err(ClientError::Server(code)) => match code {
            ErrorCode::Timeout(_) | ErrorCode::Internal(_) | ErrorCode::Unavailable { .. } => {
                WriteOutcome::Indeterminate
            }
            other => WriteOutcome::Refused(other.name()),
        },
        // Refused by the client before anything was sent.
        Err(ClientError::InvalidRequest(_) | ClientError::TooLarge { .. }) => WriteOutcome::Refused("client"),
        Err(_) => WriteOutcome::Indeterminate,
    }
}

/// One written key and how its write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The key (one row per write).
    pub key: i64,
    /// How the write ended.
    pub outcome: WriteOutcome,
}

/// What reading everything back found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Writes sent.
    pub writes: u64,
    /// Acknowledged.
    pub acknowledged: u64,
    /// Definitely refused.
    pub refused: u64,
    /// Outcome unknown.
    pub indeterminate: u64,
    /// Indeterminate writes found present.
    pub indeterminate_present: u64,
    /// Acknowledged writes missing: must be zero.
    pub acknowledged_lost: u64,
    /// Refused writes present: must be zero.
    pub refused_present: u64,
    /// Rows present whose values are not what was written: must be zero.
    pub wrong_values: u64,
    /// Up to ten keys of each kind of violation, for a person to look at.
    pub examples: Vec<String>,
}

impl Verdict {
    /// Whether every promise held.
    pub fn holds(&self) -> bool {
        self.acknowledged_lost == 0 && self.refused_present == 0 && self.wrong_values == 0
    }
}

/// Checks `written` against `rows` (what the cluster holds in the written keys' ranges, in
/// any order); `expected` gives the row each key was written with.
pub fn check(written: &[Written], rows: &[Row], expected: impl Fn(i64) -> Row) -> Verdict {
    let held: std::collections::HashMap<i64, &Row> = rows.iter().map(|r| (r.key, r)).collect();
    let mut v = Verdict { writes: written.len() as u64, ..Verdict::default() };
    let note = |v: &mut Verdict, what: &str, key: i64| {
        if v.examples.len() < 10 {
            v.examples.push(format!("{what} {key}"));
        }
    };
    for w in written {
        let row = held.get(&w.key);
        if let Some(row) = row {
            if **row != expected(w.key) {
                v.wrong_values += 1;
                note(&mut v, "wrong value at key", w.key);
            }
        }
        match (&w.outcome, row.is_some()) {
            (WriteOutcome::Acknowledged, present) => {
                v.acknowledged += 1;
                if !present {
                    v.acknowledged_lost += 1;
                    note(&mut v, "acknowledged but lost:", w.key);
                }
            }
            (WriteOutcome::Refused(_), present) => {
                v.refused += 1;
                if present {
                    v.refused_present += 1;
                    note(&mut v, "refused but present:", w.key);
                }
            }
            (WriteOutcome::Indeterminate, present) => {
                v.indeterminate += 1;
                v.indeterminate_present += u64::from(present);
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline::{ShardId, Value};

    fn row(key: i64) -> Row {
        Row::new(key, vec![Value::Int(key)])
    }

    #[test]
    fn outcomes_follow_the_balancers_promise() {
        let ok: Result<(), ClientError> = Ok(());
        assert_eq!(classify(&ok), WriteOutcome::Acknowledged);
        let refused: Result<(), _> =
            Err(ClientError::Server(ErrorCode::NoQuorum { shard: ShardId(1), acked: 1, needed: 2 }));
        assert_eq!(classify(&refused), WriteOutcome::Refused("NoQuorum"));
        let open: Result<(), _> = Err(ClientError::Server(ErrorCode::Timeout("x".into())));
        assert_eq!(classify(&open), WriteOutcome::Indeterminate);
        let lost: Result<(), _> = Err(ClientError::Connection { addr: "a".into(), reason: "reset".into() });
        assert_eq!(classify(&lost), WriteOutcome::Indeterminate);
    }

    #[test]
    fn the_check_finds_lost_present_and_wrong_rows() {
        let w = |key, outcome| Written { key, outcome };
        let written = [
            w(1, WriteOutcome::Acknowledged),
            w(2, WriteOutcome::Acknowledged),
            w(3, WriteOutcome::Refused("NoQuorum")),
            w(4, WriteOutcome::Refused("NoQuorum")),
            w(5, WriteOutcome::Indeterminate),
            w(6, WriteOutcome::Indeterminate),
        ];
        let rows = [row(1), row(3), row(5), Row::new(2, vec![Value::Int(0)])];
        let v = check(&written, &rows, row);
        assert_eq!((v.writes, v.acknowledged, v.refused, v.indeterminate), (6, 2, 2, 2));
        assert_eq!((v.acknowledged_lost, v.refused_present, v.wrong_values, v.indeterminate_present), (0, 1, 1, 1));
        assert!(!v.holds());
        let v = check(&written[..2], &[row(1)], row);
        assert_eq!(v.acknowledged_lost, 1);
        assert_eq!(v.examples, vec!["acknowledged but lost: 2".to_owned()]);
        assert!(check(&written[..1], &[row(1)], row).holds());
    }
}
