//! Sending one frame to a shard's replica, retrying across failovers until a deadline.
//!
//! An attempt picks its target from the newest topology, and is given up as soon as a newer
//! topology sends the request elsewhere (a hung or cut-off primary is replaced: its calls
//! would otherwise wait out the whole call timeout); that counts as a failure that may have
//! been logged, and the request is retried where the topology now points. A retryable
//! failure (`NotPrimary`,
//! `LeaseExpired`, `Unavailable`, `NoQuorum`, `Timeout`, a dead connection, no primary
//! elected) refreshes the topology, waits a backoff (cut short when a newer topology
//! arrives) and tries again, until the deadline; then the last error is the answer, except
//! that a definite refusal after an attempt that may have been logged becomes `Timeout`
//! ([`final_error`]): the README's promise that a refusal means "never applied". Any other
//! error goes straight back. Writes are retried with the same (client id, sequence),
//! which storage nodes apply at most once: a retry of a write an earlier attempt already
//! logged (even one a new primary inherited uncommitted) is answered with that write's
//! commit, never refused as a duplicate of itself.

use std::time::Duration;

use shardline_protocol::net::CallError;
use shardline_protocol::{kind, ErrorCode, Frame, ShardId};
use tokio::time::Instant;
use tracing::debug;

use crate::merge::error_of;
use crate::route::{final_error, is_retryable, may_have_logged, Routing, Target};
use crate::service::Balancer;

/// Shortest per-call timeout, even near the deadline.
const MIN_CALL: Duration = Duration::from_millis(200);

impl Balancer {
    /// Sends `frame` to the target `pick` names (given the routing and the servers that
    /// failed this request so far), retrying as the module says. Returns the answer frame
    /// (with the pool's request id) and the server that gave it.
    pub(crate) async fn call_with_retries(
        &self,
        shard: Option<ShardId>,
        frame: &Frame,
        deadline: Instant,
        pick: impl Fn(&Routing, &[String]) -> Result<Target, ErrorCode>,
    ) -> Result<(Frame, Target), ErrorCode> {
        let mut failed: Vec<String> = Vec::new();
        let mut backoff = self.cfg.backoff_min;
        let mut maybe_logged = false;
        loop {
            let routing = self.topology.current();
            let error = match pick(&routing, &failed) {
                Err(e) => e,
                Ok(target) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let timeout = self.cfg.call_timeout.min(left.max(MIN_CALL));
                    let still_there = |r: &Routing| pick(r, &failed).is_ok_and(|t| t.addr == target.addr);
                    let sent = Instant::now();
                    let call = tokio::select! {
                        answer = self.pool.call(&target.addr, frame.clone(), timeout) => answer,
                        () = self.topology.moved(routing.version(), still_there) => {
                            debug!(?shard, from = %target.name, "topology moved the request while in flight");
                            // Given up like a call that timed out: it may yet take effect there.
                            Err(CallError::Timeout { addr: target.addr.to_string(), after: sent.elapsed() })
                        }
                    };
                    match call {
                        Ok(answer) if answer.kind != kind::ERROR => return Ok((answer, target)),
                        Ok(answer) => {
                            let e = error_of(&answer);
                            if matches!(e, ErrorCode::Behind { .. }) && failed.is_empty() {
                                // A replica too stale for a bounded or session read: the
                                // next pick is the primary, at once (the topology is fine).
                                failed.push(target.name.to_string());
                                continue;
                            }
                            if matches!(e, ErrorCode::Unavailable { .. }) {
                                failed.push(target.name.to_string());
                            }
                            e
                        }
                        Err(call) if call.is_retryable() => {
                            failed.push(target.name.to_string());
                            call.to_code(shard)
                        }
                        Err(call) => return Err(call.to_code(shard)),
                    }
                }
            };
            if !is_retryable(&error) || Instant::now() + backoff >= deadline {
                return Err(final_error(error, maybe_logged));
            }
            maybe_logged |= may_have_logged(&error);
            debug!(?shard, %error, ?backoff, "retrying");
            self.stats.retry();
            let seen = routing.version();
            let refresh = self.topology.refresh(&self.pool, &self.stats, seen);
            let _ = tokio::time::timeout_at(deadline, refresh).await;
            let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
            self.topology.wait_newer(seen, pause).await;
            backoff = (backoff * 2).min(self.cfg.backoff_max);
        }
    }
}
