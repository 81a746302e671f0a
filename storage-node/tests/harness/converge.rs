//! Waiting for replicas to converge, and comparing their logs.

use std::time::Duration;

use shardline_protocol::{ReplicaRole, Row};

use super::cluster::Cluster;
use super::Budget;

impl Cluster {
    /// Polls until node `primary` leads and every node in `followers` follows it at its
    /// term, serves, has no fault, has applied the primary's commit index and holds exactly
    /// the primary's rows. Returns those rows; panics with the last observed states.
    pub(crate) async fn wait_converged(&self, primary: usize, followers: &[usize], limit: Duration) -> Vec<Row> {
        let mut budget = Budget::every(format!("convergence on node {primary}"), limit, Duration::from_millis(100));
        loop {
            let why = match self.converged(primary, followers).await {
                Ok(rows) => return rows,
                Err(why) => why,
            };
            if !budget.retry().await {
                panic!("{}: {why}", budget.spent());
            }
        }
    }

    async fn converged(&self, primary: usize, followers: &[usize]) -> Result<Vec<Row>, String> {
        let p = self.state(primary).await?;
        if p.role != ReplicaRole::Primary {
            return Err(format!("node {primary} is not primary: {p:?}"));
        }
        let want = self.rows(primary).await.map_err(|e| format!("rows of primary {primary}: {e:?}"))?;
        for &f in followers {
            let s = self.state(f).await?;
            let behind = s.role != ReplicaRole::Follower
                || s.term != p.term
                || !s.serving
                || s.fault.is_some()
                || s.applied_index < p.commit_index;
            if behind {
                return Err(format!("node {f} not caught up: {s:?}; primary {p:?}"));
            }
            let got = self.rows(f).await.map_err(|e| format!("rows of node {f}: {e:?}"))?;
            if got != want {
                return Err(format!(
                    "node {f} holds {} rows, primary {}; first difference: {}",
                    got.len(),
                    want.len(),
                    first_difference(&got, &want)
                ));
            }
        }
        Ok(want)
    }

    /// Checks that every entry in node `i`'s log is the entry node `reference` holds at the
    /// same index (same term and CRC), that none lies beyond the reference's last entry,
    /// and that every CRC is good. Entries the reference has already dropped are skipped.
    pub(crate) async fn log_matches(&self, i: usize, reference: usize) -> Result<(), String> {
        let mine = self.log(i, 100_000).await?;
        let theirs = self.log(reference, 100_000).await?;
        let Some(first) = theirs.first().map(|l| l.index) else {
            return if mine.is_empty() {
                Ok(())
            } else {
                Err(format!("node {reference} has an empty log, node {i} has {mine:?}"))
            };
        };
        let last = theirs.last().map_or(0, |l| l.index);
        let mut problems = Vec::new();
        for line in &mine {
            if !line.crc_ok {
                problems.push(format!("node {i} entry {} has a bad CRC: {line:?}", line.index));
            }
            if line.index < first {
                continue;
            }
            match theirs.iter().find(|t| t.index == line.index) {
                None if line.index > last => {
                    problems.push(format!("node {i} holds entry {line:?} beyond node {reference}'s last index {last}"))
                }
                None => problems.push(format!("node {reference} lacks index {} that node {i} holds", line.index)),
                Some(t) if (t.term, t.crc) != (line.term, line.crc) => {
                    problems.push(format!("index {}: node {i} has {line:?}, node {reference} has {t:?}", line.index))
                }
                Some(_) => {}
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }
}

/// A short description of where two key-ordered row lists first differ.
pub(crate) fn first_difference(got: &[Row], want: &[Row]) -> String {
    for (g, w) in got.iter().zip(want) {
        if g != w {
            return format!("{g:?} where the primary has {w:?}");
        }
    }
    match got.len().cmp(&want.len()) {
        std::cmp::Ordering::Less => format!("missing {:?}", &want[got.len()]),
        std::cmp::Ordering::Greater => format!("extra {:?}", &got[want.len()]),
        std::cmp::Ordering::Equal => "none".into(),
    }
}
