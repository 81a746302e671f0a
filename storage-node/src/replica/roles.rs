//! Terms and roles: the election query, following, leading, leases.
//!
//! Every role change carries a term: an older one is refused, a newer one is adopted
//! durably (in the table) before the replica acts in it.

use std::time::Duration;

use bytes::Bytes;
use shardline_protocol::{ControlResponse, ErrorCode, LogEntry, Operation, ServerAddr, Vote};
use tracing::{info, warn};

use super::primary::PrimaryState;
use super::replication::Follower;
use super::{Replica, Role, Time};
use crate::disk::Disk;
use crate::error::internal;
use crate::store::TableStore;

impl<D: Disk, T: TableStore> Replica<D, T> {
    /// The election query: adopt `term` durably, then report the log's last position.
    pub fn election_query(&mut self, now: Time, term: u64) -> ControlResponse {
        if term < self.term {
            return ControlResponse::Error(ErrorCode::StaleTerm { current: self.term, got: term });
        }
        if term > self.term {
            if let Err(e) = self.adopt_term(term) {
                return ControlResponse::Error(internal(e));
            }
            self.step_down(Role::Idle);
        }
        let last = self.wal.last();
        let electable = self.electable();
        // A primary of this term counts its first lease from here: the coordinator gets
        // this answer only after we sent it, so it knows when such a lease ends.
        self.voted = Some((term, now, last));
        info!(term, last_index = last.index, last_term = last.term, electable, "answered election query");
        let whole = self.fault.is_none();
        ControlResponse::Vote(Vote { shard: self.spec.id, term: self.term, last, electable, whole })
    }

    /// Follows `primary` at `term`.
    pub fn become_follower(&mut self, term: u64, primary: ServerAddr) -> ControlResponse {
        if term < self.term {
            return ControlResponse::Error(ErrorCode::StaleTerm { current: self.term, got: term });
        }
        if term > self.term {
            if let Err(e) = self.adopt_term(term) {
                return ControlResponse::Error(internal(e));
            }
        } else if matches!(self.role, Role::Primary(_)) {
            return ControlResponse::Error(ErrorCode::BadRequest(format!(
                "this replica leads term {term}; follow at a newer term"
            )));
        }
        info!(term, primary = %primary.name, "following");
        self.step_down(Role::Follower { primary });
        ControlResponse::Ok
    }

    /// A lease granted for `term`, counted from `since` (when this node handled the
    /// heartbeat the grant refers to, never when it read the grant): a primary of that term
    /// may take writes and serve primary reads until `since + lease_ms`.
    pub fn renew_lease(&mut self, since: Time, lease_ms: u64, term: u64) {
        if term == self.term && matches!(self.role, Role::Primary(_)) {
            let until = since + Duration::from_millis(lease_ms);
            self.lease_until = Some(self.lease_until.map_or(until, |t| t.max(until)));
        }
    }

    /// A planned switchover: as primary of `term`, refuse new writes for `for_ms` (the
    /// followers catch up meanwhile; the election that follows deposes this replica).
    pub fn handoff(&mut self, now: Time, term: u64, for_ms: u64) -> ControlResponse {
        let shard = self.spec.id;
        match &mut self.role {
            Role::Primary(p) if term == self.term => {
                info!(term, for_ms, "handing off: refusing new writes while a follower catches up");
                p.handoff_until = Some(now + Duration::from_millis(for_ms));
                ControlResponse::Ok
            }
            _ => ControlResponse::Error(ErrorCode::NotPrimary { shard, term: self.term, primary: None }),
        }
    }

    /// A follower answered with a newer term: this primary is deposed.
    pub(super) fn on_higher_term(&mut self, term: u64) {
        if term > self.term {
            warn!(term, "a follower knows a newer term: stepping down");
            if self.adopt_term(term).is_ok() {
                self.step_down(Role::Idle);
            }
        }
    }

    /// Takes the primary role at `term` and commits a no-op in it; writes commit on a
    /// majority of it and `followers`, while `learners` get the log without counting.
    pub fn become_primary(
        &mut self,
        now: Time,
        term: u64,
        followers: Vec<ServerAddr>,
        learners: Vec<ServerAddr>,
        lease_ms: u64,
    ) -> ControlResponse {
        if term < self.term {
            return ControlResponse::Error(ErrorCode::StaleTerm { current: self.term, got: term });
        }
        if let Some((_, why)) = &self.fault {
            return ControlResponse::Error(ErrorCode::Unavailable { shard: self.spec.id, reason: why.clone() });
        }
        if self.installing {
            let reason = "installing a snapshot".into();
            return ControlResponse::Error(ErrorCode::Unavailable { shard: self.spec.id, reason });
        }
        if term == self.term && matches!(self.role, Role::Primary(_)) {
            // The same term with another follower set: the lease is not touched.
            self.change_followers(now, followers, learners);
            self.advance_commit(now);
            return ControlResponse::Ok;
        }
        // The coordinator chose this replica on the vote it gave for this term: lead only
        // on that vote, from this run of the process, with the log it voted with (a restart
        // or a failed write in between may have cut it).
        let lease_until = match self.voted {
            Some((t, at, voted_last)) if t == term && self.wal.last() >= voted_last => {
                // The first lease counts from the vote; a BecomePrimary read late (after a
                // pause) gets an expired one.
                at + Duration::from_millis(lease_ms)
            }
            _ => {
                let reason = format!("this replica's log is not the one it voted with at term {term}");
                return ControlResponse::Error(ErrorCode::Unavailable { shard: self.spec.id, reason });
            }
        };
        if term > self.term {
            if let Err(e) = self.adopt_term(term) {
                return ControlResponse::Error(internal(e));
            }
        }
        self.step_down(Role::Idle);

        // Entries logged but not applied (from earlier terms) commit with our no-op:
        // writes validated from now on must see their effects, and retries must find them.
        let mut inherited = std::collections::HashMap::new();
        let pending: Vec<Bytes> = {
            let mem = self.wal.mem();
            (self.applied.index + 1..=mem.last().index).filter_map(|i| mem.record(i)).collect()
        };
        for record in pending {
            match LogEntry::decode(&record) {
                Ok(e) => {
                    self.overlay.record(&e.op, e.index);
                    if let Some(client_seq) = e.op.client_seq() {
                        inherited.insert(client_seq, e.index);
                    }
                }
                Err(e) => return ControlResponse::Error(internal(e)),
            }
        }
        let last = self.wal.last().index;
        let epoch = self.next_epoch();
        let set = slots(followers, learners, |addr, voter| Follower::new(addr, voter, last + 1, 0));
        info!(term, last, "leading");
        self.role = Role::Primary(Box::new(PrimaryState::new(epoch, set, inherited, last)));
        self.lease_until = Some(lease_until);
        let noop = LogEntry { term, index: last + 1, op: Operation::Noop };
        match noop.encode() {
            Ok(record) => {
                self.log(now, vec![(term, record)]);
                self.sync_log(now);
            }
            Err(e) => return ControlResponse::Error(internal(e)),
        }
        self.advance_commit(now);
        ControlResponse::Ok
    }

    /// A new replica set at the same term (a replica added, promoted or removed): keep the
    /// log, the waiters and what is known of followers that stay.
    fn change_followers(&mut self, now: Time, followers: Vec<ServerAddr>, learners: Vec<ServerAddr>) {
        let epoch = self.next_epoch();
        let last = self.wal.last().index;
        let Role::Primary(p) = &mut self.role else { return };
        let wanted = followers.iter().map(|a| (a, true)).chain(learners.iter().map(|a| (a, false)));
        if p.followers.iter().map(|f| (&f.addr, f.voter)).eq(wanted) {
            return;
        }
        // What is known of followers that stay is kept only as a start: each answer resets
        // it to what the follower really holds.
        let known: Vec<(String, u64)> = p.followers.iter().map(|f| (f.addr.name.clone(), f.durable)).collect();
        p.followers = slots(followers, learners, |addr, voter| {
            let durable = known.iter().find(|(name, _)| *name == addr.name).map_or(0, |k| k.1);
            Follower::new(addr, voter, last + 1, durable)
        });
        p.epoch = epoch;
        // Entries up to here may have committed on a majority of the old set only.
        p.settle_from(last);
        info!(
            term = self.term,
            followers = p.voters(),
            learners = p.followers.len() - p.voters(),
            "replica set changed"
        );
        self.pump(now);
    }

    fn next_epoch(&mut self) -> (u64, u64, u64) {
        self.epochs += 1;
        (self.cfg.incarnation, self.term, self.epochs)
    }
}

/// The primary's follower slots: voters first, then learners.
fn slots(
    followers: Vec<ServerAddr>,
    learners: Vec<ServerAddr>,
    new: impl Fn(ServerAddr, bool) -> Follower,
) -> Vec<Follower> {
    let voters = followers.into_iter().map(|a| (a, true));
    voters.chain(learners.into_iter().map(|a| (a, false))).map(|(a, voter)| new(a, voter)).collect()
}
