//! One follower connection: carries the replica core's messages to a follower, one at a
//! time, and hands each answer (or the call's failure) back to the shard task.

use std::sync::Arc;

use shardline_protocol::net::Conn;
use shardline_protocol::{PeerRequest, PeerResponse};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::config::NodeConfig;
use crate::replica::Link;

/// An answer from a follower, for the shard task.
pub(super) type Answer = (Link, Result<PeerResponse, String>);

/// Starts the connection task for messages to `addr`; it ends when the sender is dropped.
pub(super) fn spawn(
    name: &str,
    addr: String,
    cfg: Arc<NodeConfig>,
    answers: mpsc::UnboundedSender<Answer>,
) -> mpsc::UnboundedSender<(Link, PeerRequest)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Link, PeerRequest)>();
    let span = tracing::info_span!("replicate", to = %name);
    tokio::spawn(
        async move {
            let mut conn: Option<Conn> = None;
            while let Some((link, request)) = rx.recv().await {
                let timeout = match request {
                    PeerRequest::Snapshot { .. } => cfg.peer_timeout * 4,
                    _ => cfg.peer_timeout,
                };
                if conn.is_none() {
                    match Conn::connect(&addr, cfg.peer_timeout, cfg.max_payload).await {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            let _ = answers.send((link, Err(e.to_string())));
                            continue;
                        }
                    }
                }
                let c = conn.as_mut().expect("connected");
                let answer = c.call::<_, PeerResponse>(&request, timeout).await.map_err(|e| e.to_string());
                if answer.is_err() {
                    conn = None;
                }
                if answers.send((link, answer)).is_err() {
                    break;
                }
            }
        }
        .instrument(span),
    );
    tx
}
