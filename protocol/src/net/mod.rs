//! The thin tokio layer over the sans-IO protocol (feature `net`).
//!
//! - [`serve`]: one listener serving binary frames (pipelined, run-to-completion, with
//!   limits) and the nc text mode on the same port, for any [`Service`].
//! - [`Conn`]: an outgoing connection for one-call-at-a-time hops.
//! - [`MuxConn`]: an outgoing connection many concurrent calls share (pipelined, answers
//!   matched by id), for the balancer and the `shardline` client.
//!
//! Both outgoing connections fail with one error type, [`CallError`]. [`stop_signal`] is
//! what stops every server.

mod conn;
mod frames;
mod mux;
mod serve;
mod signal;

pub use conn::{CallError, Conn};
pub use mux::{MuxConn, MAX_IN_FLIGHT, SWEEP};
pub use serve::{serve, Limits, Service};
pub use signal::stop_signal;
