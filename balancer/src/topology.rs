//! The topology cache: the newest [`Routing`] the balancer knows, kept fresh two ways.
//!
//! - [`follow`] holds a `SubscribeTopology` connection to the coordinator, which answers at
//!   once and then pushes every newer topology; the connection is re-opened with backoff
//!   when it drops.
//! - [`TopologyCache::refresh`] asks `GetTopology { known_version }` on demand (a pooled
//!   connection, separate from the subscription) when a request meets `NotPrimary`, a dead
//!   node or the like. Concurrent refreshes coalesce into one.
//!
//! Either way the cache only ever moves forward: a topology no newer than the one held is
//! ignored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use shardline_protocol::{FrameCodec, Message, Request, Response, Topology};
use tokio::sync::{watch, Mutex as AsyncMutex};
use tokio_util::codec::Framed;
use tracing::{debug, info, warn};

use crate::config::BalancerConfig;
use crate::pool::Pool;
use crate::route::Routing;
use crate::stats::Stats;

/// Two on-demand refreshes are at least this far apart.
const MIN_REFRESH_GAP: Duration = Duration::from_millis(20);
/// How long an on-demand `GetTopology` may take.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(1);

/// The newest routing table, shared by every request.
#[derive(Debug)]
pub struct TopologyCache {
    current: watch::Sender<Arc<Routing>>,
    coordinator: Arc<str>,
    last_refresh: AsyncMutex<Option<Instant>>,
}

impl TopologyCache {
    /// An empty cache (version 0) fed from the coordinator at `coordinator`.
    pub fn new(coordinator: &str) -> TopologyCache {
        TopologyCache {
            current: watch::Sender::new(Arc::new(Routing::default())),
            coordinator: Arc::from(coordinator),
            last_refresh: AsyncMutex::new(None),
        }
    }

    /// The coordinator's address.
    pub fn coordinator(&self) -> &Arc<str> {
        &self.coordinator
    }

    /// The newest routing table.
    pub fn current(&self) -> Arc<Routing> {
        self.current.borrow().clone()
    }

    /// Takes `topology` if it is newer than the one held; says whether it did.
    pub fn offer(&self, topology: Topology) -> bool {
        let version = topology.version;
        let taken = self.current.send_if_modified(|held| {
            if version > held.version() {
                *held = Arc::new(Routing::new(topology));
                true
            } else {
                false
            }
        });
        if taken {
            info!(version, "topology updated");
        }
        taken
    }

    /// Waits until the version is above `seen`, or `max` has passed.
    pub async fn wait_newer(&self, seen: u64, max: Duration) {
        let mut rx = self.current.subscribe();
        let _ = tokio::time::timeout(max, rx.wait_for(|r| r.version() > seen)).await;
    }

    /// Completes once a routing newer than `seen` makes `still` false: the server a call
    /// went to is no longer where the call belongs (a new primary was elected, say).
    pub async fn moved(&self, seen: u64, still: impl Fn(&Routing) -> bool) {
        let mut rx = self.current.subscribe();
        if rx.wait_for(|r| r.version() > seen && !still(r)).await.is_err() {
            // The cache is gone: nothing will ever move.
            std::future::pending::<()>().await;
        }
    }

    /// Asks the coordinator for a topology newer than `seen`, unless a newer one is held
    /// already or another refresh ran a moment ago.
    pub async fn refresh(&self, pool: &Pool, stats: &Stats, seen: u64) {
        let mut last = self.last_refresh.lock().await;
        if self.current().version() > seen || last.is_some_and(|t| t.elapsed() < MIN_REFRESH_GAP) {
            return;
        }
        *last = Some(Instant::now());
        stats.refresh();
        let known_version = self.current().version();
        let ask = Request::GetTopology { known_version };
        let Ok(frame) = ask.to_frame(0) else { return };
        match pool.call(&self.coordinator, frame, REFRESH_TIMEOUT).await {
            Ok(answer) => match Response::from_frame(&answer) {
                Ok(Response::Topology(t)) => {
                    self.offer(t);
                }
                Ok(Response::TopologyUnchanged { .. }) => {}
                Ok(other) => debug!(?other, "unexpected answer to GetTopology"),
                Err(e) => debug!(%e, "undecodable answer to GetTopology"),
            },
            Err(e) => debug!(%e, "topology refresh failed"),
        }
    }
}

/// Follows the coordinator's topology pushes until the task is aborted, reconnecting with
/// backoff whenever the subscription drops.
pub async fn follow(cache: Arc<TopologyCache>, cfg: BalancerConfig) {
    let (min, max) = (Duration::from_millis(50), Duration::from_secs(2));
    let mut backoff = min;
    let mut failures = 0u64;
    loop {
        let started = Instant::now();
        // A subscription that lived a while starts the next from a short pause again.
        let result = subscribe_once(&cache, &cfg).await;
        if started.elapsed() > max {
            backoff = min;
            failures = 0;
        }
        match result {
            Ok(()) => {
                info!(coordinator = %cache.coordinator, "topology subscription ended");
                failures = 0;
            }
            // Warn once per outage; the repeats are debug.
            Err(e) if failures == 0 => {
                warn!(coordinator = %cache.coordinator, %e, "topology subscription failed; retrying");
                failures = 1;
            }
            Err(e) => {
                debug!(coordinator = %cache.coordinator, %e, failures, "still no subscription");
                failures += 1;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(max);
    }
}

/// One subscription: sends `SubscribeTopology`, takes every `Topology` answered with its id.
async fn subscribe_once(cache: &TopologyCache, cfg: &BalancerConfig) -> Result<(), String> {
    const ID: u64 = 1;
    let addr = &*cache.coordinator;
    let credential = cfg.outgoing();
    let stream = shardline_protocol::net::open_stream(addr, cfg.connect_timeout, cfg.max_payload, credential.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    let mut framed = Framed::new(stream, FrameCodec::new(cfg.max_payload));
    let ask = Request::SubscribeTopology.to_frame(ID).map_err(|e| e.to_string())?;
    framed.send(&ask).await.map_err(|e| e.to_string())?;
    info!(coordinator = %addr, "subscribed to topology");
    while let Some(frame) = framed.next().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if frame.request_id != ID {
            continue;
        }
        match Response::from_frame(&frame) {
            Ok(Response::Topology(t)) => {
                cache.offer(t);
            }
            Ok(Response::Error(e)) => return Err(format!("coordinator refused: {e}")),
            Ok(other) => debug!(?other, "ignoring an unexpected push"),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_never_goes_back() {
        let cache = TopologyCache::new("127.0.0.1:1");
        let t = |version| Topology { version, ..Topology::default() };
        assert!(cache.offer(t(3)));
        assert!(!cache.offer(t(2)));
        assert!(!cache.offer(t(3)));
        assert_eq!(cache.current().version(), 3);
        assert!(cache.offer(t(4)));
        assert_eq!(cache.current().version(), 4);
    }
}
