//! The read path: a range split across the shards it overlaps, one replica each.
//!
//! Each shard's part goes to the replica its ring picks for this request (a hash of a
//! balancer-wide request counter), or to its primary for a linearizable read; a replica
//! that fails is skipped on the retry. A `bounded` or `session` read a replica cannot
//! serve (it answers `Behind`) goes to the primary next, at once
//! ([`Routing::reader_at`](crate::route::Routing::reader_at)). The shards' answers are spliced in key order
//! without decoding a row ([`merge_rows`]). `ReadServer` is forwarded to the named server.

use futures::future::join_all;
use shardline_protocol::frame::FLAG_LINEARIZABLE;
use shardline_protocol::{kind, Consistency, ErrorCode, Frame, Message, Request, Response, Route, ShardId};
use tokio::time::Instant;
use tracing::{debug_span, Instrument};

use crate::merge::{merge_rows, rows_kind};
use crate::ring::hash_of;
use crate::route::Routing;
use crate::service::{answer_with, encode, Balancer};

impl Balancer {
    /// Serves a `Read` frame.
    pub(crate) async fn read(&self, frame: Frame) -> Result<Frame, ErrorCode> {
        let (low, high, asked) = match Request::from_frame(&frame) {
            Ok(Request::Read { low, high, consistency }) => (low, high, consistency),
            Ok(other) => return Err(unexpected("a read", &other)),
            Err(e) => return Err(ErrorCode::BadRequest(e.to_string())),
        };
        let level = if frame.has_flag(FLAG_LINEARIZABLE) { Consistency::Primary } else { asked.clone() };
        if low > high {
            return Err(ErrorCode::BadRequest(format!("read range low {low} is above high {high}")));
        }
        let deadline = self.deadline();
        let routing = self.routing_by(deadline).await?;
        let parts = routing.overlapping(low, high);
        if parts.is_empty() {
            return Ok(encode(&Response::Rows { at: Vec::new(), rows: Vec::new() }));
        }
        let hash = hash_of(self.next_request());
        if let [(shard, part_low, part_high)] = parts[..] {
            // One shard: its answer is the answer, forwarded as it came; a request that
            // fits the shard whole is forwarded as the bytes that came in, too.
            let whole = (part_low, part_high) == (low, high) && level == asked;
            let payload = whole.then(|| frame.payload.clone());
            return self.read_part(shard, (part_low, part_high), &level, hash, deadline, payload).await;
        }
        let reads = parts.iter().map(|&(shard, low, high)| {
            let span = debug_span!("shard_read", %shard, low, high, level = level.name());
            self.read_part(shard, (low, high), &level, hash, deadline, None).instrument(span)
        });
        let answers = join_all(reads).await.into_iter().collect::<Result<Vec<Frame>, ErrorCode>>()?;
        Ok(answer_with(rows_kind(), merge_rows(&answers)?))
    }

    /// Reads `[low, high]` of one shard from the replica the ring picks (or its primary)
    /// at `level`; `payload`, when given, is that request already encoded.
    async fn read_part(
        &self,
        shard: ShardId,
        (low, high): (i64, i64),
        level: &Consistency,
        hash: u64,
        deadline: Instant,
        payload: Option<bytes::Bytes>,
    ) -> Result<Frame, ErrorCode> {
        let sub = match payload {
            Some(payload) => Frame::new(kind::READ, 0, payload),
            None => Request::Read { low, high, consistency: level.for_shard(shard) }
                .to_frame(0)
                .map_err(|e| ErrorCode::Internal(e.to_string()))?,
        }
        .with_route(Route::Shard(shard.0));
        let pick = |r: &Routing, failed: &[String]| r.reader_at(shard, hash, level, failed);
        let (answer, target) = self.call_with_retries(Some(shard), &sub, deadline, pick).await?;
        if answer.kind != rows_kind() {
            return Err(ErrorCode::Internal(format!(
                "{} answered a read with frame kind {:#04x}",
                target.name, answer.kind
            )));
        }
        self.stats.read_on(&target.name);
        Ok(answer)
    }

    /// Serves a `ReadServer` frame: forwarded unchanged to the named server.
    pub(crate) async fn read_server(&self, frame: Frame) -> Result<Frame, ErrorCode> {
        let server = match Request::from_frame(&frame) {
            Ok(Request::ReadServer { server }) => server,
            Ok(other) => return Err(unexpected("a read-server request", &other)),
            Err(e) => return Err(ErrorCode::BadRequest(e.to_string())),
        };
        let deadline = self.deadline();
        let routing = self.routing_by(deadline).await?;
        // Not in this topology: perhaps just added; ask once before refusing.
        if routing.server(&server).is_err() {
            self.topology.refresh(&self.pool, &self.stats, routing.version()).await;
        }
        let forward = Frame::new(frame.kind, 0, frame.payload);
        let (answer, _) = self.call_with_retries(None, &forward, deadline, |r, _| r.server(&server)).await?;
        Ok(answer)
    }
}

fn unexpected(wanted: &str, got: &Request) -> ErrorCode {
    ErrorCode::BadRequest(format!("expected {wanted}, got {got:?}"))
}
