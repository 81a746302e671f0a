//! Replication to one follower: the primary runs one of these per follower.
//!
//! It sends the entries the follower lacks (from `next`), learns from each answer how far
//! the follower's log matches ours, and reports that to the shard task, which counts
//! majorities. A refusal moves `next` back to where the follower asks; a follower too far
//! behind, or behind the log's truncated prefix, gets a snapshot of the table instead.
//! When there is nothing to send it sends an empty append every sync heartbeat, which
//! carries the commit index and tells the primary the follower is alive.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use shardline_protocol::{LogPosition, PeerRequest, PeerResponse, ServerAddr, ShardId};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::Command;
use crate::config::NodeConfig;
use crate::table::Table;
use crate::wal::LogView;
use shardline_protocol::net::{CallError, Conn};

/// Entries sent in one append at most.
const MAX_BATCH_ENTRIES: usize = 512;
/// Bytes of entries sent in one append, about.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Rows in one snapshot chunk.
const SNAPSHOT_CHUNK_ROWS: usize = 2000;

/// Replicates the primary's log to one follower.
#[derive(Debug)]
pub(super) struct PeerTask {
    pub shard: ShardId,
    pub term: u64,
    pub me: String,
    pub epoch: u64,
    pub slot: usize,
    pub addr: ServerAddr,
    pub log: LogView,
    pub table: Table,
    pub progress: watch::Receiver<(u64, u64)>,
    pub events: mpsc::WeakSender<Command>,
    pub reachable: Arc<AtomicBool>,
    pub cfg: Arc<NodeConfig>,
}

enum Next {
    Append(PeerRequest, u64),
    Snapshot,
}

impl PeerTask {
    pub(super) async fn run(mut self) {
        let mut next = self.log.read().expect("log lock").last().index + 1;
        let mut conn: Option<Conn> = None;
        let mut reported = 0u64;
        loop {
            let (last, commit) = *self.progress.borrow_and_update();
            if conn.is_none() {
                match Conn::connect(&self.addr.addr, self.cfg.peer_timeout, self.cfg.max_payload).await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        self.unreachable(&e);
                        self.idle().await;
                        continue;
                    }
                }
            }
            let c = conn.as_mut().expect("connected");
            let outcome = match self.plan(next, last, commit) {
                Next::Snapshot => self.send_snapshot(c).await.map(|included| {
                    next = included + 1;
                    Some(included)
                }),
                Next::Append(request, sent_last) => match c.call(&request, self.cfg.peer_timeout).await {
                    Ok(PeerResponse::Appended { term, success, last: matched, retry_from }) => {
                        if term > self.term {
                            self.send(Command::HigherTerm { term }).await;
                            return;
                        }
                        if success {
                            next = matched.index.max(sent_last) + 1;
                            Ok(Some(matched.index))
                        } else {
                            debug!(next, retry_from, "follower refused: moving back");
                            next = retry_from.clamp(1, next.max(1));
                            Ok(None)
                        }
                    }
                    Ok(PeerResponse::Error(e)) => Err(CallError::Protocol(e.to_string())),
                    Ok(other) => Err(CallError::Protocol(format!("unexpected answer {other:?}"))),
                    Err(e) => Err(e),
                },
            };
            match outcome {
                Ok(durable) => {
                    self.reachable.store(true, Ordering::Relaxed);
                    if let Some(d) = durable.filter(|&d| d != reported) {
                        reported = d;
                        self.send(Command::Progress { epoch: self.epoch, slot: self.slot, durable: d }).await;
                    }
                    let caught_up = next > self.progress.borrow().0;
                    if caught_up {
                        self.idle().await;
                    }
                }
                Err(e) => {
                    self.unreachable(&e);
                    conn = None;
                    self.idle().await;
                }
            }
        }
    }

    /// What to send next: an append from `next`, or a snapshot if the log cannot serve.
    fn plan(&self, next: u64, last: u64, commit: u64) -> Next {
        let mem = self.log.read().expect("log lock");
        let prev_index = next - 1;
        let Some(prev_term) = mem.term_at(prev_index) else {
            return Next::Snapshot;
        };
        if last.saturating_sub(prev_index) > self.cfg.snapshot_lag {
            return Next::Snapshot;
        }
        let entries = mem.records_from(next, MAX_BATCH_ENTRIES, MAX_BATCH_BYTES);
        let sent_last = prev_index + entries.len() as u64;
        let request = PeerRequest::Append {
            shard: self.shard,
            term: self.term,
            primary: self.me.clone(),
            prev: LogPosition { term: prev_term, index: prev_index },
            entries,
            commit,
        };
        Next::Append(request, sent_last)
    }

    /// Streams the table; returns the index the snapshot covers.
    async fn send_snapshot(&self, conn: &mut Conn) -> Result<u64, CallError> {
        let table = self.table.clone();
        let (included, rows) = tokio::task::spawn_blocking(move || table.snapshot())
            .await
            .map_err(|e| CallError::Protocol(e.to_string()))?
            .map_err(|e| CallError::Protocol(e.to_string()))?;
        info!(upto = included.index, rows = rows.len(), "sending a snapshot");
        let chunks: Vec<&[shardline_protocol::Row]> =
            if rows.is_empty() { vec![&[]] } else { rows.chunks(SNAPSHOT_CHUNK_ROWS).collect() };
        let count = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let request = PeerRequest::Snapshot {
                shard: self.shard,
                term: self.term,
                primary: self.me.clone(),
                last_included: included,
                chunk: i as u32,
                rows: chunk.to_vec(),
                done: i + 1 == count,
            };
            match conn.call(&request, self.cfg.peer_timeout * 4).await? {
                PeerResponse::SnapshotStored { .. } => {}
                PeerResponse::Error(e) => return Err(CallError::Protocol(e.to_string())),
                other => return Err(CallError::Protocol(format!("unexpected answer {other:?}"))),
            }
        }
        Ok(included.index)
    }

    fn unreachable(&self, e: &CallError) {
        if self.reachable.swap(false, Ordering::Relaxed) {
            warn!(%e, "follower unreachable");
        }
    }

    /// Waits for new entries or the next heartbeat, whichever comes first.
    async fn idle(&mut self) {
        let beat = self.cfg.sync_heartbeat;
        if let Ok(Err(_)) = tokio::time::timeout(beat, self.progress.changed()).await {
            // The primary stepped down; this task is about to be aborted.
            tokio::time::sleep(beat).await;
        }
    }

    async fn send(&self, command: Command) {
        if let Some(tx) = self.events.upgrade() {
            let _ = tx.send(command).await;
        }
    }
}
