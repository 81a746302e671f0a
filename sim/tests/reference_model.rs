//! The linearizability checker against a brute-force reference on small random histories.
//!
//! The reference tries every order straight from the definition, with none of the search's
//! reductions (memoization, observations first, dominance, unread values alike), so a
//! reduction that wrongly accepts or wrongly rejects a history shows up as a disagreement.
//! The histories are random, not generated from a register, so about half are violations.

mod common;

use std::collections::BTreeMap;

use common::Rng;
use shardline_sim::check::{self, Violation};
use shardline_sim::history::{History, Key, Op, OpKind, Outcome, Time, Value};

/// Whether the ops of one key (plus an optional final read) have a linearization.
fn reference(ops: &[Op], final_value: Option<Option<Value>>) -> bool {
    let mut required = Vec::new();
    let mut optional = Vec::new();
    for op in ops {
        match (op.kind, op.outcome) {
            (_, Outcome::Refused) | (OpKind::Read, Outcome::Unknown) => {}
            (_, Outcome::Unknown) => optional.push(op.clone()),
            _ => required.push(op.clone()),
        }
    }
    if let Some(value) = final_value {
        required.push(Op {
            client: u32::MAX,
            key: ops.first().map_or(0, |op| op.key),
            kind: OpKind::Read,
            invoke: Time::MAX,
            complete: Time::MAX,
            outcome: Outcome::Read(value),
        });
    }
    place(&mut required, &mut optional, None)
}

/// Tries every op that may come next: one that no unplaced required op must precede.
fn place(required: &mut Vec<Op>, optional: &mut Vec<Op>, state: Option<Value>) -> bool {
    if required.is_empty() {
        return true;
    }
    let must_precede = |required: &[Op], x: &Op| required.iter().any(|r| r.complete < x.invoke);
    for i in 0..required.len() {
        if must_precede(required, &required[i]) {
            continue;
        }
        let Some(next) = step(&required[i], state) else { continue };
        let op = required.remove(i);
        let found = place(required, optional, next);
        required.insert(i, op);
        if found {
            return true;
        }
    }
    for i in 0..optional.len() {
        if must_precede(required, &optional[i]) {
            continue;
        }
        let Some(next) = step(&optional[i], state) else { continue };
        let op = optional.remove(i);
        let found = place(required, optional, next);
        optional.insert(i, op);
        if found {
            return true;
        }
    }
    false
}

/// The state after `op` takes effect with its recorded outcome, if it can.
fn step(op: &Op, state: Option<Value>) -> Option<Option<Value>> {
    let present = state.is_some();
    match (op.kind, op.outcome) {
        (OpKind::Read, Outcome::Read(value)) => (value == state).then_some(state),
        (OpKind::Insert(_), Outcome::PreconditionFailed) => present.then_some(state),
        (_, Outcome::PreconditionFailed) => (!present).then_some(state),
        (OpKind::Insert(v), _) => (!present).then_some(Some(v)),
        (OpKind::Update(v), _) => present.then_some(Some(v)),
        (OpKind::Delete, _) => present.then_some(None),
        (OpKind::Read, _) => unreachable!("reads are generated with a read's outcome"),
    }
}

/// A random small history on keys 0 and 1, values from a small pool so reads often match;
/// `unknown` is the percent of writes whose outcome is unknown.
fn random_history(rng: &mut Rng, unknown: u64) -> (History, BTreeMap<Key, Option<Value>>) {
    let mut history = History::new();
    for client in 0..rng.below(7) as u32 + 1 {
        let key = rng.below(2) as Key;
        let value = 1 + rng.below(3);
        let invoke = rng.below(20);
        let complete = invoke + rng.below(10);
        let (kind, outcome) = match rng.below(4) {
            0 => (OpKind::Read, Outcome::Read((rng.below(3) > 0).then_some(value))),
            k => {
                let kind = [OpKind::Insert(value), OpKind::Update(value), OpKind::Delete][k as usize - 1];
                let outcome = if rng.chance(unknown) {
                    Outcome::Unknown
                } else {
                    [Outcome::Ok, Outcome::Ok, Outcome::PreconditionFailed, Outcome::Refused][rng.below(4) as usize]
                };
                (kind, outcome)
            }
        };
        history.push(Op { client, key, kind, invoke, complete, outcome });
    }
    let mut final_state = BTreeMap::new();
    for key in 0..2 {
        if rng.chance(30) {
            final_state.insert(key, Some(1 + rng.below(3)));
        }
    }
    (history, final_state)
}

#[test]
fn the_search_agrees_with_brute_force() {
    agree(7, 20);
}

#[test]
fn the_search_agrees_with_brute_force_when_most_writes_time_out() {
    agree(8, 70);
}

/// Compares verdicts on 40,000 histories from `seed` with `unknown` percent unknown writes.
fn agree(seed: u64, unknown: u64) {
    let mut rng = Rng::new(seed);
    let (mut accepted, mut rejected) = (0, 0);
    for round in 0..40_000 {
        let (history, final_state) = random_history(&mut rng, unknown);
        let with_final = round % 2 == 0;
        let expected = (0..2).all(|key: Key| {
            let ops: Vec<Op> = history.ops.iter().filter(|op| op.key == key).cloned().collect();
            let final_value = with_final.then(|| final_state.get(&key).copied().flatten());
            reference(&ops, final_value)
        });
        let verdict = if with_final {
            check::linearizable_with_final(&history, &final_state)
        } else {
            check::linearizable(&history)
        };
        match &verdict {
            Ok(()) => accepted += 1,
            Err(Violation::NotLinearizable { .. } | Violation::ValueFromNowhere { .. }) => rejected += 1,
            Err(other) => panic!("unexpected {other}"),
        }
        assert_eq!(verdict.is_ok(), expected, "round {round}: {verdict:?}\n{history:#?}\nfinal: {final_state:?}");
    }
    println!("agreed on {accepted} accepted and {rejected} rejected histories");
    assert!(accepted > 5_000 && rejected > 5_000, "both verdicts exercised: {accepted} / {rejected}");
}
