//! Named, scripted schedules: each stages one known way to lose, resurrect or misreport a
//! write, on top of an otherwise healthy run (no random faults), so it replays exactly.

use crate::faults::{Fault, FaultMix};
use crate::run::RunConfig;
use crate::world::MS;

/// A named schedule.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Its name (`--scenario NAME`).
    pub name: &'static str,
    /// What it stages and what must hold.
    pub about: &'static str,
    build: fn(&mut RunConfig),
}

impl Scenario {
    /// The run for this scenario with `seed` choosing delays and client operations.
    pub fn config(&self, seed: u64) -> RunConfig {
        let mut cfg = RunConfig::new(seed);
        cfg.faults = FaultMix::none();
        (self.build)(&mut cfg);
        cfg
    }
}

fn on_primary(shard: u32, fault: Fault, then: Option<Fault>, after: u64) -> Fault {
    Fault::OnPrimary { shard, fault: Box::new(fault), then: then.map(Box::new), after }
}

/// Every named schedule.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "isolated-primary",
        about: "shard 2's primary is cut off from the other nodes and the coordinator (clients still reach it) \
                for 1.5 s; it must stop acknowledging before a successor is elected, and nothing acknowledged \
                may be lost",
        build: |cfg| {
            let isolate = Fault::Isolate { node: 0, one_way: None };
            cfg.script.push((1_000 * MS, on_primary(2, isolate, Some(Fault::Reconnect { node: 0 }), 1_500 * MS)));
        },
    },
    Scenario {
        name: "paused-primary",
        about: "shard 2's primary is paused (SIGSTOP) for 2.5 s while heartbeats queue on its connections, then \
                woken: no two primaries may hold a lease at once, and a PRIMARY read must not miss an \
                acknowledged write (issue 11, scenario 3)",
        build: |cfg| {
            cfg.script
                .push((1_000 * MS, on_primary(2, Fault::Pause { node: 0 }, Some(Fault::Wake { node: 0 }), 2_500 * MS)));
        },
    },
    Scenario {
        name: "crashed-primary",
        about: "shard 1's primary is killed (losing what it had not synced) and restarted 1 s later; writes \
                in flight must be reported as unknown or succeed, never refused if they commit (issue 11, \
                scenario 5)",
        build: |cfg| {
            let crash = Fault::Crash { node: 0, torn: None };
            cfg.script.push((1_000 * MS, on_primary(1, crash, Some(Fault::Restart { node: 0 }), 1_000 * MS)));
        },
    },
];

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}
