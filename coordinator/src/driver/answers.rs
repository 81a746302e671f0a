//! What each answer to a control call does to the core.

use std::time::Instant;

use shardline_protocol::{ControlResponse, ShardId};
use tracing::debug;

use super::{Broken, Core, Effect};
use crate::meta::ReplicaSet;

/// What a call was made for.
#[derive(Debug, Clone)]
pub(super) enum Purpose {
    /// A heartbeat, sent at `asked`.
    Heartbeat { node: String, asked: Instant, seq: u64 },
    /// An election query at `term`.
    Vote { shard: ShardId, term: u64, node: String },
    /// An election's winner told to lead at `term`.
    Lead { shard: ShardId, term: u64, node: String },
    /// A replica told to follow; once it does, it serves reads after reaching `target`
    /// (`None`: its catch-up target stays as it is).
    Follow { shard: ShardId, node: String, target: Option<u64> },
    /// A replica created on `node`.
    Configure { shard: ShardId, node: String },
    /// The primary told replica set `set`.
    Repoint { shard: ShardId, node: String, set: ReplicaSet },
    /// A replica told to stop serving (best effort).
    Drop,
    /// A primary told to hand off (a planned switchover) at `term`.
    Handoff { shard: ShardId, term: u64 },
}

impl Core {
    /// The answer to call `id`: `None` when the call failed or timed out. Answers to calls
    /// the core no longer waits for (timed out already, or duplicated) change nothing.
    pub fn on_answer(&mut self, id: u64, answer: Option<ControlResponse>, now: Instant) -> Vec<Effect> {
        let Some(pending) = self.calls.remove(&id) else { return Vec::new() };
        let ok = matches!(answer, Some(ControlResponse::Ok));
        match pending.purpose {
            Purpose::Heartbeat { node, asked, seq } => {
                if let Some(ControlResponse::Status(status)) = answer {
                    self.heard(node, asked, seq, status, now);
                }
                self.advance_switches(now)
            }
            Purpose::Vote { shard, term, node } => {
                let answer = match answer {
                    // Before scenario 2's fix: a replica that lost entries still counted.
                    Some(ControlResponse::Vote(mut v)) if self.broken == Some(Broken::DamagedVotes) => {
                        v.whole = true;
                        Some(ControlResponse::Vote(v))
                    }
                    other => other,
                };
                self.on_vote(shard, term, &node, answer, now)
            }
            Purpose::Lead { shard, term, node } => self.on_lead(shard, term, &node, ok, now),
            Purpose::Follow { shard, node, target } => {
                if ok {
                    self.roles.insert((shard, node.clone()), now);
                    if let Some(target) = target {
                        let _ = self.save("catch-up target", |m| {
                            if let Some(s) = m.shards.get_mut(&shard).filter(|s| s.holds(&node)) {
                                s.catch_up.insert(node.clone(), target);
                            }
                        });
                    }
                } else {
                    debug!(%shard, node, "follow failed");
                }
                Vec::new()
            }
            Purpose::Configure { shard, node } => self.on_configured(shard, &node, ok, now),
            Purpose::Repoint { shard, node, set } => {
                if ok {
                    self.roles.insert((shard, node), now);
                    self.told.insert(shard, set);
                } else {
                    debug!(%shard, node, "the primary was not told its replica set");
                }
                Vec::new()
            }
            Purpose::Drop => Vec::new(),
            Purpose::Handoff { shard, term } => {
                self.on_handoff(shard, term, answer, now);
                Vec::new()
            }
        }
    }

    fn heard(&mut self, node: String, asked: Instant, seq: u64, status: shardline_protocol::NodeStatus, now: Instant) {
        if !self.meta.servers.contains_key(&node) {
            return;
        }
        if let Some(beat) = self.beats.get_mut(&node) {
            beat.1 = Some((seq, now));
        }
        self.detector.heard(&node, now);
        self.status.insert(node.clone(), status);
        self.asked.insert(node, asked);
    }
}
