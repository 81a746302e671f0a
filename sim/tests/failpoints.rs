//! The crash-point grid, simulated: the process test's `SHARDLINE_FAILPOINT` grid (every
//! point × action × hit) run in the simulated cluster. Each cell arms the failpoint on
//! shard 1's primary, and again on its first follower, while writes go on and primaries are
//! cut off in turn (so terms change); the node dies at exactly that sync and restarts
//! 500 ms later. Every checker must stay green (linearizable reads and writes, no lost
//! acknowledged write, no refused write present, one primary per term, disjoint leases,
//! converged logs and tables, writes again after healing), and the failpoint must have
//! fired exactly once, as armed: a cell that never crashed would test nothing.

use shardline_sim::run::run;
use shardline_sim::scenarios::{failpoint, Victim};
use shardline_storage_node::failpoint::{Action, Fired, Point};

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
