//! `shardline-sim`: runs seeded simulated histories of a Shardline cluster and checks them.

use std::time::Instant;

use anyhow::bail;
use clap::{Parser, ValueEnum};
use shardline_sim::faults::FaultMix;
use shardline_sim::run::{run, Broken, Report, RunConfig};
use shardline_sim::scenarios::{self, Victim};
use shardline_storage_node::failpoint;

/// Runs the cluster simulator: each seed is one history of clients, faults and healing,
/// checked for lost acknowledged writes, refused writes that happened, non-linearizable
/// reads, two primaries in a term, overlapping leases, diverging replicas and liveness.
/// A failing seed is printed with the command that replays it with a full event trace.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// First seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many seeds to run, from --seed on.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// Faults to draw: all, none, or a list of crashes,pauses,partitions,disk.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Run a named, scripted schedule instead of random faults (`--scenario list` lists them).
    #[arg(long)]
    scenario: Option<String>,
    /// Run the crash-point schedule with this failpoint (`log-sync:tear@3`, as
    /// SHARDLINE_FAILPOINT takes it) armed on shard 1's primary.
    #[arg(long, conflicts_with = "scenario")]
    failpoint: Option<String>,
    /// With --failpoint: arm it on shard 1's first follower instead.
    #[arg(long, requires = "failpoint")]
    on_follower: bool,
    /// After each failing run, print every operation on this key.
    #[arg(long)]
    history: Option<i64>,
    /// Print every event of each run (use with one seed).
    #[arg(long)]
    trace: bool,
    /// Test-only: put one rule back as it was before its fix, to see the checkers fire
    /// (each named scenario guards one: `--scenario list` says which).
    #[arg(long, value_enum)]
    broken: Option<Broken>,
    /// Stop at the first failing seed.
    #[arg(long)]
    fail_fast: bool,
    /// How many failing seeds to describe (the run goes on; it exits non-zero if any failed).
    #[arg(long, default_value_t = 20)]
    show: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    let faults = FaultMix::parse(&args.faults).map_err(anyhow::Error::msg)?;
    if args.scenario.as_deref() == Some("list") {
        list_scenarios();
        return Ok(());
    }
    let scenario = match args.scenario.as_deref() {
        Some(name) => {
            Some(scenarios::find(name).ok_or_else(|| anyhow::anyhow!("no scenario `{name}` (try --scenario list)"))?)
        }
        None => None,
    };
    let failpoint = args.failpoint.as_deref().map(failpoint::parse_spec).transpose().map_err(anyhow::Error::msg)?;
    let victim = if args.on_follower { Victim::Follower } else { Victim::Primary };
    let started = Instant::now();
    let (mut events, mut failed, mut shown) = (0u64, 0u64, 0usize);
    for seed in args.seed..args.seed + args.seeds {
        let mut cfg = match (scenario, failpoint) {
            (Some(s), _) => s.config(seed),
            (None, Some((point, action, hit))) => scenarios::failpoint(seed, victim, point, action, hit),
            (None, None) => {
                let mut cfg = RunConfig::new(seed);
                cfg.faults = faults;
                cfg
            }
        };
        cfg.verbose = args.trace;
        cfg.broken = args.broken;
        let mut report = run(&cfg);
        events += report.events;
        if failpoint.is_some() && report.fired.is_empty() {
            // A crash-point run that never crashed tested nothing.
            report.violations.push("the failpoint never fired".into());
        }
        if !report.violations.is_empty() {
            failed += 1;
            if shown < args.show {
                shown += 1;
                describe_failure(&args, scenario, seed, &report);
            }
            if args.fail_fast {
                break;
            }
        }
        let done = seed - args.seed + 1;
        if done % 1000 == 0 {
            eprintln!("{done} seeds, {failed} failed, {:.0} s", started.elapsed().as_secs_f64());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} seeds from {}: {} passed, {failed} failed; {events} events in {secs:.1} s ({:.1} schedules/s, {:.0} events/s)",
        args.seeds,
        args.seed,
        args.seeds - failed,
        args.seeds as f64 / secs,
        events as f64 / secs
    );
    if failed > 0 {
        bail!("{failed} of {} seeds failed", args.seeds);
    }
    Ok(())
}

/// Prints every scripted scenario with what it shows.
fn list_scenarios() {
    for s in scenarios::SCENARIOS {
        let about = s.about.split_whitespace().collect::<Vec<_>>().join(" ");
        match s.guards.and_then(|g| g.to_possible_value()) {
            Some(g) => println!("{} (fails with --broken {}): {about}", s.name, g.get_name()),
            None => println!("{}: {about}", s.name),
        }
    }
}

/// Prints a failed seed's violations, the asked-for key's history, and the command that
/// replays it.
fn describe_failure(args: &Args, scenario: Option<&scenarios::Scenario>, seed: u64, report: &Report) {
    eprintln!("seed {seed} FAILED ({} ops, {} acked):", report.ops, report.acked);
    for v in &report.violations {
        eprintln!("  {v}");
    }
    if let Some(key) = args.history {
        for op in report.history.ops.iter().filter(|op| op.key == key) {
            eprintln!("    {op}");
        }
    }
    let broken = args
        .broken
        .map(|b| format!(" --broken {}", b.to_possible_value().expect("a name").get_name()))
        .unwrap_or_default();
    let what = match (scenario, &args.failpoint) {
        (Some(s), _) => format!("--scenario {}", s.name),
        (None, Some(spec)) => format!("--failpoint {spec}{}", if args.on_follower { " --on-follower" } else { "" }),
        (None, None) => format!("--faults {}", args.faults),
    };
    eprintln!("  replay: cargo run --release -p shardline-sim -- --seed {seed} --seeds 1 {what} --trace{broken}");
}
