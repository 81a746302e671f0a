//! The flags every server (coordinator, balancer, storage node) shares: credentials,
//! connection timeouts and TLS, as one clap [`ServerArgs`] each `main` flattens into its
//! own, and [`ServerArgs::setup`], which turns them into what [`super::serve_ports`] and
//! the outgoing connections need.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::auth::{self, AuthError, Gate};
use super::tls::{self, ClientTls, ServerTls, TlsError};
use super::{Limits, Ports};

/// Why the shared server flags could not be put to use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The users file or cluster secret.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A certificate, key or CA file.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Flags that do not go together.
    #[error("{0}")]
    Flags(&'static str),
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// Credentials, timeouts and TLS: the flags of every Shardline server.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Users file (TOML; see the README's Security section): with it (or a cluster
    /// secret), a connection must authenticate before anything but PING, HELP and AUTH.
    #[arg(long, env = "SHARDLINE_USERS_FILE")]
    pub users_file: Option<PathBuf>,
    /// File holding the cluster's internal secret: control and peer messages are accepted
    /// only from its holders, and this process presents it to its peers.
    #[arg(long, env = "SHARDLINE_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Milliseconds a new connection may take to send its first byte and authenticate.
    #[arg(long, default_value_t = 10_000)]
    pub handshake_timeout_ms: u64,
    /// Milliseconds a connection may stay silent with nothing in flight before it is closed.
    #[arg(long, default_value_t = 300_000)]
    pub idle_timeout_ms: u64,
    /// This server's certificate chain (PEM): with --tls-key, its port speaks TLS only.
    #[arg(long, env = "SHARDLINE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "SHARDLINE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) this process verifies its peers against: with it, every
    /// connection it opens to another server (nodes, coordinator) is TLS.
    #[arg(long, env = "SHARDLINE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// A second port, in the clear, beside the TLS one (for `nc` where the operator allows
    /// it); only with --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub plain_listen: Option<SocketAddr>,
}

impl ServerArgs {
    /// `limits` with this server's handshake and idle timeouts.
    pub fn limits(&self, limits: Limits) -> Limits {
        Limits {
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            ..limits
        }
    }

    /// Loads the credentials and certificates: the gate for this server's ports, and its
    /// TLS certificate if it has one. Sets the credential and TLS its own outgoing
    /// connections use ([`auth::setup`], [`tls::set_outgoing`]).
    pub fn setup(&self) -> Result<(Arc<Gate>, Option<ServerTls>), SetupError> {
        let gate = auth::setup(self.users_file.as_deref(), self.cluster_secret_file.as_deref())?;
        let server = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(ServerTls::load(cert, key)?),
            (None, None) => None,
            _ => return Err(SetupError::Flags("--tls-cert and --tls-key go together")),
        };
        tls::set_outgoing(self.tls_ca.as_deref().map(ClientTls::load).transpose()?);
        match (&server, &self.tls_ca) {
            (Some(_), Some(_)) => tracing::info!("TLS on this server's port and on its connections to peers"),
            (Some(_), None) => tracing::warn!("TLS on this server's port; its connections to peers are in the clear"),
            (None, Some(_)) => tracing::info!("TLS on this server's connections to peers; its port is in the clear"),
            (None, None) => {}
        }
        Ok((gate, server))
    }

    /// Binds `listen` (and --plain-listen), serving TLS on `listen` when `tls` is set.
    pub async fn bind(&self, listen: SocketAddr, tls: Option<ServerTls>) -> Result<Ports, SetupError> {
        let bind =
            async |addr: SocketAddr| TcpListener::bind(addr).await.map_err(|source| SetupError::Bind { addr, source });
        let listener = bind(listen).await?;
        let plain = match self.plain_listen {
            Some(addr) => {
                tracing::info!(%addr, "plaintext port beside the TLS one");
                Some(bind(addr).await?)
            }
            None => None,
        };
        Ok(Ports { listener, tls, plain })
    }

    /// The credential and certificate files given, by flag name, as absolute paths.
    pub fn files(&self) -> std::io::Result<Vec<(&'static str, PathBuf)>> {
        let files: [(&str, &Option<PathBuf>); 5] = [
            ("users-file", &self.users_file),
            ("cluster-secret-file", &self.cluster_secret_file),
            ("tls-cert", &self.tls_cert),
            ("tls-key", &self.tls_key),
            ("tls-ca", &self.tls_ca),
        ];
        let given = files.into_iter().filter_map(|(flag, path)| path.as_deref().map(|p| (flag, p)));
        given.map(|(flag, path)| Ok((flag, std::path::absolute(path)?))).collect()
    }

    /// The flags that hand these credentials and certificates on to a process this one
    /// starts (the coordinator's nodes).
    pub fn passed_on(&self) -> std::io::Result<Vec<String>> {
        Ok(self.files()?.into_iter().map(|(flag, path)| format!("--{flag}={}", path.display())).collect())
    }
}

/// Sets up every server's logging the same way: to stderr, at `RUST_LOG`'s levels (default
/// `info`), in colour only on a terminal.
pub fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
