//! TLS with rustls (the `ring` provider): a server's certificate and key, a client's CA,
//! both from PEM files, and the two handshakes over a [`TcpStream`].
//!
//! - [`ServerTls`]: what a listener serves TLS with (`--tls-cert`, `--tls-key`).
//! - [`ClientTls`]: what an outgoing connection verifies its peer against (`--tls-ca`): a
//!   peer whose certificate no CA in the file signed, or that names another host, is
//!   refused. The name checked is the host part of the address dialled (an IP address or
//!   a DNS name).
//!
//! Like the credential ([`super::auth::set_outgoing`]), [`set_outgoing`] names the TLS
//! every outgoing connection of this process uses (servers: their `--tls-ca`); a client
//! passes its own.
//!
//! TLS here is about privacy and the server's identity; who the client is stays the job of
//! the credential it presents inside the encrypted stream.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::Stream;

/// The first byte of a TLS connection (a handshake record): how a TLS port tells a TLS
/// client from someone speaking frames or text in the clear.
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the configuration (e.g. a key that does not match the certificate).
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn pem_err(path: &Path, reason: impl fmt::Display) -> TlsError {
    TlsError::Pem { path: path.display().to_string(), reason: reason.to_string() }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file (at least one).
fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(path, e))?;
    if certs.is_empty() {
        return Err(pem_err(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// A server's TLS: its certificate chain and private key.
#[derive(Clone)]
pub struct ServerTls(TlsAcceptor);

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerTls")
    }
}

impl ServerTls {
    /// Loads the certificate chain (`cert`, PEM, the server's own first) and its key.
    pub fn load(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
        let chain = load_certs(cert)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, e))?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Ok(ServerTls(TlsAcceptor::from(Arc::new(config))))
    }

    /// Runs the server's side of the handshake on `tcp`.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<Stream> {
        let tls = self.0.accept(tcp).await?;
        Ok(Stream::Tls(Box::new(tls.into())))
    }
}

/// A client's TLS: the certificate authorities a server's certificate must chain to.
#[derive(Clone)]
pub struct ClientTls(TlsConnector);

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ClientTls {
    /// Trusts the CA certificates in `ca` (PEM), and no other.
    pub fn load(ca: &Path) -> Result<ClientTls, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in load_certs(ca)? {
            roots.add(cert).map_err(|e| pem_err(ca, e))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClientTls(TlsConnector::from(Arc::new(config))))
    }

    /// Runs the client's side of the handshake on `tcp`, to the server `addr` names
    /// (`HOST:PORT`; the certificate must name HOST).
    pub async fn connect(&self, addr: &str, tcp: TcpStream) -> io::Result<Stream> {
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
        let tls = self.0.connect(name, tcp).await?;
        Ok(Stream::Tls(Box::new(tls.into())))
    }
}

static OUTGOING: RwLock<Option<ClientTls>> = RwLock::new(None);

/// Sets the TLS this process's outgoing connections use (servers: their `--tls-ca`).
/// `None` connects in the clear.
pub fn set_outgoing(tls: Option<ClientTls>) {
    *OUTGOING.write().expect("outgoing TLS lock") = tls;
}

/// The TLS set by [`set_outgoing`], if any.
pub fn outgoing() -> Option<ClientTls> {
    OUTGOING.read().expect("outgoing TLS lock").clone()
}
