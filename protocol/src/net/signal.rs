//! The signals that stop a server: Ctrl-C (SIGINT) and SIGTERM, as `docker stop`, systemd
//! and `kill` send it.

use std::future::Future;
use std::io;

/// A future that completes on the first SIGINT or SIGTERM; the watch on SIGTERM is set up
/// now, so a signal that arrives before the future is polled is not missed.
pub fn stop_signal() -> io::Result<impl Future<Output = ()>> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    })
}
