//! Crash points for fault tests: abort the process at the n-th sync of a given kind.
//!
//! Set `SHARDLINE_FAILPOINT=<point>:<action>@<n>` in the node's environment, e.g.
//! `log-sync:tear@3`. Points: `log-sync` (the log's fsync), `table-commit` (a table
//! transaction), `term-commit` (persisting an adopted term). Actions: `crash-before`,
//! `crash-after`, `tear` (write part of the pending bytes, then abort; on points that
//! write no bytes of their own it acts as `crash-before`). Unset, every check is one
//! relaxed atomic load.

use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that arms a failpoint.
pub const ENV: &str = "SHARDLINE_FAILPOINT";

/// What to do when the armed point is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Abort before the sync.
    CrashBefore,
    /// Abort right after the sync.
    CrashAfter,
    /// Write only part of the pending bytes, then abort.
    Tear,
}

/// The armed failpoint, if any, and how often its point has been hit.
#[derive(Debug, Default)]
pub struct Failpoints {
    armed: Option<(String, Action, u64)>,
    hits: AtomicU64,
}

impl Failpoints {
    /// No failpoint armed.
    pub fn none() -> Failpoints {
        Failpoints::default()
    }

    /// Reads [`ENV`]; an unparsable value is an error so a test cannot silently arm nothing.
    pub fn from_env() -> Result<Failpoints, String> {
        match std::env::var(ENV) {
            Ok(spec) if !spec.is_empty() => Failpoints::parse(&spec),
            _ => Ok(Failpoints::none()),
        }
    }

    /// Parses `<point>:<action>@<n>`.
    pub fn parse(spec: &str) -> Result<Failpoints, String> {
        let bad = || format!("{ENV}={spec}: want <point>:<action>@<n>, e.g. log-sync:tear@3");
        let (point, rest) = spec.split_once(':').ok_or_else(bad)?;
        let (action, n) = rest.split_once('@').ok_or_else(bad)?;
        let action = match action {
            "crash-before" => Action::CrashBefore,
            "crash-after" => Action::CrashAfter,
            "tear" => Action::Tear,
            _ => return Err(bad()),
        };
        if !["log-sync", "table-commit", "term-commit"].contains(&point) {
            return Err(format!("{ENV}: unknown point `{point}` (log-sync, table-commit, term-commit)"));
        }
        let n: u64 = n.parse().ok().filter(|&n| n > 0).ok_or_else(bad)?;
        Ok(Failpoints { armed: Some((point.to_owned(), action, n)), hits: AtomicU64::new(0) })
    }

    /// Called at each sync of `point`; returns the action if this is the armed hit.
    pub fn hit(&self, point: &str) -> Option<Action> {
        let (armed, action, n) = self.armed.as_ref()?;
        if armed != point {
            return None;
        }
        let hit = self.hits.fetch_add(1, Ordering::Relaxed) + 1;
        (hit == *n).then_some(*action)
    }

    /// Aborts the process, saying why on stderr first (tests read it).
    pub fn crash(point: &str, action: Action) -> ! {
        eprintln!("failpoint {point}:{action:?} fired: aborting");
        std::process::abort()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_on_the_nth_hit_of_its_point_only() {
        let fp = Failpoints::parse("log-sync:tear@2").unwrap();
        assert_eq!(fp.hit("table-commit"), None);
        assert_eq!(fp.hit("log-sync"), None);
        assert_eq!(fp.hit("log-sync"), Some(Action::Tear));
        assert_eq!(fp.hit("log-sync"), None);
        assert_eq!(Failpoints::none().hit("log-sync"), None);
    }

    #[test]
    fn bad_specs_are_refused() {
        for spec in ["log-sync", "log-sync:boom@1", "disk:tear@1", "log-sync:tear@0", "log-sync:tear@x"] {
            assert!(Failpoints::parse(spec).is_err(), "{spec}");
        }
    }
}
