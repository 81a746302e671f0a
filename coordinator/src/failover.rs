//! Elections from an admin operation's side: start one through the core (which persists
//! the term, queries the voters, waits out leases and tells everyone their role) and
//! wait until it has ended.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shardline_protocol::{ErrorCode, ShardId};

use crate::cluster::Coordinator;

/// How often a waiting admin operation looks at the core again.
pub(crate) const POLL: Duration = Duration::from_millis(20);

pub use shardline_protocol::quorum::majority;

impl Coordinator {
    /// Elects a primary for `shard` at a new term (or joins the election under way) and
    /// waits for the outcome. Returns the new primary.
    pub(crate) async fn elect(self: &Arc<Self>, shard: ShardId) -> Result<String, ErrorCode> {
        self.elect_preferring(shard, None).await
    }

    /// [`Coordinator::elect`], where `prefer` wins among the longest logs (a switchover).
    pub(crate) async fn elect_preferring(
        self: &Arc<Self>,
        shard: ShardId,
        prefer: Option<String>,
    ) -> Result<String, ErrorCode> {
        let effects = self.core().elect_preferring(shard, prefer, Instant::now());
        self.carry_out(effects);
        while self.core().electing(shard) {
            tokio::time::sleep(POLL).await;
        }
        self.publish();
        let core = self.core();
        let s = core.meta().shards.get(&shard).ok_or(ErrorCode::UnknownShard { shard })?;
        s.primary.clone().ok_or_else(|| ErrorCode::Unavailable {
            shard,
            reason: "the election chose no primary (the log says why); the reconcile loop elects again".into(),
        })
    }
}
