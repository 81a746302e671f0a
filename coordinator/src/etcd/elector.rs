//! One leading coordinator among many: an etcd lease, a leader key held under it, and the
//! coordinator told when it takes over and when it must stand down.
//!
//! Every 100 ms the elector keeps its lease alive; each answered keep-alive moves the
//! deadline [`Leadership`] acts until to its send time plus the TTL, less a margin. While
//! it does not lead it tries a transaction: put the leader key under its lease if the key
//! does not exist (else read who leads). Once it wins it fences the metadata store with
//! its identity and the coordinator takes over (reloads the configuration, adopts the
//! running nodes). When no keep-alive is answered before the deadline (etcd electing a
//! new raft leader, say) the coordinator stops acting at once (the gate), but the lease
//! may still be alive in etcd, and with it the leader key: if a keep-alive gets through
//! again in time, it takes over afresh from the stored configuration. When a keep-alive
//! says the lease is gone, or a whole TTL has passed since the deadline, it stands down
//! and starts again with a new lease.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use tracing::{debug, info, warn};

use super::{EtcdMeta, EtcdUrl};
use crate::cluster::Coordinator;
use crate::leadership::Leadership;

/// Between two keep-alives (and two campaign attempts).
const TICK: Duration = Duration::from_millis(100);
/// A standby reloads the configuration (for STATUS) this often.
const STANDBY_REFRESH: Duration = Duration::from_secs(1);

/// Campaigns for the leadership and keeps it.
#[derive(Debug)]
pub struct Elector {
    url: EtcdUrl,
    /// This coordinator's address, as the leader key shows it.
    me: String,
    ttl: Duration,
    /// Taken off every deadline: covers clock rate differences with etcd's members.
    margin: Duration,
    store: Arc<EtcdMeta>,
    leadership: Arc<Leadership>,
}

/// The lease this elector holds now.
struct Held {
    id: i64,
    keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    /// Acting is safe until then.
    until: Instant,
}

impl Elector {
    /// An elector for the coordinator at `me`, with leases of `ttl` (etcd may round it up).
    pub fn new(url: EtcdUrl, me: String, ttl: Duration, store: Arc<EtcdMeta>, leadership: Arc<Leadership>) -> Elector {
        Elector { url, me, margin: ttl / 10, ttl, store, leadership }
    }

    /// Runs until the task is aborted.
    pub async fn run(self, coordinator: Arc<Coordinator>) {
        let timeout = self.ttl / 2;
        let mut client = None;
        loop {
            let c = match client.take() {
                Some(c) => c,
                None => match self.url.connect(timeout).await {
                    Ok(c) => c,
                    Err(e) => {
                        warn!(%e, "cannot reach etcd; retrying");
                        tokio::time::sleep(TICK).await;
                        continue;
                    }
                },
            };
            match self.term(c.clone(), &coordinator).await {
                Ok(()) => client = Some(c),
                Err(e) => warn!(%e, "etcd session ended; starting a new one"),
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// One lease: stand by or lead until it is lost.
    async fn term(&self, mut client: Client, coordinator: &Arc<Coordinator>) -> Result<(), etcd_client::Error> {
        let ttl_s = self.ttl.as_secs().max(1) as i64;
        let asked = Instant::now();
        let lease = client.lease_grant(ttl_s, None).await?;
        let mut held = Held { id: lease.id(), keeper: None, until: asked + self.granted(lease.ttl()) };
        let identity = format!("{} {:x}", self.me, lease.id());
        debug!(lease = lease.id(), ttl = lease.ttl(), "etcd lease granted");
        let mut leading = false;
        // Leading, but the deadline passed: not acting until a keep-alive gets through.
        let mut lapsed = false;
        let mut refreshed: Option<Instant> = None;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lost = loop {
            tick.tick().await;
            match self.keep_alive(&mut client, &mut held).await {
                Ok(true) => {}
                Ok(false) => break "etcd says the lease has expired",
                Err(e) => debug!(%e, "keep-alive failed"),
            }
            if Instant::now() >= held.until {
                if Instant::now() >= held.until + self.ttl {
                    break "no keep-alive answered for a whole TTL past the deadline";
                }
                if leading && !lapsed {
                    warn!("no keep-alive answered before the lease's deadline: not acting until one is");
                    lapsed = true;
                    self.leadership.lose();
                    coordinator.step_down();
                }
                continue;
            }
            if leading && lapsed {
                // The lease lived on in etcd, and the leader key with it: nobody else led.
                info!(lease = held.id, "keep-alive answered again: taking over afresh");
                if let Err(e) = coordinator.take_over(held.until, &self.me).await {
                    warn!(%e, "could not take over again; standing down");
                    break "the takeover failed";
                }
                lapsed = false;
                continue;
            }
            if leading {
                self.leadership.renew(held.until);
                continue;
            }
            match self.campaign(&mut client, &identity, held.id).await {
                Ok(None) => {
                    self.store.fence(Some(identity.clone()));
                    info!(lease = held.id, "won the coordinator election: taking over");
                    if let Err(e) = coordinator.take_over(held.until, &self.me).await {
                        warn!(%e, "could not take over; standing down");
                        break "the takeover failed";
                    }
                    leading = true;
                }
                Ok(Some(leader)) => {
                    self.leadership.follow(leader);
                    if refreshed.is_none_or(|at| at.elapsed() >= STANDBY_REFRESH) {
                        refreshed = Some(Instant::now());
                        coordinator.refresh_standby().await;
                    }
                }
                Err(e) => debug!(%e, "campaign attempt failed"),
            }
        };
        self.leadership.lose();
        self.store.fence(None);
        if leading {
            warn!(reason = lost, "lost the coordinator leadership: standing down");
            coordinator.step_down();
        } else {
            info!(reason = lost, "etcd lease lost while standing by");
        }
        // Best effort: a revoked lease frees the leader key at once instead of at expiry.
        let _ = tokio::time::timeout(self.ttl / 2, client.lease_revoke(held.id)).await;
        Ok(())
    }

    /// The deadline's offset for a lease etcd granted or renewed with `ttl` seconds.
    fn granted(&self, ttl: i64) -> Duration {
        Duration::from_secs(ttl.max(0) as u64).saturating_sub(self.margin)
    }

    /// One keep-alive: `Ok(true)` renewed (the deadline moved), `Ok(false)` the lease is gone.
    async fn keep_alive(&self, client: &mut Client, held: &mut Held) -> Result<bool, etcd_client::Error> {
        if held.keeper.is_none() {
            held.keeper = Some(client.lease_keep_alive(held.id).await?);
        }
        let Some((keeper, stream)) = held.keeper.as_mut() else { return Ok(true) };
        let sent = Instant::now();
        let answer = tokio::time::timeout(self.ttl / 4, async {
            keeper.keep_alive().await?;
            stream.message().await
        })
        .await;
        match answer {
            Ok(Ok(Some(r))) if r.ttl() > 0 => {
                held.until = held.until.max(sent + self.granted(r.ttl()));
                Ok(true)
            }
            Ok(Ok(Some(_))) => Ok(false),
            Ok(Ok(None)) => {
                held.keeper = None;
                Ok(true)
            }
            Ok(Err(e)) => {
                held.keeper = None;
                Err(e)
            }
            Err(_) => {
                held.keeper = None;
                Ok(true)
            }
        }
    }

    /// Puts the leader key if nobody holds it: `Ok(None)` won, `Ok(Some(leader))` someone leads.
    async fn campaign(
        &self,
        client: &mut Client,
        identity: &str,
        lease: i64,
    ) -> Result<Option<Option<String>>, etcd_client::Error> {
        let key = self.url.leader_key();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), identity, Some(PutOptions::new().with_lease(lease)))])
            .or_else([TxnOp::get(key, None)]);
        let answer = tokio::time::timeout(self.ttl / 4, client.txn(txn))
            .await
            .map_err(|_| etcd_client::Error::InvalidArgs("campaign timed out".into()))??;
        if answer.succeeded() {
            return Ok(None);
        }
        let leader = answer.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().and_then(|kv| kv.value_str().ok().map(str::to_owned)),
            _ => None,
        });
        // The value is `ADDR LEASE`: the address is what a standby tells.
        Ok(Some(leader.and_then(|v| v.split_whitespace().next().map(str::to_owned))))
    }
}
