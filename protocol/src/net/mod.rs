//! The thin tokio layer over the sans-IO protocol (feature `net`).
//!
//! - [`serve`]: one listener serving binary frames (pipelined, run-to-completion, with
//!   limits) and the nc text mode on the same port, for any [`Service`].
//! - [`Conn`]: an outgoing connection for one-call-at-a-time hops.

mod conn;
mod frames;
mod serve;

pub use conn::{CallError, Conn};
pub use serve::{serve, Limits, Service};
