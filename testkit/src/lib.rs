//! What Shardline's integration tests share, in one place (a dev-dependency only).
//!
//! - [`ports`]: ports nobody listens on, singly and in ranges.
//! - [`wait`]: every wait with a deadline and a bounded count: [`within`], [`Budget`],
//!   [`poll`]; nothing waits on a fixed sleep.
//! - [`process`]: the binaries built beside a test, building the missing ones; a guard
//!   that kills a child by pid when dropped, also when the test panics; signals.
//!
//! The shared facts tests check against (the seed's layout, what a settled topology is)
//! live in `shardline-protocol`, next to the types they describe.

pub mod ports;
pub mod process;
pub mod wait;

pub use ports::{free_port, free_port_range, free_service_port, free_service_ports, node_base_port};
pub use process::{
    ensure_binaries, ensure_cluster_binaries, pids_naming, run_bounded, signal, target_dir, ChildGuard, Finished,
    KillNaming, SERVERS,
};
pub use wait::{poll, poll_every, within, Budget};
