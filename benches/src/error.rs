//! [`BenchError`]: what can go wrong in a benchmark run, typed.

use shardline::ClientError;

/// Why a benchmark could not run or finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A flag or a combination of flags makes no sense.
    #[error("{0}")]
    InvalidSpec(String),
    /// The cluster could not be reached or answered something unusable (the client's error
    /// is the source).
    #[error("{what}")]
    Client {
        /// What the bench was doing.
        what: String,
        /// The client's error.
        #[source]
        source: ClientError,
    },
    /// The cluster is not in a state a benchmark can use (no schema, no shards...).
    #[error("{0}")]
    Cluster(String),
    /// A file could not be written or read (the OS error is the source).
    #[error("{path}")]
    Io {
        /// The file or directory.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A chart could not be drawn.
    #[error("drawing {path}: {reason}")]
    Plot {
        /// The SVG file.
        path: String,
        /// What plotters said.
        reason: String,
    },
    /// A histogram operation failed (a value out of its range).
    #[error("histogram: {0}")]
    Histogram(String),
    /// A helper process (shardline up, redis-server, redis-benchmark) failed.
    #[error("{0}")]
    Process(String),
}

impl BenchError {
    /// A [`BenchError::Client`] for `what`.
    pub fn client(what: impl Into<String>, source: ClientError) -> BenchError {
        BenchError::Client { what: what.into(), source }
    }

    /// A [`BenchError::Io`] for `path`.
    pub fn io(path: impl std::fmt::Display, source: std::io::Error) -> BenchError {
        BenchError::Io { path: path.to_string(), source }
    }
}
