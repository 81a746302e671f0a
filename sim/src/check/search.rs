//! The search behind [`super::linearizable`]: one key's operations, already classified, and
//! a depth-first search for an order that respects real time and the register's rules.
//!
//! This is Wing & Gong's algorithm with Lowe's memoization, as in Knossos and Porcupine: a
//! search state is the set of operations placed so far and the register's contents, and
//! a state seen before is not explored again. Three reductions keep it small, each sound:
//! - **Observations go first.** A read (or a failed precondition) that may come next and
//!   fits the current contents is placed at once, without branching: it changes nothing,
//!   and placing it early only relaxes real-time constraints on the rest.
//! - **Fewer optional writes used dominates.** An unknown write never constrains others
//!   (it has no completion), so a state that used a subset of the unknown writes another
//!   state used, with the same required operations placed and the same contents, can do
//!   everything the other can: the other is skipped.
//! - **Unread values are alike.** A value no read returned and not in the final state can
//!   never be compared, so it is one abstract `Unread` value; unknown writes of unread values
//!   that may both come next are interchangeable forever, so only the first is tried.

use std::collections::HashMap;

use crate::history::{Time, Value};

/// The register's contents as the search sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Reg {
    /// The key is absent.
    Absent,
    /// Present with a value nothing ever observes.
    Unread,
    /// Present with a value some read or the final state observes.
    Value(Value),
}

/// What placing an operation does to, or requires of, the register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Effect {
    /// Absent becomes this.
    Insert(Reg),
    /// Present becomes this.
    Update(Reg),
    /// Present becomes absent.
    Delete,
    /// The contents must be exactly this (a read).
    Expect(Reg),
    /// The key must be present (`true`) or absent (`false`): a failed precondition.
    Present(bool),
}

impl Effect {
    /// The contents after this effect, or `None` if it cannot happen on `reg`.
    fn apply(self, reg: Reg) -> Option<Reg> {
        let present = reg != Reg::Absent;
        match self {
            Effect::Insert(new) => (!present).then_some(new),
            Effect::Update(new) => present.then_some(new),
            Effect::Delete => present.then_some(Reg::Absent),
            Effect::Expect(want) => (reg == want).then_some(reg),
            Effect::Present(want) => (present == want).then_some(reg),
        }
    }

    /// Whether it leaves the register as it is.
    fn is_observation(self) -> bool {
        matches!(self, Effect::Expect(_) | Effect::Present(_))
    }

    /// Writes that are indistinguishable from each other once both may happen.
    fn interchangeable_class(self) -> Option<usize> {
        match self {
            Effect::Insert(Reg::Unread) => Some(0),
            Effect::Update(Reg::Unread) => Some(1),
            Effect::Delete => Some(2),
            _ => None,
        }
    }
}

/// One operation to place.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// What it does.
    pub effect: Effect,
    /// It may be placed only after every operation that completed before this instant.
    pub invoke: Time,
    /// It must be placed before any operation invoked after this; `Time::MAX` for none.
    pub complete: Time,
    /// The caller's handle for reporting (an index into its own list).
    pub source: usize,
}

/// One key's operations: those that must be placed, and unknown writes that may be.
///
/// An operation `a` precedes `b` in real time only if `a.complete < b.invoke`: operations
/// that touch at an instant count as concurrent, because the simulator may process events
/// of one instant in either order.
pub(super) struct Problem {
    /// Acknowledged writes, reads, failed preconditions and the final read.
    pub required: Vec<Entry>,
    /// Writes with an unknown outcome.
    pub optional: Vec<Entry>,
}

/// Why the search found no order.
pub(super) enum Failure {
    /// Every order was tried.
    Exhausted {
        /// How many required entries the deepest state placed.
        placed: usize,
        /// The contents in that state.
        reg: Reg,
        /// The required entries (indices into `Problem::required`) that could have come
        /// next there.
        stuck: Vec<usize>,
    },
    /// More than the allowed number of states were explored.
    Limit {
        /// States explored.
        states: usize,
    },
}

/// A set of entry indices.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bits(Box<[u64]>);

impl Bits {
    fn new(len: usize) -> Self {
        Bits(vec![0; len.div_ceil(64)].into_boxed_slice())
    }

    fn has(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn with(&self, i: usize) -> Self {
        let mut next = self.clone();
        next.0[i / 64] |= 1 << (i % 64);
        next
    }

    fn is_subset(&self, other: &Bits) -> bool {
        self.0.iter().zip(other.0.iter()).all(|(a, b)| a & !b == 0)
    }
}

/// A search state.
#[derive(Debug, Clone)]
struct Node {
    required: Bits,
    optional: Bits,
    placed: usize,
    reg: Reg,
}

impl Problem {
    /// Searches for an order; `Ok` if one exists.
    pub(super) fn search(&self, state_limit: usize) -> Result<(), Failure> {
        let root = self.settle(Node {
            required: Bits::new(self.required.len()),
            optional: Bits::new(self.optional.len()),
            placed: 0,
            reg: Reg::Absent,
        });
        // For each (required placed, contents): the optional sets already explored.
        let mut seen: HashMap<(Bits, Reg), Vec<Bits>> = HashMap::new();
        let mut deepest = root.clone();
        let mut stack = vec![root];
        let mut states = 0;
        while let Some(node) = stack.pop() {
            if node.placed == self.required.len() {
                return Ok(());
            }
            if !first_visit(&mut seen, &node) {
                continue;
            }
            states += 1;
            if states > state_limit {
                return Err(Failure::Limit { states });
            }
            if node.placed > deepest.placed {
                deepest = node.clone();
            }
            // Popped last to first: required writes by earliest completion, then unknown ones.
            let mut children = self.children(&node);
            children.reverse();
            stack.extend(children.into_iter().map(|child| self.settle(child)));
        }
        let horizon = self.horizon(&deepest);
        let stuck = (0..self.required.len())
            .filter(|&i| !deepest.required.has(i) && self.required[i].invoke <= horizon)
            .collect();
        Err(Failure::Exhausted { placed: deepest.placed, reg: deepest.reg, stuck })
    }

    /// The latest invocation that may still come next: the earliest completion among the
    /// required entries not yet placed.
    fn horizon(&self, node: &Node) -> Time {
        let pending = self.required.iter().enumerate().filter(|(i, _)| !node.required.has(*i));
        pending.map(|(_, e)| e.complete).min().unwrap_or(Time::MAX)
    }

    /// Places every observation that may come next and fits, until none does.
    fn settle(&self, mut node: Node) -> Node {
        loop {
            let horizon = self.horizon(&node);
            let fits = self.required.iter().enumerate().find(|(i, e)| {
                !node.required.has(*i)
                    && e.invoke <= horizon
                    && e.effect.is_observation()
                    && e.effect.apply(node.reg).is_some()
            });
            match fits {
                Some((i, _)) => {
                    node.required = node.required.with(i);
                    node.placed += 1;
                }
                None => return node,
            }
        }
    }

    /// The states one write further on.
    fn children(&self, node: &Node) -> Vec<Node> {
        let horizon = self.horizon(node);
        let mut writes: Vec<usize> = (0..self.required.len())
            .filter(|&i| !node.required.has(i) && self.required[i].invoke <= horizon)
            .filter(|&i| !self.required[i].effect.is_observation())
            .collect();
        writes.sort_by_key(|&i| self.required[i].complete);
        let mut children = Vec::new();
        for i in writes {
            if let Some(reg) = self.required[i].effect.apply(node.reg) {
                let required = node.required.with(i);
                children.push(Node { required, optional: node.optional.clone(), placed: node.placed + 1, reg });
            }
        }
        let mut tried = [false; 3];
        for (j, entry) in self.optional.iter().enumerate() {
            if node.optional.has(j) || entry.invoke > horizon {
                continue;
            }
            if let Some(class) = entry.effect.interchangeable_class() {
                if std::mem::replace(&mut tried[class], true) {
                    continue;
                }
            }
            if let Some(reg) = entry.effect.apply(node.reg) {
                let optional = node.optional.with(j);
                children.push(Node { required: node.required.clone(), optional, placed: node.placed, reg });
            }
        }
        children
    }
}

/// Records `node` unless a state that dominates it was explored already.
fn first_visit(seen: &mut HashMap<(Bits, Reg), Vec<Bits>>, node: &Node) -> bool {
    let explored = seen.entry((node.required.clone(), node.reg)).or_default();
    if explored.iter().any(|used| used.is_subset(&node.optional)) {
        return false;
    }
    explored.retain(|used| !node.optional.is_subset(used));
    explored.push(node.optional.clone());
    true
}
