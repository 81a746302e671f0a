//! Appends on a simulated node: held for a moment, then taken by each shard as one group,
//! as a node's shard task takes the appends that queued up while it was busy.

use shardline_protocol::{ErrorCode, PeerResponse, ShardId};
use shardline_storage_node::replica::{AppendRequest, Link};

use super::SimNode;
use crate::world::{Addr, Event, Msg, Nanos, World};

/// How long appends may wait for the ones arriving after them (a shard task busy with
/// the group before, in the node), at most.
const APPEND_GATHER: Nanos = 300_000;

impl SimNode {
    /// An append waits for its shard task, with those arriving in the next moments.
    pub(super) fn queue_append(
        &mut self,
        world: &mut World,
        from: Addr,
        link: Link,
        shard: ShardId,
        append: AppendRequest,
    ) {
        self.pending_appends.push((from, link, shard, append));
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            let gather = world.rng.range(0, APPEND_GATHER + 1);
            world.after(gather, Event::FlushAppends(self.index));
        }
    }

    /// Each shard's queued appends go to its replica as one group (one fsync), as a node's
    /// shard task takes what queued while it was busy; then the answers leave.
    pub fn flush_appends(&mut self, world: &mut World) {
        self.flush_scheduled = false;
        if !self.up || self.paused {
            // Gone with a crash; or kept until the node wakes.
            return;
        }
        let now = self.local(world.now);
        let mut pending = std::mem::take(&mut self.pending_appends);
        let mut answers = Vec::new();
        while let Some(&(_, _, shard, _)) = pending.first() {
            let (group, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|p| p.2 == shard);
            pending = rest;
            let (senders, requests): (Vec<_>, Vec<_>) = group.into_iter().map(|(f, l, _, a)| ((f, l), a)).unzip();
            let responses = match self.replicas.get_mut(&shard) {
                Some(r) => r.receive_appends(requests, now),
                None => senders.iter().map(|_| PeerResponse::Error(ErrorCode::UnknownShard { shard })).collect(),
            };
            answers.extend(senders.into_iter().zip(responses).map(|((f, l), r)| (f, l, shard, r)));
        }
        if self.died_at_failpoint(world) {
            return;
        }
        for (to, link, shard, response) in answers {
            world.send(Addr::Node(self.index), to, Msg::PeerAnswer { link, shard, response });
        }
        self.finish_step(world);
    }
}
