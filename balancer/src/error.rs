//! The balancer's typed errors: bad configuration, and calls to peers that failed.

/// Why the balancer cannot start or keep serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BalancerError {
    /// The configuration does not make sense.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// The metrics address could not be served.
    #[error(transparent)]
    Metrics(#[from] shardline_metrics::exporter::ExporterError),
}

/// Why a call to a node or the coordinator got no answer (the protocol's one call error).
pub use shardline_protocol::net::CallError;
