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
//!
//! The coordinator may be several (`--coordinator a:7100,b:7100,c:7100`, coordinators on
//! etcd): one leads, the others stand by and refuse subscriptions, refreshes and admin
//! operations with `NotLeader`. The cache keeps which one it last found leading and moves
//! to the next when one refuses or cannot be reached.

use std::sync::atomic::{AtomicUsize, Ordering};
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
/// With several coordinators, a subscription with nothing pushed for this long is given
/// up (they repeat the topology every 300 ms).
const SUBSCRIPTION_SILENCE: Duration = Duration::from_millis(1000);
/// The same with several coordinators: a paused one is given up on sooner for the next
/// (a request's retry waits for its refresh, so this bounds what a paused coordinator
/// adds to a write's wait once leases are granted again).
const REFRESH_TIMEOUT_OF_SEVERAL: Duration = Duration::from_millis(250);

/// The newest routing table, shared by every request.
#[derive(Debug)]
pub struct TopologyCache {
    current: watch::Sender<Arc<Routing>>,
    coordinators: Vec<Arc<str>>,
    /// The index in `coordinators` of the one believed to lead.
    leader: AtomicUsize,
    last_refresh: AsyncMutex<Option<Instant>>,
}

/// The addresses in a comma-separated list, `a:7100,b:7100`.
pub fn coordinator_list(coordinators: &str) -> Vec<String> {
    coordinators.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned).collect()
}

impl TopologyCache {
    /// An empty cache (version 0) fed from the coordinator at `coordinator`, or from the
    /// leading one of a comma-separated list.
    pub fn new(coordinator: &str) -> TopologyCache {
        let mut coordinators: Vec<Arc<str>> = coordinator_list(coordinator).into_iter().map(Arc::from).collect();
        if coordinators.is_empty() {
            coordinators.push(Arc::from(coordinator));
        }
        TopologyCache {
            current: watch::Sender::new(Arc::new(Routing::default())),
            coordinators,
            leader: AtomicUsize::new(0),
            last_refresh: AsyncMutex::new(None),
        }
    }

    /// The address of the coordinator believed to lead.
    pub fn coordinator(&self) -> Arc<str> {
        self.coordinators[self.leader.load(Ordering::Relaxed) % self.coordinators.len()].clone()
    }

    /// How many coordinators are known.
    pub fn coordinators(&self) -> usize {
        self.coordinators.len()
    }

    /// `failed` refused or could not be reached: try the next in the list (unless another
    /// task has moved on already). A refusal's leader is not followed: a standby names
    /// the leader it last saw, which may be the one that just died, until its etcd
    /// lease runs out; going round the list finds the new one as soon as it leads.
    pub fn next_coordinator(&self, failed: &str) {
        let at = self.leader.load(Ordering::Relaxed) % self.coordinators.len();
        if *self.coordinators[at] != *failed {
            return;
        }
        let next = (at + 1) % self.coordinators.len();
        let _ = self.leader.compare_exchange(at, next, Ordering::Relaxed, Ordering::Relaxed);
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

    /// The coordinator that leads, found by asking each in turn from the one believed to
    /// lead for the topology (standbys refuse, a paused one does not answer in time);
    /// with one coordinator, that one, unasked.
    pub async fn leading(&self, pool: &Pool) -> Option<Arc<str>> {
        if self.coordinators.len() == 1 {
            return Some(self.coordinator());
        }
        for _ in 0..self.coordinators.len() {
            let coordinator = self.coordinator();
            let ask = Request::GetTopology { known_version: self.current().version() };
            let frame = ask.to_frame(0).ok()?;
            match pool.call(&coordinator, frame, REFRESH_TIMEOUT_OF_SEVERAL).await.map(|a| Response::from_frame(&a)) {
                Ok(Ok(Response::Topology(t))) => {
                    self.offer(t);
                    return Some(coordinator);
                }
                Ok(Ok(Response::TopologyUnchanged { .. })) => return Some(coordinator),
                other => {
                    debug!(%coordinator, ?other, "not the leading coordinator");
                    self.next_coordinator(&coordinator);
                }
            }
        }
        None
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
        let coordinator = self.coordinator();
        let timeout = if self.coordinators.len() > 1 { REFRESH_TIMEOUT_OF_SEVERAL } else { REFRESH_TIMEOUT };
        match pool.call(&coordinator, frame, timeout).await {
            Ok(answer) => match Response::from_frame(&answer) {
                Ok(Response::Topology(t)) => {
                    self.offer(t);
                }
                Ok(Response::TopologyUnchanged { .. }) => {}
                Ok(Response::Error(e)) => {
                    debug!(%e, %coordinator, "topology refresh refused");
                    self.next_coordinator(&coordinator);
                }
                Ok(other) => debug!(?other, "unexpected answer to GetTopology"),
                Err(e) => debug!(%e, "undecodable answer to GetTopology"),
            },
            Err(e) => {
                debug!(%e, %coordinator, "topology refresh failed");
                self.next_coordinator(&coordinator);
            }
        }
    }
}

/// Follows the coordinator's topology pushes until the task is aborted, reconnecting with
/// backoff whenever the subscription drops. With several coordinators, a refusal or a
/// failure moves to the next one; the backoff grows once per round of the list, and is
/// shorter (at most 500 ms), so a new leader is found soon after it takes over.
pub async fn follow(cache: Arc<TopologyCache>, cfg: BalancerConfig) {
    let max = if cache.coordinators() > 1 { Duration::from_millis(500) } else { Duration::from_secs(2) };
    let min = Duration::from_millis(50);
    let mut backoff = min;
    let mut failures = 0u64;
    loop {
        let started = Instant::now();
        let coordinator = cache.coordinator();
        // A subscription that lived a while starts the next from a short pause again.
        let result = subscribe_once(&cache, &coordinator, &cfg).await;
        if started.elapsed() > max {
            backoff = min;
            failures = 0;
        }
        match result {
            Ok(()) => {
                info!(%coordinator, "topology subscription ended");
                failures = 0;
            }
            // Warn once per outage; the repeats are debug.
            Err(e) if failures == 0 => {
                warn!(%coordinator, %e, "topology subscription failed; retrying");
                failures = 1;
            }
            Err(e) => {
                debug!(%coordinator, %e, failures, "still no subscription");
                failures += 1;
            }
        }
        cache.next_coordinator(&coordinator);
        // Around the list once without waiting; then the backoff.
        if failures > 0 && failures.is_multiple_of(cache.coordinators() as u64) {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(max);
        } else {
            tokio::time::sleep(min.min(backoff)).await;
        }
    }
}

/// One subscription: sends `SubscribeTopology`, takes every `Topology` answered with its id.
async fn subscribe_once(cache: &TopologyCache, addr: &str, cfg: &BalancerConfig) -> Result<(), String> {
    const ID: u64 = 1;
    let failed = |e: String| e;
    let stream = shardline_protocol::net::open_stream(addr, cfg.connect_timeout, cfg.max_payload, &cfg.outgoing())
        .await
        .map_err(|e| e.to_string())?;
    let mut framed = Framed::new(stream, FrameCodec::new(cfg.max_payload));
    let ask = Request::SubscribeTopology.to_frame(ID).map_err(|e| failed(e.to_string()))?;
    framed.send(&ask).await.map_err(|e| failed(e.to_string()))?;
    let mut subscribed = false;
    // Several coordinators (on etcd) repeat the topology every 300 ms: one silent for
    // longer than this is paused or cut off, and another may lead by now.
    let silence = (cache.coordinators() > 1).then_some(SUBSCRIPTION_SILENCE);
    loop {
        let next = match silence {
            Some(limit) => tokio::time::timeout(limit, framed.next())
                .await
                .map_err(|_| failed(format!("{addr} silent for {limit:?}")))?,
            None => framed.next().await,
        };
        let Some(frame) = next else { break };
        let frame = frame.map_err(|e| failed(e.to_string()))?;
        if frame.request_id != ID {
            continue;
        }
        match Response::from_frame(&frame) {
            Ok(Response::Topology(t)) => {
                if !subscribed {
                    subscribed = true;
                    info!(coordinator = %addr, "subscribed to topology");
                }
                cache.offer(t);
            }
            Ok(Response::Error(e)) => return Err(format!("coordinator refused: {e}")),
            Ok(other) => debug!(?other, "ignoring an unexpected push"),
            Err(e) => return Err(failed(e.to_string())),
        }
    }
    // A coordinator that stands down closes its subscriptions: look for the new leader.
    Err(failed(format!("{addr} closed the subscription")))
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

    #[test]
    fn a_failed_coordinator_hands_over_to_the_next_in_the_list() {
        let cache = TopologyCache::new("a:1, b:1,c:1");
        assert_eq!(cache.coordinators(), 3);
        assert_eq!(&*cache.coordinator(), "a:1");
        cache.next_coordinator("a:1");
        assert_eq!(&*cache.coordinator(), "b:1");
        cache.next_coordinator("a:1");
        assert_eq!(&*cache.coordinator(), "b:1", "a failure of another one moves nothing");
        cache.next_coordinator("b:1");
        cache.next_coordinator("c:1");
        assert_eq!(&*cache.coordinator(), "a:1", "the list wraps around");
    }
}
