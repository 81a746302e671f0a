//! What the tests wrote and how each write ended, and the invariants checked against it.
//!
//! Every batch a test sends is recorded with its outcome. The checks, against the rows a
//! replica holds:
//! - every row belongs to some recorded batch and has the value that batch wrote;
//! - every acknowledged batch is there in full (no acknowledged write lost);
//! - no batch that was definitely refused is there (no write reported failed is present);
//! - no batch is there in part (a shard's part of a batch is atomic);
//! - no batch marked "must be absent" is there (writes only a fenced, stale primary took).

use std::collections::BTreeMap;
use std::fmt;

use shardline_protocol::{ErrorCode, Request, Response, Row, ShardCommit, Value, WriteBatch};

use super::client::CallError;
use super::cluster::{Cluster, SHARD};

/// How one write ended, from the client's side.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// Committed on a majority: it must survive.
    Acked(ShardCommit),
    /// Refused before it was logged: it must never appear.
    Refused(ErrorCode),
    /// The node could not be reached: never sent, never applied.
    Unreachable(String),
    /// Sent, but the result is unknown (`Timeout`, `Internal`, no answer): it may or may
    /// not appear, but never in part.
    Indeterminate(String),
}

impl Outcome {
    /// Whether the write was acknowledged.
    pub(crate) fn is_acked(&self) -> bool {
        matches!(self, Outcome::Acked(_))
    }

    /// Whether the write certainly did not and will not take effect.
    pub(crate) fn definitely_failed(&self) -> bool {
        matches!(self, Outcome::Refused(_) | Outcome::Unreachable(_))
    }

    /// The refusal's error name, if it is a refusal.
    pub(crate) fn refusal(&self) -> Option<&'static str> {
        match self {
            Outcome::Refused(code) => Some(code.name()),
            _ => None,
        }
    }

    /// The commit, if acknowledged.
    pub(crate) fn commit(&self) -> Option<&ShardCommit> {
        match self {
            Outcome::Acked(commit) => Some(commit),
            _ => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Acked(c) => {
                write!(f, "acked at ({}, {}) on {:?}", c.term, c.index, c.replicas)
            }
            Outcome::Refused(code) => write!(f, "refused: {}: {code}", code.name()),
            Outcome::Unreachable(why) => write!(f, "unreachable: {why}"),
            Outcome::Indeterminate(why) => write!(f, "indeterminate: {why}"),
        }
    }
}

/// Classifies a write's answer. `Timeout` and `Internal` are indeterminate; every other
/// error code is a refusal before logging.
pub(crate) fn classify(answer: Result<Response, CallError>) -> Outcome {
    match answer {
        Ok(Response::Committed(commits)) => match commits.into_iter().find(|c| c.shard == SHARD) {
            Some(commit) => Outcome::Acked(commit),
            None => Outcome::Indeterminate("Committed without an entry for the shard".into()),
        },
        Ok(Response::Error(code @ (ErrorCode::Timeout(_) | ErrorCode::Internal(_)))) => {
            Outcome::Indeterminate(format!("{}: {code}", code.name()))
        }
        Ok(Response::Error(code)) => Outcome::Refused(code),
        Ok(other) => Outcome::Indeterminate(format!("unexpected answer {other:?}")),
        Err(e) if e.never_sent() => Outcome::Unreachable(e.to_string()),
        Err(e) => Outcome::Indeterminate(e.to_string()),
    }
}

/// The row the tests write for `key`: the value tells whose write it was.
pub(crate) fn row_for(key: i64) -> Row {
    Row::new(key, vec![Value::Str(format!("name{key}")), Value::Int(key % 100)])
}

/// One recorded batch.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The keys it wrote.
    pub keys: Vec<i64>,
    /// The node it went to.
    pub node: usize,
    /// How it ended.
    pub outcome: Outcome,
    /// It must not be present whatever its outcome (only a fenced primary had it).
    pub must_be_absent: bool,
}

/// Every batch written, in order.
#[derive(Debug)]
pub(crate) struct Ledger {
    client_id: u64,
    next_seq: u64,
    entries: Vec<Entry>,
}

impl Ledger {
    /// An empty ledger writing as `client_id`.
    pub(crate) fn new(client_id: u64) -> Ledger {
        Ledger { client_id, next_seq: 1, entries: Vec::new() }
    }

    /// A fresh (client id, sequence) pair: each write is new, never a retry.
    pub(crate) fn next_id(&mut self) -> (u64, u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        (self.client_id, seq)
    }

    /// Writes one batch (`row_for` each key) to node `node` and records the outcome.
    pub(crate) async fn write(&mut self, cluster: &Cluster, node: usize, keys: &[i64]) -> Outcome {
        let (client_id, seq) = self.next_id();
        let rows: Vec<Row> = keys.iter().map(|&k| row_for(k)).collect();
        let batch = WriteBatch::encode(client_id, seq, &rows).expect("encodable batch");
        let outcome = classify(cluster.request(node, &Request::Write(batch), None).await);
        self.record(keys, node, outcome.clone(), false);
        outcome
    }

    /// Records a batch written elsewhere.
    pub(crate) fn record(&mut self, keys: &[i64], node: usize, outcome: Outcome, must_be_absent: bool) {
        self.entries.push(Entry { keys: keys.to_vec(), node, outcome, must_be_absent });
    }

    /// Marks the last batch as one that must never be present (only a fenced, stale
    /// primary can have logged it), whatever its outcome.
    pub(crate) fn mark_last_must_be_absent(&mut self) {
        self.entries.last_mut().expect("a recorded batch").must_be_absent = true;
    }

    /// Every recorded batch.
    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Keys of acknowledged batches.
    pub(crate) fn acked_keys(&self) -> Vec<i64> {
        self.keys_where(|e| e.outcome.is_acked())
    }

    /// Keys of batches that definitely failed.
    pub(crate) fn failed_keys(&self) -> Vec<i64> {
        self.keys_where(|e| e.outcome.definitely_failed())
    }

    fn keys_where(&self, pred: impl Fn(&Entry) -> bool) -> Vec<i64> {
        self.entries.iter().filter(|e| pred(e)).flat_map(|e| e.keys.iter().copied()).collect()
    }

    /// How many batches ended each way: (acked, refused or unreachable, indeterminate).
    pub(crate) fn tally(&self) -> (usize, usize, usize) {
        let acked = self.entries.iter().filter(|e| e.outcome.is_acked()).count();
        let failed = self.entries.iter().filter(|e| e.outcome.definitely_failed()).count();
        (acked, failed, self.entries.len() - acked - failed)
    }

    /// Checks `rows` (one replica's whole shard, in key order) against every invariant in
    /// this module's doc. Returns every violation found, one per line.
    pub(crate) fn check(&self, rows: &[Row]) -> Result<(), String> {
        let mut problems = Vec::new();
        let mut held: BTreeMap<i64, &Row> = BTreeMap::new();
        for pair in rows.windows(2) {
            if pair[0].key >= pair[1].key {
                problems.push(format!("rows out of key order: {} then {}", pair[0].key, pair[1].key));
            }
        }
        for row in rows {
            held.insert(row.key, row);
        }
        let mut written: BTreeMap<i64, usize> = BTreeMap::new();
        for (i, entry) in self.entries.iter().enumerate() {
            for &k in &entry.keys {
                written.insert(k, i);
            }
        }
        for row in rows {
            match written.get(&row.key) {
                None => problems.push(format!("row {} was never written by this test", row.key)),
                Some(_) if *row != row_for(row.key) => {
                    problems.push(format!("row {} holds {:?}, wrote {:?}", row.key, row, row_for(row.key)))
                }
                Some(_) => {}
            }
        }
        for (i, entry) in self.entries.iter().enumerate() {
            let present: Vec<i64> = entry.keys.iter().copied().filter(|k| held.contains_key(k)).collect();
            let what = format!("batch #{i} (keys {:?}, sent to node {}, {})", entry.keys, entry.node, entry.outcome);
            if entry.outcome.is_acked() && present.len() != entry.keys.len() {
                problems.push(format!("LOST acknowledged {what}: only {present:?} present"));
            } else if entry.outcome.definitely_failed() && !present.is_empty() {
                problems.push(format!("PRESENT although refused: {what}: {present:?} present"));
            } else if entry.must_be_absent && !present.is_empty() {
                problems.push(format!("PRESENT although only a fenced primary took it: {what}: {present:?}"));
            } else if !present.is_empty() && present.len() != entry.keys.len() {
                problems.push(format!("HALF-APPLIED {what}: only {present:?} present"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }
}
