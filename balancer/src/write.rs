//! The write path: batches split by shard, updates and deletes, each to its shard's primary.
//!
//! A batch is parsed by its index only and split into one sub-batch per shard
//! ([`split_batch`]); a key outside every shard fails the whole batch before anything is
//! sent. A batch without a client id is stamped with the balancer's own id and a fresh
//! sequence, so that retries (which reuse them) are applied at most once. Sub-batches go
//! to their primaries concurrently, each retried on its own.
//!
//! Each shard's part is atomic, but a batch spanning shards is not: if one part fails for
//! good after others committed, the answer is that part's error with a note naming the
//! shards that committed and those that did not. (The error keeps its code when the code
//! carries a message; a code that has none is carried as `BadRequest`, or `Unavailable`
//! for a retryable one, so the note is not lost.)

use futures::future::join_all;
use shardline_protocol::{kind, ErrorCode, Frame, Message, Request, Route, ShardId, WriteBatch};
use tokio::time::Instant;
use tracing::{debug_span, Instrument};

use crate::merge::merge_commits;
use crate::route::{is_retryable, split_batch, Routing};
use crate::service::{encode, Balancer};

impl Balancer {
    /// Serves a `Write` frame.
    pub(crate) async fn write(&self, frame: Frame) -> Result<Frame, ErrorCode> {
        let batch = WriteBatch::parse(frame.payload.clone()).map_err(|e| ErrorCode::BadRequest(e.to_string()))?;
        if batch.is_empty() {
            return Err(ErrorCode::BadRequest("a write needs at least one row".into()));
        }
        let deadline = self.deadline();
        let routing = self.routing_by(deadline).await?;
        let stamped = batch.client_id() == 0;
        let batch = if stamped { batch.with_client(self.client_id(), self.next_seq()) } else { batch };
        let parts = split_batch(&batch, &routing)?;
        let whole = !stamped && parts.len() == 1;
        let sends = parts.iter().map(|(shard, part)| {
            let shard = *shard;
            // A batch sent whole and unchanged is forwarded as the bytes that came in.
            let payload = if whole { frame.payload.clone() } else { part.to_bytes() };
            let sub = Frame::new(kind::WRITE, 0, payload).with_route(Route::Shard(shard.0));
            let span = debug_span!("shard_write", %shard, rows = part.len());
            async move {
                self.call_with_retries(Some(shard), &sub, deadline, |r, _| r.primary(shard))
                    .await
                    .map(|(answer, _)| answer)
            }
            .instrument(span)
        });
        let results = join_all(sends).await;
        let mut committed = Vec::new();
        let mut answers = Vec::new();
        let mut failures = Vec::new();
        for ((shard, _), result) in parts.iter().zip(results) {
            match result {
                Ok(answer) => {
                    committed.push(*shard);
                    answers.push(answer);
                }
                Err(e) => failures.push((*shard, e)),
            }
        }
        let Some((_, first_error)) = failures.first().cloned() else {
            return match answers.len() {
                1 => Ok(answers.remove(0)),
                _ => Ok(encode(&merge_commits(&answers)?)),
            };
        };
        if committed.is_empty() {
            return Err(first_error);
        }
        let failed: Vec<ShardId> = failures.iter().map(|(s, _)| *s).collect();
        tracing::warn!(?committed, ?failed, %first_error, "write batch partly committed");
        Err(partial(first_error, &committed, &failed))
    }

    /// Serves an `Update` or `Delete` frame: stamps it if it has no client id, sends it to
    /// the key's primary.
    pub(crate) async fn write_one(&self, frame: Frame) -> Result<Frame, ErrorCode> {
        let request = Request::from_frame(&frame).map_err(|e| ErrorCode::BadRequest(e.to_string()))?;
        let (key, stamped) = match request {
            Request::Update { client_id: 0, row, .. } => {
                let key = row.key;
                let (client_id, seq) = (self.client_id(), self.next_seq());
                (key, Some(Request::Update { client_id, seq, row }))
            }
            Request::Delete { client_id: 0, key, .. } => {
                let (client_id, seq) = (self.client_id(), self.next_seq());
                (key, Some(Request::Delete { client_id, seq, key }))
            }
            Request::Update { ref row, .. } => (row.key, None),
            Request::Delete { key, .. } => (key, None),
            other => return Err(ErrorCode::BadRequest(format!("expected an update or a delete, got {other:?}"))),
        };
        let deadline = self.deadline();
        let routing = self.routing_by(deadline).await?;
        let shard = routing.shard_of(key).ok_or(ErrorCode::KeyOutOfRange { key })?;
        let sub = match stamped {
            Some(request) => request.to_frame(0).map_err(|e| ErrorCode::BadRequest(e.to_string()))?,
            None => Frame::new(frame.kind, 0, frame.payload),
        }
        .with_route(Route::Shard(shard.0));
        self.call_with_retries(Some(shard), &sub, deadline, |r, _| r.primary(shard)).await.map(|(answer, _)| answer)
    }

    /// The current routing, waiting (until `deadline`) for a first topology if none yet.
    pub(crate) async fn routing_by(&self, deadline: Instant) -> Result<std::sync::Arc<Routing>, ErrorCode> {
        let mut backoff = self.cfg.backoff_min;
        loop {
            let routing = self.topology.current();
            if routing.has_shards() {
                return Ok(routing);
            }
            if Instant::now() + backoff >= deadline {
                return Err(ErrorCode::Internal(format!(
                    "no topology with shards yet from the coordinator at {} (not initialized, or unreachable)",
                    self.topology.coordinator()
                )));
            }
            self.topology.refresh(&self.pool, &self.stats, routing.version()).await;
            self.topology.wait_newer(routing.version(), backoff).await;
            backoff = (backoff * 2).min(self.cfg.backoff_max);
        }
    }
}

fn names(shards: &[ShardId]) -> String {
    shards.iter().map(ShardId::to_string).collect::<Vec<_>>().join(", ")
}

/// The answer to a batch that committed on `committed` and failed on `failed`.
fn partial(error: ErrorCode, committed: &[ShardId], failed: &[ShardId]) -> ErrorCode {
    let note = format!(
        "partial write: {} committed (each shard's part is atomic), {} did not",
        names(committed),
        names(failed)
    );
    match error {
        ErrorCode::SchemaViolation(m) => ErrorCode::SchemaViolation(format!("{m}; {note}")),
        ErrorCode::BadRequest(m) => ErrorCode::BadRequest(format!("{m}; {note}")),
        ErrorCode::Timeout(m) => ErrorCode::Timeout(format!("{m}; {note}")),
        ErrorCode::Internal(m) => ErrorCode::Internal(format!("{m}; {note}")),
        ErrorCode::Overloaded(m) => ErrorCode::Overloaded(format!("{m}; {note}")),
        ErrorCode::Unavailable { shard, reason } => {
            ErrorCode::Unavailable { shard, reason: format!("{reason}; {note}") }
        }
        e if is_retryable(&e) => ErrorCode::Unavailable { shard: failed[0], reason: format!("{e}; {note}") },
        e => ErrorCode::BadRequest(format!("{e}; {note}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_failures_name_the_committed_shards() {
        let e = partial(ErrorCode::DuplicateKey { key: 7 }, &[ShardId(1), ShardId(3)], &[ShardId(2)]);
        let text = e.to_string();
        assert!(matches!(e, ErrorCode::BadRequest(_)), "{e:?}");
        assert!(text.contains("duplicate key 7") && text.contains("sh1, sh3 committed"), "{text}");
        let e = partial(ErrorCode::NoQuorum { shard: ShardId(2), acked: 1, needed: 2 }, &[ShardId(1)], &[ShardId(2)]);
        assert!(matches!(e, ErrorCode::Unavailable { shard: ShardId(2), .. }));
        assert!(e.to_string().contains("sh1 committed"));
    }
}
