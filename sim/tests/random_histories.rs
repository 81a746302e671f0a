//! Histories generated from a real register: the checkers must accept every one, and must
//! reject it once a read is made to return a value nobody wrote.

mod common;

use std::time::Instant;

use common::{generate, Shape};
use proptest::prelude::*;
use shardline_sim::check::{self, Violation};
use shardline_sim::history::Outcome;

fn shape() -> impl Strategy<Value = Shape> {
    (1u32..6, 1usize..60, 1u64..4, 0u64..40, 0u64..20, 1u64..40).prop_map(
        |(clients, ops, keys, unknown, refused, max_duration)| Shape {
            clients,
            ops,
            keys,
            unknown,
            refused,
            max_duration,
            deletes: true,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn histories_from_a_real_register_pass(seed in any::<u64>(), shape in shape()) {
        let (history, final_state) = generate(seed, shape);
        check::unique_values(&history).unwrap();
        check::refused_absent(&history, &final_state).unwrap();
        if let Err(violation) = check::linearizable_with_final(&history, &final_state) {
            panic!("{violation}\nhistory: {history:#?}\nfinal: {final_state:?}");
        }
    }

    #[test]
    fn a_read_of_a_value_nobody_wrote_fails(seed in any::<u64>(), shape in shape()) {
        let (mut history, _) = generate(seed, shape);
        let read = history.ops.iter().position(|op| matches!(op.outcome, Outcome::Read(_)));
        prop_assume!(read.is_some());
        let read = read.unwrap();
        history.ops[read].outcome = Outcome::Read(Some(u64::MAX));
        let key = history.ops[read].key;
        let violation = check::linearizable(&history).unwrap_err();
        prop_assert!(matches!(violation, Violation::ValueFromNowhere { key: k, .. } if k == key), "{}", violation);
    }

    #[test]
    fn dropping_a_surviving_value_from_the_final_state_fails(seed in any::<u64>(), shape in shape()) {
        let shape = Shape { deletes: false, ..shape };
        // On a key with an acknowledged write and no delete at all, the key is present from
        // that write on: a final state that says absent has lost it.
        let (history, mut final_state) = generate(seed, shape);
        let on_key = |key| history.ops.iter().filter(move |op| op.key == key);
        let key = final_state.keys().copied().find(|&key| {
            on_key(key).any(|op| op.outcome == Outcome::Ok)
        });
        prop_assume!(key.is_some());
        let key = key.unwrap();
        final_state.insert(key, None);
        let verdict = check::linearizable_with_final(&history, &final_state);
        prop_assert!(matches!(verdict, Err(Violation::NotLinearizable { key: k, .. }) if k == key), "{:?}", verdict);
    }
}

#[test]
fn eighty_ops_five_clients_one_key_is_fast() {
    let shape = Shape { clients: 5, ops: 80, keys: 1, unknown: 15, refused: 5, max_duration: 50, deletes: true };
    let (mut slowest_pass, mut slowest_fail) = (0.0f64, 0.0f64);
    for seed in 0..50 {
        let (mut history, final_state) = generate(seed, shape);
        let start = Instant::now();
        check::linearizable_with_final(&history, &final_state).unwrap();
        slowest_pass = slowest_pass.max(start.elapsed().as_secs_f64());

        // A failing history costs more (every order is tried): make the last read stale by
        // returning the first acknowledged value.
        let first = history.ops.iter().filter(|op| op.outcome == Outcome::Ok).min_by_key(|op| op.invoke);
        let first = first.and_then(|op| op.kind.written());
        let reads = history.ops.iter_mut().filter(|op| matches!(op.outcome, Outcome::Read(_)));
        let (Some(first), Some(last)) = (first, reads.max_by_key(|op| op.invoke)) else { continue };
        last.outcome = Outcome::Read(Some(first));
        let start = Instant::now();
        let verdict = check::linearizable_with_final(&history, &final_state);
        slowest_fail = slowest_fail.max(start.elapsed().as_secs_f64());
        assert!(matches!(verdict, Ok(()) | Err(Violation::NotLinearizable { .. })), "{verdict:?}");
    }
    println!(
        "80 ops, 5 clients, 1 key, slowest of 50 seeds: {:.1} ms passing, {:.1} ms with a stale read",
        slowest_pass * 1e3,
        slowest_fail * 1e3
    );
}

#[test]
fn long_contended_histories_pass() {
    let shape = Shape { clients: 8, ops: 400, keys: 4, unknown: 10, refused: 5, max_duration: 80, deletes: true };
    let start = Instant::now();
    for seed in 0..20 {
        let (history, final_state) = generate(seed, shape);
        check::linearizable_with_final(&history, &final_state).unwrap();
    }
    println!("400 ops, 8 clients, 4 keys: 20 seeds in {:.1} ms", start.elapsed().as_secs_f64() * 1e3);
}
