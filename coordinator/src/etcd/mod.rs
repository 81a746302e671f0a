//! The coordinator's metadata in etcd, and the election of one leading coordinator.
//!
//! - [`EtcdMeta`]: a [`MetaSink`] whose every save is one etcd transaction: put the
//!   configuration if its key's mod revision is still the one this coordinator last read
//!   or wrote *and* the leader key still holds this coordinator's identity. So two
//!   coordinators never hand out the same term or overwrite each other's change, and a
//!   deposed one changes nothing.
//! - [`Elector`] (`elector`): campaigns for the leader key under an etcd lease, keeps the
//!   lease alive, renews [`crate::leadership::Leadership`], and makes the coordinator
//!   take over or stand down.
//!
//! Keys, under the prefix of `--meta etcd://HOST:PORT,.../PREFIX` (default `shardline`):
//!
//! | key | value |
//! |---|---|
//! | `PREFIX/meta` | the [`ClusterMeta`], postcard-encoded (as redb keeps it) |
//! | `PREFIX/leader` | `ADDR ID` of the leading coordinator, attached to its lease |

mod elector;

use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, Txn, TxnOp, TxnResponse};
use tracing::warn;

pub use elector::Elector;

use crate::driver::MetaSink;
use crate::meta::{ClusterMeta, MetaError};

/// Where the etcd cluster is and which keys are ours: `etcd://HOST:PORT,HOST:PORT[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdUrl {
    /// `http://HOST:PORT` of each member.
    pub endpoints: Vec<String>,
    /// The key prefix (no trailing slash).
    pub prefix: String,
}

impl EtcdUrl {
    /// Parses `etcd://HOST:PORT,HOST:PORT[/PREFIX]`.
    pub fn parse(url: &str) -> Result<EtcdUrl, String> {
        let rest = url.strip_prefix("etcd://").ok_or_else(|| format!("{url}: want etcd://HOST:PORT,..."))?;
        let (hosts, prefix) = rest.split_once('/').unwrap_or((rest, "shardline"));
        let endpoints: Vec<String> =
            hosts.split(',').filter(|h| !h.trim().is_empty()).map(|h| format!("http://{}", h.trim())).collect();
        if endpoints.is_empty() {
            return Err(format!("{url}: no etcd member given"));
        }
        let prefix = prefix.trim_end_matches('/');
        let prefix = if prefix.is_empty() { "shardline" } else { prefix };
        Ok(EtcdUrl { endpoints, prefix: prefix.to_owned() })
    }

    /// The key holding the configuration.
    pub fn meta_key(&self) -> String {
        format!("{}/meta", self.prefix)
    }

    /// The key the leader holds under its lease.
    pub fn leader_key(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    /// A client of the cluster; every call times out after `timeout`.
    pub async fn connect(&self, timeout: Duration) -> Result<Client, etcd_client::Error> {
        let options = ConnectOptions::new().with_timeout(timeout).with_connect_timeout(timeout);
        Client::connect(&self.endpoints, Some(options)).await
    }
}

/// The configuration key's value and mod revision, if it exists.
type Stored = Option<(Vec<u8>, i64)>;

/// What the etcd worker thread is asked.
enum Job {
    /// Read the configuration key.
    Get(mpsc::Sender<Result<Stored, MetaError>>),
    /// Run a transaction.
    Txn(Txn, mpsc::Sender<Result<TxnResponse, MetaError>>),
}

/// The configuration in etcd, saved by compare-and-swap.
///
/// [`MetaSink`] is synchronous (the core saves under its lock, before acting), so the etcd
/// calls run on a thread of their own with a single-threaded runtime; a save waits for its
/// answer, bounded by the call timeout.
#[derive(Debug)]
pub struct EtcdMeta {
    url: EtcdUrl,
    jobs: mpsc::Sender<Job>,
    /// The mod revision of the configuration key this coordinator last read or wrote
    /// (0: the key did not exist); `None` after a save whose outcome is unknown.
    revision: Mutex<Option<i64>>,
    /// The leader key's value while this coordinator leads; saves require it.
    fence: Mutex<Option<String>>,
    timeout: Duration,
}

impl EtcdMeta {
    /// Starts the worker thread for `url`; calls time out after `timeout`. Connecting is
    /// lazy: an unreachable cluster fails the calls, not this.
    pub fn start(url: EtcdUrl, timeout: Duration) -> Result<EtcdMeta, MetaError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let worker_url = url.clone();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(MetaError::Io)?;
        std::thread::Builder::new()
            .name("etcd-meta".into())
            .spawn(move || runtime.block_on(worker(worker_url, timeout, rx)))
            .map_err(MetaError::Io)?;
        Ok(EtcdMeta { url, jobs: tx, revision: Mutex::new(Some(0)), fence: Mutex::new(None), timeout })
    }

    /// Saves are allowed only while the leader key holds `fence` (`None`: never).
    pub fn fence(&self, fence: Option<String>) {
        *self.fence.lock().expect("fence lock") = fence;
    }

    fn send(&self, job: Job) -> Result<(), MetaError> {
        self.jobs.send(job).map_err(|_| MetaError::Unavailable("the etcd worker has stopped".into()))
    }

    /// The configuration key's value and mod revision, if it exists.
    fn get(&self) -> Result<Stored, MetaError> {
        let (tx, rx) = mpsc::channel();
        self.send(Job::Get(tx))?;
        self.wait(rx)
    }

    fn wait<T>(&self, rx: mpsc::Receiver<Result<T, MetaError>>) -> Result<T, MetaError> {
        // The worker bounds each call by the timeout; this bound only covers a stuck worker.
        rx.recv_timeout(self.timeout * 2)
            .map_err(|_| MetaError::Unavailable(format!("no answer from etcd within {:?}", self.timeout * 2)))?
    }
}

impl MetaSink for EtcdMeta {
    fn save(&self, meta: &ClusterMeta) -> Result<(), MetaError> {
        let Some(fence) = self.fence.lock().expect("fence lock").clone() else {
            return Err(MetaError::Conflict("this coordinator does not lead".into()));
        };
        let bytes = postcard::to_allocvec(meta).map_err(|e| MetaError::Decode(e.to_string()))?;
        let mut held = self.revision.lock().expect("revision lock");
        let revision = match *held {
            Some(r) => r,
            // The last save may or may not have landed. Only the holder of the leader key
            // writes (the transaction checks it), so whatever is there now is this
            // coordinator's own: the core did not act on that save, and overwrites it.
            None => self.get()?.map_or(0, |(_, r)| r),
        };
        let (meta_key, leader_key) = (self.url.meta_key(), self.url.leader_key());
        let txn = Txn::new()
            .when([
                Compare::mod_revision(meta_key.clone(), CompareOp::Equal, revision),
                Compare::value(leader_key, CompareOp::Equal, fence),
            ])
            .and_then([TxnOp::put(meta_key, bytes, None)]);
        let (tx, rx) = mpsc::channel();
        self.send(Job::Txn(txn, tx))?;
        *held = None;
        let answer = self.wait(rx)?;
        if !answer.succeeded() {
            warn!(revision, "metadata compare-and-swap failed: changed elsewhere, or no longer the leader");
            return Err(MetaError::Conflict(format!("the configuration is no longer at revision {revision}")));
        }
        *held = answer.header().map(|h| h.revision());
        Ok(())
    }

    fn load(&self) -> Result<ClusterMeta, MetaError> {
        let (meta, revision) = match self.get()? {
            None => (ClusterMeta::default(), 0),
            Some((bytes, revision)) => {
                let meta = postcard::from_bytes(&bytes).map_err(|e| MetaError::Decode(e.to_string()))?;
                (meta, revision)
            }
        };
        *self.revision.lock().expect("revision lock") = Some(revision);
        Ok(meta)
    }
}

/// The etcd worker: one client, reconnected after a failure, each call bounded by `timeout`.
async fn worker(url: EtcdUrl, timeout: Duration, jobs: mpsc::Receiver<Job>) {
    let mut client: Option<Client> = None;
    // The channel closes when the store is dropped; blocking here is this thread's job.
    while let Ok(job) = jobs.recv() {
        if client.is_none() {
            client = tokio::time::timeout(timeout, url.connect(timeout)).await.ok().and_then(Result::ok);
        }
        let Some(c) = client.as_mut() else {
            let e = MetaError::Unavailable(format!("cannot reach etcd at {:?}", url.endpoints));
            match job {
                Job::Get(reply) => drop(reply.send(Err(e))),
                Job::Txn(_, reply) => drop(reply.send(Err(e))),
            }
            continue;
        };
        match job {
            Job::Get(reply) => {
                let got = tokio::time::timeout(timeout, c.get(url.meta_key(), None)).await;
                let got = match got {
                    Ok(Ok(r)) => Ok(r.kvs().first().map(|kv| (kv.value().to_vec(), kv.mod_revision()))),
                    Ok(Err(e)) => Err(MetaError::Etcd(e)),
                    Err(_) => Err(MetaError::Unavailable(format!("etcd get timed out after {timeout:?}"))),
                };
                if got.is_err() {
                    client = None;
                }
                let _ = reply.send(got);
            }
            Job::Txn(txn, reply) => {
                let done = match tokio::time::timeout(timeout, c.txn(txn)).await {
                    Ok(Ok(r)) => Ok(r),
                    Ok(Err(e)) => Err(MetaError::Etcd(e)),
                    Err(_) => Err(MetaError::Unavailable(format!("etcd transaction timed out after {timeout:?}"))),
                };
                if done.is_err() {
                    client = None;
                }
                let _ = reply.send(done);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_members_and_prefix() {
        let url = EtcdUrl::parse("etcd://127.0.0.1:2379,127.0.0.1:2479/prod").unwrap();
        assert_eq!(url.endpoints, ["http://127.0.0.1:2379", "http://127.0.0.1:2479"]);
        assert_eq!(url.meta_key(), "prod/meta");
        assert_eq!(EtcdUrl::parse("etcd://h:1").unwrap().leader_key(), "shardline/leader");
        assert!(EtcdUrl::parse("http://h:1").is_err());
        assert!(EtcdUrl::parse("etcd:///x").is_err());
    }
}
