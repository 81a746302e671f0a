//! Whether a replica may serve a read at the consistency level asked, as pure functions
//! of what the replica publishes and the time passed in.
//!
//! - `any`: the replica is serving (its table holds only committed entries, and it is not
//!   catching up after a restart or repairing its log).
//! - `primary`: the primary, under its lease, once its term's no-op committed.
//! - `session`: the table has applied at least the client's position for the shard
//!   ([`session_gate`], checked against the applied index of the very view the rows are
//!   read from, so the position answered is exactly what was read).
//! - `bounded { max_lag_ms, max_lag_entries }`: the primary under its lease and ready, or
//!   a follower holding a recent [`Contact`]:
//!
//!   > At my own time `contact.at` I answered the primary; the primary received that
//!   > answer and then, holding its lease and ready, sent me its commit index `C`.
//!   > So every write any primary acknowledged before `contact.at` is at or below `C`.
//!   > If `now - contact.at <= max_lag_ms` and `applied + max_lag_entries >= C`, the read
//!   > misses no write acknowledged more than `max_lag_ms` ago (with `max_lag_entries`
//!   > 0), and at most `max_lag_entries` entries the primary had committed then.
//!
//!   It holds whatever the network's delays and pauses, because the follower's own clock
//!   measures both ends of the interval; its one assumption is that the follower's clock
//!   runs at the right rate (drift of parts per million stretches the bound by as much).
//!   Only the lease makes "any primary" true: leases of a shard's primaries never overlap,
//!   and a primary acknowledges writes only under its lease, so no other primary
//!   acknowledged anything the sender's `C` does not hold.

use std::time::Duration;

use shardline_protocol::{Consistency, ErrorCode, ReplicaRole, ServerAddr, ShardId, ShardState};

use super::Time;

/// A follower's proof of recent contact with a leased primary (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contact {
    /// The follower's own time when it sent the answer the primary echoed.
    pub at: Time,
    /// The primary's commit index in the append that echoed it.
    pub commit: u64,
}

/// What a read gate needs to know of a replica, as it publishes it.
#[derive(Debug, Clone, Copy)]
pub struct ReadFacts<'a> {
    /// The replica's state (role, term, applied index, whether it serves).
    pub state: &'a ShardState,
    /// The primary it knows of, for `NotPrimary` hints.
    pub primary_hint: Option<&'a ServerAddr>,
    /// Until when it may serve as primary, if it leads.
    pub lease_until: Option<Time>,
    /// It leads and its term's no-op committed.
    pub ready: bool,
    /// Its latest proof of contact with a leased primary (followers).
    pub contact: Option<Contact>,
    /// Test-only regression: bounded reads served like `any` (the simulator's self-test).
    pub bounded_unchecked: bool,
    /// Test-only regression: a contact's age compared in whole milliseconds.
    pub bound_in_whole_ms: bool,
    /// At a primary, the applied index the read needs: the commit index it found when it
    /// first came (and then waited for), or, when `None`, the commit index now.
    pub applied_floor: Option<u64>,
}

/// Whether a read at `level` may be served at `now`. A session's floor is checked after
/// the read, against the view read ([`session_gate`]).
pub fn read_gate(facts: &ReadFacts<'_>, now: Time, level: &Consistency) -> Result<(), ErrorCode> {
    let state = facts.state;
    let shard = state.spec.id;
    if !state.serving {
        let reason = state.fault.clone().unwrap_or_else(|| "catching up".into());
        return Err(ErrorCode::Unavailable { shard, reason });
    }
    if state.role == ReplicaRole::Primary && state.applied_index < facts.applied_floor.unwrap_or(state.commit_index) {
        // A primary acknowledges at commit and applies in batches: whatever the level, it
        // serves from a table that has everything it had acknowledged when the read came
        // (published before any acknowledgement leaves), so the read waits for that.
        let why = format!("applied {}, commit {}: applying", state.applied_index, state.commit_index);
        return Err(behind(shard, why));
    }
    match level {
        Consistency::Any | Consistency::Session { .. } => Ok(()),
        Consistency::Primary => primary_gate(facts, now),
        Consistency::Bounded { .. } if facts.bounded_unchecked => Ok(()),
        Consistency::Bounded { max_lag_ms, max_lag_entries } => {
            if state.role == ReplicaRole::Primary {
                return primary_gate(facts, now).map_err(|_| behind(shard, "a primary without its lease".into()));
            }
            let mut max_lag = Duration::from_millis(*max_lag_ms);
            if facts.bound_in_whole_ms {
                max_lag += Duration::from_nanos(999_999);
            }
            bounded_gate(shard, facts.contact, state.applied_index, now, max_lag, *max_lag_entries)
        }
    }
}

fn primary_gate(facts: &ReadFacts<'_>, now: Time) -> Result<(), ErrorCode> {
    let state = facts.state;
    let shard = state.spec.id;
    if state.role != ReplicaRole::Primary {
        return Err(ErrorCode::NotPrimary { shard, term: state.term, primary: facts.primary_hint.cloned() });
    }
    if facts.lease_until.is_none_or(|t| now >= t) {
        return Err(ErrorCode::LeaseExpired { shard });
    }
    if !facts.ready {
        return Err(ErrorCode::Unavailable { shard, reason: "new primary not ready".into() });
    }
    Ok(())
}

/// The follower's rule for a bounded read (see the module doc).
pub fn bounded_gate(
    shard: ShardId,
    contact: Option<Contact>,
    applied: u64,
    now: Time,
    max_lag: Duration,
    max_lag_entries: u64,
) -> Result<(), ErrorCode> {
    let Some(contact) = contact else {
        return Err(behind(shard, "no proven contact with a leased primary".into()));
    };
    let age = now.saturating_sub(contact.at);
    // Compared whole: in milliseconds, 0.9 ms would pass a bound of 0 ms.
    if age > max_lag || contact.at > now {
        return Err(behind(shard, format!("last proven contact {age:?} ago, over {max_lag:?}")));
    }
    if applied.saturating_add(max_lag_entries) < contact.commit {
        return Err(behind(
            shard,
            format!("applied {applied}, primary's commit {} then, over {max_lag_entries} entries", contact.commit),
        ));
    }
    Ok(())
}

/// Whether a session read may be answered from a view that has applied `applied`.
pub fn session_gate(shard: ShardId, level: &Consistency, applied: u64) -> Result<(), ErrorCode> {
    let floor = level.floor(shard);
    if applied < floor {
        return Err(behind(shard, format!("applied {applied}, session needs {floor}")));
    }
    Ok(())
}

fn behind(shard: ShardId, reason: String) -> ErrorCode {
    ErrorCode::Behind { shard, reason }
}

#[cfg(test)]
mod tests {
    use shardline_protocol::{LogPosition, ShardPosition, ShardSpec};

    use super::*;

    const SHARD: ShardId = ShardId(1);

    fn state(role: ReplicaRole, applied: u64, serving: bool) -> ShardState {
        ShardState {
            spec: ShardSpec { id: SHARD, low: 0, size: 100 },
            role,
            term: 3,
            last: LogPosition { term: 3, index: applied },
            commit_index: applied,
            applied_index: applied,
            serving,
            fault: None,
            settled: false,
            copies: Vec::new(),
        }
    }

    fn facts(state: &ShardState, contact: Option<Contact>) -> ReadFacts<'_> {
        ReadFacts {
            state,
            primary_hint: None,
            lease_until: Some(Duration::from_secs(10)),
            ready: true,
            contact,
            bounded_unchecked: false,
            bound_in_whole_ms: false,
            applied_floor: None,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_follower_proves_a_bound_only_with_a_fresh_contact_it_has_applied() {
        let follower = state(ReplicaRole::Follower, 40, true);
        let contact = Some(Contact { at: ms(1_000), commit: 40 });
        let f = facts(&follower, contact);
        assert_eq!(read_gate(&f, ms(1_090), &Consistency::bounded_ms(100)), Ok(()));
        assert!(matches!(read_gate(&f, ms(1_101), &Consistency::bounded_ms(100)), Err(ErrorCode::Behind { .. })));
        // A commit index it has not applied yet proves nothing about time...
        let ahead = facts(&follower, Some(Contact { at: ms(1_000), commit: 45 }));
        assert!(read_gate(&ahead, ms(1_010), &Consistency::bounded_ms(100)).is_err());
        // ...but is within an entries bound of 5, not of 4.
        assert_eq!(read_gate(&ahead, ms(1_010), &Consistency::bounded_entries(5)), Ok(()));
        assert!(read_gate(&ahead, ms(1_010), &Consistency::bounded_entries(4)).is_err());
        // Never heard from a leased primary: nothing to prove with.
        assert!(read_gate(&facts(&follower, None), ms(1), &Consistency::bounded_ms(u64::MAX)).is_err());
        // A stamp from the future (another run's clock) proves nothing either.
        assert!(bounded_gate(SHARD, Some(Contact { at: ms(5), commit: 0 }), 40, ms(4), ms(100), 0).is_err());
        // Ages are compared whole, not in truncated milliseconds (simulator seed 16019633:
        // a contact 0.5 ms old passed a bound of 0 ms and missed a write acknowledged since).
        let half_ms_later = ms(1_000) + Duration::from_micros(500);
        assert!(bounded_gate(SHARD, contact, 40, half_ms_later, ms(0), 0).is_err());
        assert_eq!(bounded_gate(SHARD, contact, 40, ms(1_000), ms(0), 0), Ok(()));
    }

    #[test]
    fn the_primary_serves_bounded_reads_only_under_its_lease() {
        let primary = state(ReplicaRole::Primary, 40, true);
        let f = facts(&primary, None);
        assert_eq!(read_gate(&f, ms(1), &Consistency::bounded_ms(0)), Ok(()));
        assert!(matches!(read_gate(&f, ms(10_000), &Consistency::bounded_ms(0)), Err(ErrorCode::Behind { .. })));
        assert!(matches!(read_gate(&f, ms(10_000), &Consistency::Primary), Err(ErrorCode::LeaseExpired { .. })));
    }

    #[test]
    fn sessions_need_their_position_applied_and_any_needs_a_serving_replica() {
        let at = |index| Consistency::Session { positions: vec![ShardPosition { shard: SHARD, term: 2, index }] };
        assert_eq!(session_gate(SHARD, &at(40), 40), Ok(()));
        assert!(matches!(session_gate(SHARD, &at(41), 40), Err(ErrorCode::Behind { .. })));
        assert_eq!(session_gate(ShardId(2), &at(41), 0), Ok(()), "no position for another shard");
        let restarted = state(ReplicaRole::Follower, 40, false);
        for level in [Consistency::Any, at(0), Consistency::bounded_ms(100)] {
            assert!(matches!(read_gate(&facts(&restarted, None), ms(1), &level), Err(ErrorCode::Unavailable { .. })));
        }
        let follower = state(ReplicaRole::Follower, 40, true);
        assert!(matches!(
            read_gate(&facts(&follower, None), ms(1), &Consistency::Primary),
            Err(ErrorCode::NotPrimary { .. })
        ));
    }
}
