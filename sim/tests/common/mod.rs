//! Helpers the integration tests share: terse op builders and a generator of histories that
//! come from a real linearization, so the checkers must accept them.

#![allow(dead_code)] // each test binary uses its own subset

use std::collections::BTreeMap;

use shardline_sim::history::{History, Key, Op, OpKind, Outcome, Time, Value};

/// An op on key 0.
pub(crate) fn op(client: u32, kind: OpKind, invoke: Time, complete: Time, outcome: Outcome) -> Op {
    Op { client, key: 0, kind, invoke, complete, outcome }
}

/// A history of the given ops.
pub(crate) fn history(ops: impl IntoIterator<Item = Op>) -> History {
    ops.into_iter().collect()
}

/// A final state of `(key, value)` pairs; other keys are absent.
pub(crate) fn final_state(entries: &[(Key, Value)]) -> BTreeMap<Key, Option<Value>> {
    entries.iter().map(|&(k, v)| (k, Some(v))).collect()
}

/// xorshift64*: a tiny deterministic generator, so the tests need no `rand`.
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from a seed (any value, zero included).
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    /// A number in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }

    /// True with probability `percent` / 100.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The shape of a generated history.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    /// Concurrent clients, each with one op in flight at a time.
    pub clients: u32,
    /// Ops in total.
    pub ops: usize,
    /// Keys drawn from `0..keys`.
    pub keys: u64,
    /// Percent of ops whose outcome is unknown (half of those writes took effect).
    pub unknown: u64,
    /// Percent of writes refused.
    pub refused: u64,
    /// Longest op duration; longer means more overlap.
    pub max_duration: u64,
    /// Whether clients delete (without deletes, a key stays present once written).
    pub deletes: bool,
}

/// What became of a generated op.
#[derive(Clone, Copy, PartialEq)]
enum Fate {
    /// Took effect inside its interval and the client saw the result.
    Seen,
    /// Took effect, possibly after the client gave up; the client saw a timeout.
    LateUnknown,
    /// Never took effect; the client saw a timeout.
    LostUnknown,
    /// Never took effect; the client saw a refusal.
    Refused,
}

/// A random history that a real register produced, with the register's final state.
///
/// Each client issues ops one after another; each op takes effect at a random point in
/// its interval (or, when its outcome is unknown, possibly later, or never), and the
/// outcomes come from applying the ops in that order to a model of the register.
pub(crate) fn generate(seed: u64, shape: Shape) -> (History, BTreeMap<Key, Option<Value>>) {
    let mut rng = Rng::new(seed);
    let mut clock = vec![0u64; shape.clients as usize];
    let mut planned = Vec::new(); // (effect time, op, fate)
                                  // Every op gets a fresh value, used only if it writes: values are unique.
    for value in 1..=shape.ops as Value {
        let client = rng.below(u64::from(shape.clients)) as u32;
        let invoke = clock[client as usize] + rng.below(shape.max_duration);
        let duration = 1 + rng.below(shape.max_duration);
        let complete = invoke + duration;
        clock[client as usize] = complete + 1;
        let key = rng.below(shape.keys) as Key;
        let kind = match rng.below(4) {
            0 => OpKind::Insert(value),
            1 => OpKind::Update(value),
            2 if shape.deletes => OpKind::Delete,
            _ => OpKind::Read,
        };
        let fate = if kind.is_write() && rng.chance(shape.refused) {
            Fate::Refused
        } else if rng.chance(shape.unknown) {
            if rng.chance(50) {
                Fate::LateUnknown
            } else {
                Fate::LostUnknown
            }
        } else {
            Fate::Seen
        };
        let effect = match fate {
            Fate::LateUnknown => invoke + rng.below(3 * duration + 1),
            _ => invoke + rng.below(duration + 1),
        };
        let op = Op { client, key, kind, invoke, complete, outcome: Outcome::Unknown };
        planned.push((effect, op, fate));
    }
    planned.sort_by_key(|(effect, _, _)| *effect);

    let mut state: BTreeMap<Key, Value> = BTreeMap::new();
    let mut history = History::new();
    for (_, mut op, fate) in planned {
        let present = state.contains_key(&op.key);
        let allowed = match op.kind {
            OpKind::Insert(_) => !present,
            OpKind::Update(_) | OpKind::Delete => present,
            OpKind::Read => true,
        };
        if allowed && matches!(fate, Fate::Seen | Fate::LateUnknown) {
            match op.kind {
                OpKind::Insert(v) | OpKind::Update(v) => {
                    state.insert(op.key, v);
                }
                OpKind::Delete => {
                    state.remove(&op.key);
                }
                OpKind::Read => {}
            }
        }
        op.outcome = match (fate, op.kind) {
            (Fate::Seen, OpKind::Read) => Outcome::Read(state.get(&op.key).copied()),
            (Fate::Seen, _) if allowed => Outcome::Ok,
            (Fate::Seen, _) => Outcome::PreconditionFailed,
            (Fate::Refused, _) => Outcome::Refused,
            (Fate::LateUnknown | Fate::LostUnknown, _) => Outcome::Unknown,
        };
        history.push(op);
    }
    // The order ops were recorded in should not matter: shuffle it.
    for i in (1..history.ops.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        history.ops.swap(i, j);
    }
    let final_state = state.into_iter().map(|(k, v)| (k, Some(v))).collect();
    (history, final_state)
}
