//! A planned switchover from an admin operation's side: start it in the core (which
//! hands off, waits for the target to catch up and elects it; see
//! [`driver::switch`](crate::driver::switch)) and wait for its outcome.

use std::sync::Arc;
use std::time::Instant;

use shardline_protocol::{ErrorCode, ShardId, Topology};

use crate::cluster::Coordinator;
use crate::failover::POLL;

impl Coordinator {
    /// Moves `shard`'s primary to `to` (or the most caught-up other voter) and returns the
    /// new topology.
    pub(crate) async fn switchover(
        self: &Arc<Self>,
        shard: ShardId,
        to: Option<String>,
    ) -> Result<Topology, ErrorCode> {
        if let Some(to) = &to {
            crate::plan::check_name(to)?;
        }
        let _admin = self.admin.lock().await;
        let effects = self.core().switchover(shard, to.as_deref(), Instant::now())?;
        self.carry_out(effects);
        // The core moves on with heartbeat answers and reconcile rounds; bounded by the
        // handoff (catch-up gives up halfway) plus an election.
        let result = loop {
            if let Some(result) = self.core().switch_result(shard) {
                break result;
            }
            tokio::time::sleep(POLL).await;
        };
        self.publish();
        result.map(|_| self.topology())
    }
}
