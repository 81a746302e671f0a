//! Crash points for fault tests: the process dies at the n-th sync of a given kind.
//!
//! Set `SHARDLINE_FAILPOINT=<point>:<action>@<n>` in the node's environment, e.g.
//! `log-sync:tear@3`. Points: `log-sync` (the log's fsync), `table-commit` (a table
//! transaction), `term-commit` (persisting an adopted term). Actions: `crash-before`,
//! `crash-after`, `tear` (write part of the pending bytes, sync them, then die; on points
//! that write no bytes of their own it acts as `crash-before`).
//!
//! A real node aborts when its failpoint fires. The simulator runs many nodes in one
//! process, so its failpoints ([`Failpoints::simulated`]) record the death instead: the
//! sync point returns a [`Fired`] error, every later change to the log's disk or the table
//! is refused (a dead process writes nothing more), and the simulator, seeing
//! [`Failpoints::fired`] after the step, crashes the node without carrying out that step's
//! effects. The disk operations before the death are the same in both modes.

use std::fmt;
use std::sync::{Mutex, OnceLock};

/// The environment variable that arms a failpoint.
pub const ENV: &str = "SHARDLINE_FAILPOINT";

/// Where a node makes something durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Point {
    /// The log's fsync.
    LogSync,
    /// A table transaction applying committed entries.
    TableCommit,
    /// Persisting an adopted term.
    TermCommit,
}

impl Point {
    /// Every point.
    pub const ALL: [Point; 3] = [Point::LogSync, Point::TableCommit, Point::TermCommit];

    /// The point's name in [`ENV`].
    pub fn name(self) -> &'static str {
        match self {
            Point::LogSync => "log-sync",
            Point::TableCommit => "table-commit",
            Point::TermCommit => "term-commit",
        }
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to do when the armed point is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Die before the sync.
    CrashBefore,
    /// Die right after the sync.
    CrashAfter,
    /// Write and sync only part of the pending bytes, then die.
    Tear,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 3] = [Action::CrashBefore, Action::CrashAfter, Action::Tear];

    /// The action's name in [`ENV`].
    pub fn name(self) -> &'static str {
        match self {
            Action::CrashBefore => "crash-before",
            Action::CrashAfter => "crash-after",
            Action::Tear => "tear",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failpoint fired in a simulated process: the process is dead from here on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("failpoint {point}:{action} fired: the process is dead")]
pub struct Fired {
    /// Where.
    pub point: Point,
    /// What it did.
    pub action: Action,
}

/// Parses `<point>:<action>@<n>` (e.g. `log-sync:tear@3`), as [`ENV`] holds it.
pub fn parse_spec(spec: &str) -> Result<(Point, Action, u64), String> {
    let bad = || format!("{ENV}={spec}: want <point>:<action>@<n>, e.g. log-sync:tear@3");
    let (point, rest) = spec.split_once(':').ok_or_else(bad)?;
    let (action, n) = rest.split_once('@').ok_or_else(bad)?;
    let action = Action::ALL.into_iter().find(|a| a.name() == action).ok_or_else(bad)?;
    let Some(point) = Point::ALL.into_iter().find(|p| p.name() == point) else {
        return Err(format!("{ENV}: unknown point `{point}` (log-sync, table-commit, term-commit)"));
    };
    let n: u64 = n.parse().ok().filter(|&n| n > 0).ok_or_else(bad)?;
    Ok((point, action, n))
}

/// The armed point, its action, the hit it fires on, and the hits counted so far.
#[derive(Debug)]
struct Armed {
    point: Point,
    action: Action,
    on_hit: u64,
    hits: u64,
}

/// The armed failpoint, if any, how often its point has been hit, and whether it fired.
#[derive(Debug, Default)]
pub struct Failpoints {
    /// Record the death instead of aborting (the simulator's processes are not real).
    simulated: bool,
    /// A mutex, not a plain field, so the simulator can arm a running node.
    armed: Mutex<Option<Armed>>,
    fired: OnceLock<Fired>,
}

impl Failpoints {
    /// No failpoint armed; one that fires aborts the process.
    pub fn none() -> Failpoints {
        Failpoints::default()
    }

    /// No failpoint armed yet; one that fires records the death instead of aborting.
    pub fn simulated() -> Failpoints {
        Failpoints { simulated: true, ..Failpoints::default() }
    }

    /// Reads [`ENV`]; an unparsable value is an error so a test cannot silently arm nothing.
    pub fn from_env() -> Result<Failpoints, String> {
        match std::env::var(ENV) {
            Ok(spec) if !spec.is_empty() => Failpoints::parse(&spec),
            _ => Ok(Failpoints::none()),
        }
    }

    /// Parses `<point>:<action>@<n>` into an armed failpoint that aborts the process.
    pub fn parse(spec: &str) -> Result<Failpoints, String> {
        let (point, action, n) = parse_spec(spec)?;
        let fp = Failpoints::none();
        fp.arm(point, action, n);
        Ok(fp)
    }

    /// Arms `point` to `action` on its `n`-th hit from now (replacing any armed one).
    pub fn arm(&self, point: Point, action: Action, n: u64) {
        let armed = Armed { point, action, on_hit: n, hits: 0 };
        *self.armed.lock().expect("failpoints lock") = Some(armed);
    }

    /// Called at each sync of `point`; returns the action if this is the armed hit.
    pub fn hit(&self, point: Point) -> Option<Action> {
        let mut armed = self.armed.lock().expect("failpoints lock");
        let armed = armed.as_mut().filter(|a| a.point == point)?;
        armed.hits += 1;
        (armed.hits == armed.on_hit).then_some(armed.action)
    }

    /// The process dies at `point`: a real one aborts, saying why on stderr first (tests
    /// read it); a simulated one is marked dead and the caller returns the error.
    pub fn crash(&self, point: Point, action: Action) -> Fired {
        if !self.simulated {
            eprintln!("failpoint {point}:{action} fired: aborting");
            std::process::abort()
        }
        *self.fired.get_or_init(|| Fired { point, action })
    }

    /// The failpoint that killed this (simulated) process, if one did.
    pub fn fired(&self) -> Option<Fired> {
        self.fired.get().copied()
    }

    /// `Err` once a failpoint killed the process: storage calls this before each change,
    /// so nothing reaches the disk after the death.
    pub fn alive(&self) -> Result<(), Fired> {
        self.fired().map_or(Ok(()), Err)
    }

    /// Runs `commit` as a commit at `point`, dying before it (`crash-before`; `tear` too,
    /// a transaction has no bytes of its own to tear) or right after it (`crash-after`) if
    /// this is the armed hit.
    pub fn around_commit<E: From<Fired>>(
        &self,
        point: Option<Point>,
        commit: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E> {
        self.alive()?;
        let Some(point) = point else {
            return commit();
        };
        let action = self.hit(point);
        if let Some(action @ (Action::CrashBefore | Action::Tear)) = action {
            return Err(self.crash(point, action).into());
        }
        commit()?;
        if action == Some(Action::CrashAfter) {
            return Err(self.crash(point, Action::CrashAfter).into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_on_the_nth_hit_of_its_point_only() {
        let fp = Failpoints::parse("log-sync:tear@2").unwrap();
        assert_eq!(fp.hit(Point::TableCommit), None);
        assert_eq!(fp.hit(Point::LogSync), None);
        assert_eq!(fp.hit(Point::LogSync), Some(Action::Tear));
        assert_eq!(fp.hit(Point::LogSync), None);
        assert_eq!(Failpoints::none().hit(Point::LogSync), None);
    }

    #[test]
    fn bad_specs_are_refused() {
        for spec in ["log-sync", "log-sync:boom@1", "disk:tear@1", "log-sync:tear@0", "log-sync:tear@x"] {
            assert!(Failpoints::parse(spec).is_err(), "{spec}");
        }
    }

    #[test]
    fn a_simulated_process_dies_at_the_armed_commit_and_stays_dead() {
        let fp = Failpoints::simulated();
        let commits = std::cell::Cell::new(0);
        let commit = || -> Result<(), Fired> {
            commits.set(commits.get() + 1);
            Ok(())
        };
        fp.around_commit(Some(Point::TableCommit), commit).unwrap();
        fp.arm(Point::TableCommit, Action::CrashAfter, 2);
        fp.around_commit(Some(Point::TableCommit), commit).unwrap();
        fp.around_commit(Some(Point::TermCommit), commit).unwrap();
        let fired = Fired { point: Point::TableCommit, action: Action::CrashAfter };
        assert_eq!(fp.around_commit(Some(Point::TableCommit), commit), Err(fired));
        assert_eq!(commits.get(), 4, "crash-after: the commit happened, then the process died");
        assert_eq!(fp.fired(), Some(fired));
        assert_eq!(fp.around_commit(None, commit), Err(fired), "a dead process commits nothing");
        assert_eq!(commits.get(), 4);
    }

    #[test]
    fn crash_before_and_tear_skip_the_commit() {
        for action in [Action::CrashBefore, Action::Tear] {
            let fp = Failpoints::simulated();
            fp.arm(Point::TermCommit, action, 1);
            let mut committed = false;
            let result = fp.around_commit(Some(Point::TermCommit), || -> Result<(), Fired> {
                committed = true;
                Ok(())
            });
            assert_eq!(result, Err(Fired { point: Point::TermCommit, action }));
            assert!(!committed, "{action}");
        }
    }
}
