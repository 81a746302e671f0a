//! The crash-point grid, simulated: the process test's `SHARDLINE_FAILPOINT` grid (every
//! point × action × hit) run in the simulated cluster. Each cell arms the failpoint on
//! shard 1's primary, and again on its first follower, while writes go on and primaries are
//! cut off in turn (so terms change); the node dies at exactly that sync and restarts
//! 500 ms later. Every checker must stay green (linearizable reads and writes, no lost
//! acknowledged write, no refused write present, one primary per term, disjoint leases,
//! converged logs and tables, writes again after healing), and the failpoint must have
//! fired exactly once, as armed: a cell that never crashed would test nothing.
//!
//! The cluster's checkers cannot see one replica's durability (the others hold the
//! writes), so a last test looks at one node: what dies at a failpoint sends nothing from
//! that step. What its storage keeps is tested on a one-replica shard in
//! `storage-node/tests/sim_crash.rs`.

use std::time::Duration;

use shardline_protocol::{ControlRequest, ControlResponse, Schema, ShardId, ShardSpec};
use shardline_sim::faults;
use shardline_sim::node::SimNode;
use shardline_sim::run::run;
use shardline_sim::scenarios::{failpoint, Victim};
use shardline_sim::world::{Addr, Event, Msg, NetConfig, World, MS};
use shardline_storage_node::failpoint::{Action, Fired, Point};
use shardline_storage_node::replica::ReplicaConfig;

/// The hits the process test used.
const HITS: [u64; 7] = [1, 2, 3, 5, 8, 13, 21];
/// Seeds per cell (they choose delays, drift and the clients' operations).
const SEEDS: [u64; 2] = [1, 2];

/// Runs every action × hit × victim × seed of `point`; fails listing every cell that broke
/// a checker or did not fire as armed, each with the command that replays it.
fn grid(point: Point) {
    let mut failures = Vec::new();
    let mut runs = 0;
    for victim in [Victim::Primary, Victim::Follower] {
        for action in Action::ALL {
            for hit in HITS {
                for seed in SEEDS {
                    runs += 1;
                    let report = run(&failpoint(seed, victim, point, action, hit));
                    let fired: Vec<Fired> = report.fired.iter().map(|f| f.2).collect();
                    let mut problems = report.violations;
                    if fired != [Fired { point, action }] {
                        problems.push(format!("fired {fired:?}, want exactly one {point}:{action}"));
                    }
                    if !problems.is_empty() {
                        let follower = if victim == Victim::Follower { " --on-follower" } else { "" };
                        failures.push(format!(
                            "{point}:{action}@{hit} on the {victim:?}, seed {seed}: {}\n  replay: cargo run --release \
                             -p shardline-sim -- --seed {seed} --seeds 1 --failpoint {point}:{action}@{hit}{follower} \
                             --trace",
                            problems.join("; ")
                        ));
                    }
                }
            }
        }
    }
    assert_eq!(runs, 2 * Action::ALL.len() * HITS.len() * SEEDS.len());
    assert!(failures.is_empty(), "{} of {runs} runs failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn crash_at_log_sync() {
    grid(Point::LogSync);
}

#[test]
fn crash_at_table_commit() {
    grid(Point::TableCommit);
}

#[test]
fn crash_at_term_commit() {
    grid(Point::TermCommit);
}

/// A node that dies at a failpoint sends nothing from the step it died in: an election
/// query that persists its term at the armed `term-commit` gets no vote back (after the
/// sync or before it), the term is on disk after the restart exactly when the sync
/// happened, and the restarted node, unarmed, answers the same query.
#[test]
fn a_node_dead_at_a_failpoint_answers_nothing_from_that_step() {
    let shard = ShardId(1);
    let query = |id| Msg::Control { id, request: ControlRequest::ElectionQuery { shard, term: 1 } };
    // Runs the world for 10 ms (the node's scheduled restart included); the answers that
    // reached the coordinator.
    let run_for_10ms = |world: &mut World, nodes: &mut [SimNode]| {
        let mut answers = Vec::new();
        while let Some(event) = world.pop(world.now + 10 * MS) {
            match event {
                Event::Deliver { msg: Msg::ControlAnswer { response, .. }, .. } => answers.push(response),
                Event::Fault(fault) => faults::apply(world, nodes, fault),
                _ => {}
            }
        }
        answers
    };
    for action in Action::ALL {
        let mut world = World::new(1, NetConfig { loss: 0.0, duplicate: 0.0, min_delay: MS, max_delay: MS });
        let mut nodes = vec![SimNode::new(0, 0, settings())];
        nodes[0].configure(ShardSpec { id: shard, low: 0, size: 100 }, Schema::seed());
        nodes[0].arm(Point::TermCommit, action, 1, 5 * MS);
        nodes[0].handle(&mut world, Addr::Coord, query(1));
        assert!(!nodes[0].up, "{action}: the node died");
        let fired: Vec<Fired> = nodes[0].fired.iter().map(|f| f.1).collect();
        assert_eq!(fired, [Fired { point: Point::TermCommit, action }]);
        assert_eq!(run_for_10ms(&mut world, &mut nodes), [], "{action}: the dead node's vote left it");
        assert!(nodes[0].up, "{action}: restarted");
        assert_eq!(nodes[0].replicas[&shard].state().term, u64::from(action == Action::CrashAfter), "{action}");
        nodes[0].handle(&mut world, Addr::Coord, query(2));
        let answers = run_for_10ms(&mut world, &mut nodes);
        assert!(matches!(answers[..], [ControlResponse::Vote(_)]), "{action}: {answers:?}");
    }
}

fn settings() -> ReplicaConfig {
    ReplicaConfig {
        node: String::new(),
        addr: String::new(),
        write_timeout: Duration::from_secs(2),
        sync_heartbeat: Duration::from_millis(50),
        peer_timeout: Duration::from_millis(500),
        snapshot_lag: 20,
        log_retain: 4,
        max_payload: shardline_protocol::DEFAULT_MAX_PAYLOAD,
        incarnation: 1,
        snapshot_chunk_bytes: shardline_storage_node::replica::room::SNAPSHOT_CHUNK_BYTES,
        snapshot_rate: 0,
        regressions: Default::default(),
    }
}
