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
//! - [`tls`]: rustls certificates for a listener ([`tls::ServerTls`]) and for outgoing
//!   connections ([`tls::ClientTls`]); [`Stream`] is the connection type, in the clear or
//!   under TLS, that every one of the above runs over.
//! - `cli` (feature `cli`): the flags every server shares (credentials, timeouts, TLS).
//!
//! Both outgoing connections fail with one error type, [`CallError`]. [`stop_signal`] is
//! what stops every server.

pub mod auth;
#[cfg(feature = "cli")]
pub mod cli;
mod conn;
mod door;
mod frames;
mod mux;
mod serve;
mod signal;
mod stream;
pub mod tls;

pub use conn::{CallError, Conn};
pub use door::{open as open_stream, Outgoing, MAX_ATTEMPTS, MAX_EARLY_FRAMES, MAX_EARLY_PAYLOAD};
pub use mux::{MuxConn, MAX_IN_FLIGHT, SWEEP};
pub use serve::{
    serve, serve_ports, serve_with, Limits, Ports, Service, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
};
pub use signal::stop_signal;
pub use stream::{ReadHalf, Stream, WriteHalf};
