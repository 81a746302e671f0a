//! Read consistency levels: what a read asks of the replica that serves it, and the
//! positions a session carries from answer to request.
//!
//! - [`Consistency::Any`]: any serving replica, arbitrarily stale (but only committed data).
//! - [`Consistency::Bounded`]: a replica that can prove it is at most `max_lag_ms`
//!   milliseconds and `max_lag_entries` entries behind the primary, else the primary.
//! - [`Consistency::Session`]: a replica that has applied at least the positions the
//!   client saw (read-your-writes, monotonic reads), else the primary.
//! - [`Consistency::Primary`]: the primary under its lease (linearizable).
//!
//! The text form (CLI flag, text mode) is `any`, `primary`, `session`, `bounded:100ms`,
//! `bounded:50e`; [`Consistency::from_str`] parses it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::ShardId;

/// How long an entries-only bound ([`Consistency::bounded_entries`]) allows since the
/// replica's last proven contact with the primary: without it a cut-off replica would
/// count entries against a commit index that stopped moving for it alone.
pub const ENTRIES_BOUND_FRESH_MS: u64 = 1_000;

/// Where one shard's replica stood: the term it was in and the last log index applied
/// to its table. Committed indexes are comparable across terms (the committed prefix is
/// the same on every replica), so a later position has the higher `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShardPosition {
    /// The shard.
    pub shard: ShardId,
    /// The term of the last applied entry.
    pub term: u64,
    /// The last applied (committed) log index.
    pub index: u64,
}

/// What a read asks of the replica that serves it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Consistency {
    /// Any serving replica: committed data, arbitrarily stale.
    #[default]
    Any,
    /// Served by a replica that can prove that, `max_lag_ms` ago or later, the primary's
    /// commit index was at most `max_lag_entries` ahead of what it has applied (with 0
    /// entries: every write acknowledged more than `max_lag_ms` ago is seen); else
    /// served by the primary.
    Bounded {
        /// Milliseconds of staleness allowed.
        max_lag_ms: u64,
        /// Committed entries the replica may lack.
        max_lag_entries: u64,
    },
    /// At least these positions applied (per shard; missing shards: no floor).
    Session {
        /// The highest position the client saw per shard.
        positions: Vec<ShardPosition>,
    },
    /// The primary under its lease: linearizable.
    Primary,
}

impl Consistency {
    /// A bound in milliseconds: every write acknowledged more than `ms` ago is seen.
    pub fn bounded_ms(ms: u64) -> Consistency {
        Consistency::Bounded { max_lag_ms: ms, max_lag_entries: 0 }
    }

    /// A bound in entries only (with [`ENTRIES_BOUND_FRESH_MS`] of contact freshness).
    pub fn bounded_entries(entries: u64) -> Consistency {
        Consistency::Bounded { max_lag_ms: ENTRIES_BOUND_FRESH_MS, max_lag_entries: entries }
    }

    /// Whether the read must go to the primary.
    pub fn is_primary(&self) -> bool {
        matches!(self, Consistency::Primary)
    }

    /// The floor a session sets for `shard` (0: none).
    pub fn floor(&self, shard: ShardId) -> u64 {
        match self {
            Consistency::Session { positions } => {
                positions.iter().filter(|p| p.shard == shard).map(|p| p.index).max().unwrap_or(0)
            }
            _ => 0,
        }
    }

    /// The same level narrowed to one shard (a session keeps only that shard's position).
    pub fn for_shard(&self, shard: ShardId) -> Consistency {
        match self {
            Consistency::Session { positions } => {
                Consistency::Session { positions: positions.iter().filter(|p| p.shard == shard).copied().collect() }
            }
            other => other.clone(),
        }
    }

    /// The level's name, for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Consistency::Any => "any",
            Consistency::Bounded { .. } => "bounded",
            Consistency::Session { .. } => "session",
            Consistency::Primary => "primary",
        }
    }
}

/// A client's session: the highest position it has seen per shard, from write
/// acknowledgements and read answers; it only ever moves forward.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionToken {
    positions: Vec<ShardPosition>,
}

impl SessionToken {
    /// An empty session (no floor anywhere).
    pub fn new() -> SessionToken {
        SessionToken::default()
    }

    /// Takes in a position seen; an older one than held changes nothing.
    pub fn observe(&mut self, seen: ShardPosition) {
        match self.positions.iter_mut().find(|p| p.shard == seen.shard) {
            Some(held) if held.index < seen.index || (held.index == seen.index && held.term < seen.term) => {
                *held = seen
            }
            Some(_) => {}
            None => {
                self.positions.push(seen);
                self.positions.sort_by_key(|p| p.shard);
            }
        }
    }

    /// The position held for `shard`.
    pub fn get(&self, shard: ShardId) -> Option<ShardPosition> {
        self.positions.iter().find(|p| p.shard == shard).copied()
    }

    /// Every position held, in shard order.
    pub fn positions(&self) -> &[ShardPosition] {
        &self.positions
    }

    /// The level a session read sends.
    pub fn consistency(&self) -> Consistency {
        Consistency::Session { positions: self.positions.clone() }
    }
}

/// A consistency level's text that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown consistency `{0}`: use any, primary, session, bounded:<N>ms or bounded:<N>e")]
pub struct BadConsistency(pub String);

impl FromStr for Consistency {
    type Err = BadConsistency;

    /// Parses `any`, `primary`, `session` (an empty session), `bounded:<N>ms`, `bounded:<N>e`.
    fn from_str(s: &str) -> Result<Consistency, BadConsistency> {
        let bad = || BadConsistency(s.to_owned());
        let lower = s.to_ascii_lowercase();
        match lower.as_str() {
            "any" => return Ok(Consistency::Any),
            "primary" | "linearizable" => return Ok(Consistency::Primary),
            "session" => return Ok(Consistency::Session { positions: Vec::new() }),
            _ => {}
        }
        let bound = lower.strip_prefix("bounded:").ok_or_else(bad)?;
        if let Some(ms) = bound.strip_suffix("ms") {
            return ms.parse().map(Consistency::bounded_ms).map_err(|_| bad());
        }
        if let Some(entries) = bound.strip_suffix('e') {
            return entries.parse().map(Consistency::bounded_entries).map_err(|_| bad());
        }
        Err(bad())
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Consistency::Bounded { max_lag_ms, max_lag_entries: 0 } => write!(f, "bounded:{max_lag_ms}ms"),
            Consistency::Bounded { max_lag_ms: ENTRIES_BOUND_FRESH_MS, max_lag_entries } => {
                write!(f, "bounded:{max_lag_entries}e")
            }
            Consistency::Bounded { max_lag_ms, max_lag_entries } => {
                write!(f, "bounded:{max_lag_ms}ms,{max_lag_entries}e")
            }
            other => f.write_str(other.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_print() {
        for text in ["any", "primary", "session", "bounded:100ms", "bounded:50e"] {
            let level: Consistency = text.parse().unwrap();
            assert_eq!(level.to_string(), text);
        }
        assert_eq!("BOUNDED:7ms".parse::<Consistency>().unwrap(), Consistency::bounded_ms(7));
        assert!("bounded:7".parse::<Consistency>().is_err());
        assert!("fresh".parse::<Consistency>().is_err());
    }

    #[test]
    fn a_session_only_moves_forward() {
        let (a, b) = (ShardId(1), ShardId(2));
        let mut token = SessionToken::new();
        token.observe(ShardPosition { shard: b, term: 1, index: 9 });
        token.observe(ShardPosition { shard: a, term: 2, index: 5 });
        token.observe(ShardPosition { shard: a, term: 2, index: 3 });
        token.observe(ShardPosition { shard: b, term: 3, index: 12 });
        assert_eq!(token.get(a).unwrap().index, 5);
        assert_eq!(token.get(b).unwrap(), ShardPosition { shard: b, term: 3, index: 12 });
        let level = token.consistency();
        assert_eq!((level.floor(a), level.floor(b), level.floor(ShardId(3))), (5, 12, 0));
        assert_eq!(level.for_shard(a), Consistency::Session { positions: vec![token.get(a).unwrap()] });
    }
}
