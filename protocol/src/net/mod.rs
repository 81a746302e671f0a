//! The thin tokio layer over the sans-IO protocol (feature `net`).
//!
//! - [`serve`]: one listener serving binary frames (pipelined, run-to-completion, with
//!   limits) and the nc text mode on the same port, for any [`Service`].
//! - [`Conn`]: an outgoing connection for one-call-at-a-time hops.
//! - [`MuxConn`]: an outgoing connection many concurrent calls share (pipelined, answers
//!   matched by id), for the balancer and the `shardline` client.
//!
//! - [`auth`]: the users file, the cluster secret, and the [`auth::Gate`] `serve_with`
//!   checks them with; the credential outgoing connections present.
//!
//! Both outgoing connections fail with one error type, [`CallError`]. [`stop_signal`] is
//! what stops every server.

pub mod auth;
mod conn;
mod door;
mod frames;
mod mux;
mod serve;
mod signal;

pub use conn::{CallError, Conn};
pub use door::{open as open_stream, MAX_ATTEMPTS, MAX_EARLY_FRAMES, MAX_EARLY_PAYLOAD};
pub use mux::{MuxConn, MAX_IN_FLIGHT, SWEEP};
pub use serve::{serve, serve_with, Limits, Service, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_IDLE_TIMEOUT};
pub use signal::stop_signal;
