//! One follower connection: carries the replica core's messages to a follower, several at
//! a time (the core's window, see [`crate::replica`]), and hands each answer (or the
//! call's failure) back to the shard task as it comes.
//!
//! The messages share one multiplexed connection, written in the order the core sent them,
//! so a follower receives a window's appends in order. A connection that failed is
//! replaced for the next message; the calls still open on it fail on their own.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use shardline_protocol::net::MuxConn;
use shardline_protocol::{Message, PeerRequest, PeerResponse};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::config::NodeConfig;
use crate::replica::Link;

/// An answer from a follower, for the shard task.
pub(super) type Answer = (Link, Result<PeerResponse, String>);

/// Starts the connection task for messages to `addr`; it ends when the sender is dropped.
pub(super) fn spawn(
    runtime: &tokio::runtime::Handle,
    name: &str,
    addr: String,
    cfg: Arc<NodeConfig>,
    answers: mpsc::UnboundedSender<Answer>,
) -> mpsc::UnboundedSender<(Link, PeerRequest)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Link, PeerRequest)>();
    let span = tracing::info_span!("replicate", to = %name);
    let addr: Arc<str> = addr.into();
    runtime.spawn(
        async move {
            let mut conn: Option<Arc<MuxConn>> = None;
            let mut calls = FuturesUnordered::new();
            loop {
                tokio::select! {
                    message = rx.recv() => {
                        let Some((link, request)) = message else { break };
                        if !conn.as_ref().is_some_and(|c| c.is_open()) {
                            match MuxConn::connect(addr.clone(), cfg.peer_timeout, cfg.max_payload).await {
                                Ok(c) => conn = Some(Arc::new(c)),
                                Err(e) => {
                                    conn = None;
                                    if answers.send((link, Err(e.to_string()))).is_err() {
                                        break;
                                    }
                                    continue;
                                }
                            }
                        }
                        let conn = conn.clone().expect("connected");
                        let timeout = match request {
                            PeerRequest::Snapshot { .. } => cfg.peer_timeout * 4,
                            _ => cfg.peer_timeout,
                        };
                        calls.push(call(conn, link, request, timeout));
                    }
                    Some(answer) = calls.next(), if !calls.is_empty() => {
                        if answers.send(answer).is_err() {
                            break;
                        }
                    }
                }
            }
        }
        .instrument(span),
    );
    tx
}

/// One call on the connection: the follower's answer to `request`, or why there is none.
/// The frame is queued on the connection at the future's first poll, which comes in the
/// order the calls were pushed.
async fn call(conn: Arc<MuxConn>, link: Link, request: PeerRequest, timeout: Duration) -> Answer {
    let answer = match request.to_frame(0) {
        Ok(frame) => match conn.call(frame, timeout).await {
            Ok(frame) => PeerResponse::from_frame(&frame).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    };
    (link, answer)
}
