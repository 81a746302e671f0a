//! Hand-written histories for the linearizability checker, each one passing or failing for
//! a reason a reader can see.

mod common;

use std::collections::BTreeMap;

use common::{final_state, history, op};
use shardline_sim::check::{linearizable, linearizable_bounded, linearizable_with_final, Violation};
use shardline_sim::history::OpKind::{Delete, Insert, Update};
use shardline_sim::history::Outcome::{PreconditionFailed, Refused, Unknown};
use shardline_sim::history::{History, Op, OpKind, Outcome};

const READ: OpKind = OpKind::Read;
const ACK: Outcome = Outcome::Ok;

fn seen(value: Option<u64>) -> Outcome {
    Outcome::Read(value)
}

fn assert_not_linearizable(history: &History, key: i64) -> Violation {
    let violation = linearizable(history).expect_err("must be rejected");
    assert!(matches!(violation, Violation::NotLinearizable { key: k, .. } if k == key), "{violation}");
    violation
}

#[test]
fn empty_and_sequential_histories_pass() {
    linearizable(&History::new()).unwrap();
    let h = history([
        op(1, READ, 0, 1, seen(None)),
        op(1, Insert(10), 2, 3, ACK),
        op(2, READ, 4, 5, seen(Some(10))),
        op(2, Update(11), 6, 7, ACK),
        op(1, READ, 8, 9, seen(Some(11))),
        op(1, Delete, 10, 11, ACK),
        op(2, READ, 12, 13, seen(None)),
        op(2, Insert(12), 14, 15, ACK),
    ]);
    linearizable(&h).unwrap();
    linearizable_with_final(&h, &final_state(&[(0, 12)])).unwrap();
}

#[test]
fn stale_read_after_acknowledged_overwrite_fails() {
    let stale = op(3, READ, 4, 5, seen(Some(1)));
    let h = history([op(1, Insert(1), 0, 1, ACK), op(2, Update(2), 2, 3, ACK), stale.clone()]);
    let violation = assert_not_linearizable(&h, 0);
    let Violation::NotLinearizable { stuck, .. } = &violation else { unreachable!() };
    assert_eq!(stuck, &vec![stale]);
    let message = violation.to_string();
    assert!(message.starts_with("linearizable: key 0"), "{message}");
    assert!(message.contains("client 3 key 0 read -> read 1 [4..5]"), "{message}");
}

#[test]
fn lost_acknowledged_insert_fails_against_the_final_state() {
    let h = history([op(1, Insert(5), 0, 1, ACK)]);
    linearizable(&h).unwrap();
    let violation = linearizable_with_final(&h, &BTreeMap::new()).unwrap_err();
    assert!(matches!(violation, Violation::NotLinearizable { key: 0, final_value: Some(None), .. }), "{violation}");
    assert!(violation.to_string().contains("final state of the replicas: absent"), "{violation}");
    linearizable_with_final(&h, &final_state(&[(0, 5)])).unwrap();
}

#[test]
fn a_final_value_nobody_wrote_fails() {
    let violation = linearizable_with_final(&History::new(), &final_state(&[(9, 3)])).unwrap_err();
    assert_eq!(violation, Violation::ValueFromNowhere { key: 9, value: 3, read: None });
    assert_eq!(
        violation.to_string(),
        "linearizable: key 9: value 3, which no acknowledged or unknown write wrote, is in the final state"
    );
}

#[test]
fn unknown_write_may_take_effect_or_not() {
    let unknown = op(1, Insert(5), 0, 1, Unknown);
    let observed = history([unknown.clone(), op(2, READ, 10, 11, seen(Some(5)))]);
    linearizable(&observed).unwrap();
    linearizable_with_final(&observed, &final_state(&[(0, 5)])).unwrap();
    let unseen = history([unknown.clone(), op(2, READ, 10, 11, seen(None))]);
    linearizable(&unseen).unwrap();
    linearizable_with_final(&unseen, &BTreeMap::new()).unwrap();
    // Unseen by a read, but the replicas hold it: it took effect after the read.
    linearizable_with_final(&unseen, &final_state(&[(0, 5)])).unwrap();
}

#[test]
fn unknown_write_has_no_upper_bound_but_does_not_undo_itself() {
    let late = history([
        op(1, Insert(1), 0, 1, ACK),
        op(1, Update(2), 2, 3, Unknown),
        op(2, READ, 5, 6, seen(Some(1))),
        op(2, READ, 7, 8, seen(Some(2))),
    ]);
    linearizable(&late).unwrap();
    let flicker = history([
        op(1, Insert(1), 0, 1, ACK),
        op(1, Update(2), 2, 3, Unknown),
        op(2, READ, 5, 6, seen(Some(2))),
        op(2, READ, 7, 8, seen(Some(1))),
    ]);
    assert_not_linearizable(&flicker, 0);
}

#[test]
fn refused_write_observed_later_fails() {
    let read = op(2, READ, 2, 3, seen(Some(5)));
    let h = history([op(1, Insert(5), 0, 1, Refused), read.clone()]);
    let violation = linearizable(&h).unwrap_err();
    assert_eq!(violation, Violation::ValueFromNowhere { key: 0, value: 5, read: Some(Box::new(read)) });
    let h = history([op(1, Insert(5), 0, 1, Refused)]);
    linearizable_with_final(&h, &BTreeMap::new()).unwrap();
    assert!(linearizable_with_final(&h, &final_state(&[(0, 5)])).is_err());
}

#[test]
fn overlapping_writes_may_land_in_either_order() {
    let writes = [op(0, Insert(1), 0, 1, ACK), op(1, Update(2), 2, 10, ACK), op(2, Update(3), 3, 11, ACK)];
    for last in [2, 3] {
        let h = history(writes.iter().cloned().chain([op(3, READ, 12, 13, seen(Some(last)))]));
        linearizable(&h).unwrap();
    }
    // Reads inside the overlap see 2 then 3, so 3 landed last.
    let mid = [op(3, READ, 4, 5, seen(Some(2))), op(3, READ, 6, 7, seen(Some(3)))];
    let h = history(writes.iter().cloned().chain(mid.clone()).chain([op(3, READ, 12, 13, seen(Some(3)))]));
    linearizable(&h).unwrap();
    let h = history(writes.iter().cloned().chain(mid).chain([op(3, READ, 12, 13, seen(Some(2)))]));
    assert_not_linearizable(&h, 0);
    // Two reads after both writes completed cannot disagree.
    let h =
        history(writes.iter().cloned().chain([op(3, READ, 12, 13, seen(Some(2))), op(4, READ, 14, 15, seen(Some(3)))]));
    assert_not_linearizable(&h, 0);
}

#[test]
fn failed_preconditions_are_observations() {
    // DuplicateKey after an acknowledged insert, NotFound after an acknowledged delete.
    let h = history([
        op(1, Insert(1), 0, 1, ACK),
        op(2, Insert(2), 2, 3, PreconditionFailed),
        op(1, Delete, 4, 5, ACK),
        op(2, Update(3), 6, 7, PreconditionFailed),
        op(2, Delete, 8, 9, PreconditionFailed),
    ]);
    linearizable(&h).unwrap();
    // DuplicateKey on a key that was definitely absent.
    assert_not_linearizable(&history([op(1, Insert(1), 0, 1, PreconditionFailed)]), 0);
    // NotFound on a key that was definitely present.
    let h = history([op(1, Insert(1), 0, 1, ACK), op(2, Update(2), 2, 3, PreconditionFailed)]);
    assert_not_linearizable(&h, 0);
    // DuplicateKey racing an insert: fine if the insert landed first...
    let h = history([op(1, Insert(1), 0, 10, ACK), op(2, Insert(2), 5, 6, PreconditionFailed)]);
    linearizable(&h).unwrap();
    // ...but not if a read in between saw the key absent after the DuplicateKey returned.
    let h = history([
        op(1, Insert(1), 0, 10, ACK),
        op(2, Insert(2), 5, 6, PreconditionFailed),
        op(3, READ, 7, 8, seen(None)),
    ]);
    assert_not_linearizable(&h, 0);
}

#[test]
fn unknown_delete_can_explain_a_later_not_found() {
    let before = [op(1, Insert(1), 0, 1, ACK), op(2, Update(2), 10, 11, PreconditionFailed)];
    assert_not_linearizable(&history(before.clone()), 0);
    linearizable(&history(before.into_iter().chain([op(3, Delete, 2, 3, Unknown)]))).unwrap();
}

#[test]
fn ops_that_touch_at_an_instant_count_as_concurrent() {
    let h = history([op(1, Insert(1), 0, 5, ACK), op(2, READ, 5, 6, seen(None))]);
    linearizable(&h).unwrap();
    let h = history([op(1, Insert(1), 0, 5, ACK), op(2, READ, 6, 7, seen(None))]);
    assert_not_linearizable(&h, 0);
}

#[test]
fn keys_are_checked_independently_and_the_bad_one_is_named() {
    let good = op(1, Insert(1), 0, 1, ACK);
    let bad = Op { key: 2, ..op(2, Insert(7), 0, 1, PreconditionFailed) };
    let h = history([good, bad]);
    let violation = assert_not_linearizable(&h, 2);
    assert!(violation.to_string().contains("key 2"), "{violation}");
}

#[test]
fn malformed_ops_are_reported_as_such() {
    for bad in [op(1, READ, 5, 4, seen(None)), op(1, READ, 0, 1, ACK), op(1, Insert(1), 0, 1, seen(None))] {
        let violation = linearizable(&history([bad])).unwrap_err();
        assert!(matches!(violation, Violation::Malformed { checker: "linearizable", .. }), "{violation}");
    }
}

#[test]
fn exceeding_the_state_limit_is_reported_not_passed() {
    // Twelve overlapping updates, then two reads that disagree on which landed last: every
    // order is tried before the search can say no.
    let mut ops = vec![op(0, Insert(1), 0, 1, ACK)];
    ops.extend((0..12).map(|i| op(i + 1, Update(100 + u64::from(i)), 2, 50, ACK)));
    ops.push(op(20, READ, 60, 61, seen(Some(100))));
    ops.push(op(20, READ, 62, 63, seen(Some(101))));
    let h = history(ops);
    let violation = linearizable_bounded(&h, None, 100).unwrap_err();
    assert!(matches!(violation, Violation::SearchLimit { key: 0, ops: 15, .. }), "{violation}");
    assert!(violation.to_string().contains("not a pass"), "{violation}");
    assert!(matches!(linearizable(&h).unwrap_err(), Violation::NotLinearizable { .. }));
}

#[test]
fn many_unknown_writes_of_unread_values_stay_cheap() {
    // Forty timed-out writes racing forty acknowledged ones: unread values are interchangeable.
    let mut ops = vec![op(0, Insert(1), 0, 1, ACK)];
    for i in 0..40u64 {
        let t = 2 + 10 * i;
        let kind = if i % 3 == 0 {
            Delete
        } else if i % 3 == 1 {
            Insert(1000 + i)
        } else {
            Update(1000 + i)
        };
        ops.push(op(1, kind, t, t + 5, Unknown));
    }
    for i in 0..40u64 {
        let t = 2 + 10 * i;
        ops.push(op(2, READ, t + 6, t + 7, seen(None)));
        ops.push(op(2, Insert(2000 + i), t + 8, t + 9, ACK));
        ops.push(op(3, Delete, t + 9, t + 10, ACK));
    }
    linearizable(&history(ops)).unwrap();
}
