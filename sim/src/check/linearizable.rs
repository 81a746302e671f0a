//! Linearizability of each key's register, optionally against the replicas' final tables.
//!
//! Each key is checked on its own (linearizability is compositional). Its operations are
//! classified by outcome:
//! - an acknowledged write, a read's answer and a failed precondition must each be placed
//!   between their invocation and completion;
//! - a write with an unknown outcome may be placed anywhere after its invocation, with no
//!   upper bound, or not at all;
//! - refused operations, and reads with an unknown outcome, are left out (refusals are
//!   checked by [`super::refused_absent`]).
//!
//! With a final state, each key gets one more read, after everything, that must return the
//! replicas' converged value: that is "no acknowledged write lost" and "nothing appears
//! from nowhere". A value read (or final) that no acknowledged or unknown write on the key
//! wrote is reported at once as [`Violation::ValueFromNowhere`], before any search; for a
//! refused write's value, [`super::refused_absent`] names the refused op. The search itself
//! is in `search.rs`.

use std::collections::{BTreeMap, BTreeSet};

use super::search::{Effect, Entry, Failure, Problem, Reg};
use super::Violation;
use crate::history::{History, Key, Op, OpKind, Outcome, Time, Value};

/// Search states explored per key before giving up with [`Violation::SearchLimit`].
///
/// Histories from a real register take a few hundred states; a state costs a few
/// microseconds (more in debug builds) and a hundred-odd bytes, so this is a second or
/// so of a release build's time on a history the search cannot decide.
pub const DEFAULT_STATE_LIMIT: usize = 250_000;

/// The name in messages.
const CHECKER: &str = "linearizable";

/// Marks the final read among the entries (it has no operation in the history).
const FINAL: usize = usize::MAX;

/// Checks that every key's operations have a linearization.
pub fn linearizable(history: &History) -> Result<(), Violation> {
    linearizable_bounded(history, None, DEFAULT_STATE_LIMIT)
}

/// Checks linearizability with a final read per key after everything, which must return
/// `final_state`'s value (keys not in the map are absent).
pub fn linearizable_with_final(history: &History, final_state: &BTreeMap<Key, Option<Value>>) -> Result<(), Violation> {
    linearizable_bounded(history, Some(final_state), DEFAULT_STATE_LIMIT)
}

/// [`linearizable_with_final`] (or without a final state) with an explicit bound on the
/// search states explored per key.
pub fn linearizable_bounded(
    history: &History,
    final_state: Option<&BTreeMap<Key, Option<Value>>>,
    state_limit: usize,
) -> Result<(), Violation> {
    let by_key = history.by_key();
    let mut keys: BTreeSet<Key> = by_key.keys().copied().collect();
    if let Some(state) = final_state {
        keys.extend(state.keys().copied());
    }
    for key in keys {
        let ops = by_key.get(&key).map_or(&[][..], Vec::as_slice);
        let final_value = final_state.map(|state| state.get(&key).copied().flatten());
        check_key(key, ops, final_value, state_limit)?;
    }
    Ok(())
}

/// Checks one key; `final_value` is `Some` when a final read is to be added.
fn check_key(key: Key, ops: &[&Op], final_value: Option<Option<Value>>, state_limit: usize) -> Result<(), Violation> {
    let problem = classify(ops, final_value)?;
    values_were_written(key, ops, final_value)?;
    match problem.search(state_limit) {
        Ok(()) => Ok(()),
        Err(Failure::Limit { states }) => Err(Violation::SearchLimit { key, ops: ops.len(), states }),
        Err(Failure::Exhausted { placed, reg, stuck }) => {
            let sources = stuck.iter().map(|&i| problem.required[i].source);
            let final_stuck = sources.clone().any(|source| source == FINAL);
            Err(Violation::NotLinearizable {
                key,
                linearized: placed,
                required: problem.required.len(),
                state: describe(reg),
                stuck: sources.filter(|&source| source != FINAL).map(|source| ops[source].clone()).collect(),
                final_value: if final_stuck { final_value } else { None },
            })
        }
    }
}

/// Turns a key's operations into entries for the search.
fn classify(ops: &[&Op], final_value: Option<Option<Value>>) -> Result<Problem, Violation> {
    // Values that some read or the final state returns; every other value is `Unread`.
    let mut observed: BTreeSet<Value> = final_value.flatten().into_iter().collect();
    observed.extend(ops.iter().filter_map(|op| match (op.kind, op.outcome) {
        (OpKind::Read, Outcome::Read(value)) => value,
        _ => None,
    }));
    let reg = |value: Option<Value>| match value {
        None => Reg::Absent,
        Some(v) if observed.contains(&v) => Reg::Value(v),
        Some(_) => Reg::Unread,
    };

    let mut problem = Problem { required: Vec::new(), optional: Vec::new() };
    for (source, op) in ops.iter().enumerate() {
        if op.complete < op.invoke {
            return Err(malformed(op, "completes before it is invoked"));
        }
        let entry = |effect, complete| Entry { effect, invoke: op.invoke, complete, source };
        let write = || match op.kind {
            OpKind::Insert(v) => Effect::Insert(reg(Some(v))),
            OpKind::Update(v) => Effect::Update(reg(Some(v))),
            // Reads are matched before any write effect is asked for.
            OpKind::Delete | OpKind::Read => Effect::Delete,
        };
        match (op.kind, op.outcome) {
            (_, Outcome::Refused) | (OpKind::Read, Outcome::Unknown) => {}
            (OpKind::Read, Outcome::Read(value)) => {
                problem.required.push(entry(Effect::Expect(reg(value)), op.complete))
            }
            (OpKind::Read, _) => return Err(malformed(op, "a read with a write's outcome")),
            (_, Outcome::Read(_)) => return Err(malformed(op, "a write with a read's outcome")),
            (_, Outcome::Ok) => problem.required.push(entry(write(), op.complete)),
            (kind, Outcome::PreconditionFailed) => {
                // DuplicateKey saw the key present; NotFound saw it absent.
                let present = matches!(kind, OpKind::Insert(_));
                problem.required.push(entry(Effect::Present(present), op.complete));
            }
            (_, Outcome::Unknown) => problem.optional.push(entry(write(), Time::MAX)),
        }
    }
    if let Some(value) = final_value {
        let effect = Effect::Expect(reg(value));
        problem.required.push(Entry { effect, invoke: Time::MAX, complete: Time::MAX, source: FINAL });
    }
    problem.required.sort_by_key(|e| (e.invoke, e.complete));
    problem.optional.sort_by_key(|e| e.invoke);
    Ok(problem)
}

/// Checks that every value read, and the final value, was written by an operation that
/// could have taken effect: a quick, clearer answer for a common failure, which would
/// otherwise cost the search every order before it said no.
fn values_were_written(key: Key, ops: &[&Op], final_value: Option<Option<Value>>) -> Result<(), Violation> {
    let effective = ops.iter().filter(|op| op.outcome != Outcome::Refused);
    let written: BTreeSet<Value> = effective.filter_map(|op| op.kind.written()).collect();
    for op in ops {
        if let (OpKind::Read, Outcome::Read(Some(value))) = (op.kind, op.outcome) {
            if !written.contains(&value) {
                return Err(Violation::ValueFromNowhere { key, value, read: Some(Box::new((*op).clone())) });
            }
        }
    }
    match final_value {
        Some(Some(value)) if !written.contains(&value) => Err(Violation::ValueFromNowhere { key, value, read: None }),
        _ => Ok(()),
    }
}

/// A [`Violation::Malformed`] about one operation.
fn malformed(op: &Op, reason: &str) -> Violation {
    Violation::Malformed { checker: CHECKER, detail: format!("{reason}: {op}") }
}

/// The register's contents in words.
fn describe(reg: Reg) -> String {
    match reg {
        Reg::Absent => "absent".to_string(),
        Reg::Unread => "holding a value no read observed".to_string(),
        Reg::Value(v) => format!("holding {v}"),
    }
}
