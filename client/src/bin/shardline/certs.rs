//! Certificates for a try-out with TLS (`shardline up --tls`, `shardline auth init --tls`):
//! a local CA, made here, and a certificate it signed for `127.0.0.1` and `localhost`,
//! which every process of a local cluster serves. The CLI trusts the CA (`--tls-ca`).
//!
//! | file (in `<auth dir>/tls/`) | what |
//! |---|---|
//! | `ca.pem` | the local CA's certificate: what clients verify against |
//! | `ca.key` | its key (0600), kept so the set can be told apart from a stranger's |
//! | `server.pem`, `server.key` | the servers' certificate and key (0600) |
//!
//! The files are kept: a resumed cluster serves the same certificate, and a client given
//! the CA once keeps trusting it. If one is missing, all four are made anew.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

use crate::auth::write_private;

/// A local CA and the servers' certificate it signed.
#[derive(Debug)]
pub(crate) struct LocalTls {
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    /// The servers' certificate (PEM).
    pub cert: PathBuf,
    /// The servers' key (PEM).
    pub key: PathBuf,
}

impl LocalTls {
    /// Uses the certificates in `auth_dir/tls`, making them if any is missing.
    pub(crate) fn ensure(auth_dir: &Path) -> anyhow::Result<LocalTls> {
        let dir = auth_dir.join("tls");
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let local = LocalTls { ca: dir.join("ca.pem"), cert: dir.join("server.pem"), key: dir.join("server.key") };
        let ca_key = dir.join("ca.key");
        if [&local.ca, &ca_key, &local.cert, &local.key].iter().all(|p| p.is_file()) {
            return Ok(local);
        }
        let (ca_params, ca_key_pair) = ca()?;
        let ca_cert = ca_params.self_signed(&ca_key_pair)?;
        write_private(&ca_key, &ca_key_pair.serialize_pem())?;
        let issuer = Issuer::new(ca_params, ca_key_pair);
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, "Shardline local server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &issuer)?;
        write_private(&local.key, &key.serialize_pem())?;
        std::fs::write(&local.cert, cert.pem()).with_context(|| format!("cannot write {}", local.cert.display()))?;
        std::fs::write(&local.ca, ca_cert.pem()).with_context(|| format!("cannot write {}", local.ca.display()))?;
        Ok(local)
    }
}

/// A fresh CA's parameters and key.
fn ca() -> anyhow::Result<(CertificateParams, KeyPair)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // A name of its own, so a client trusting another local CA is told "unknown issuer".
    let tag = &shardline_protocol::net::auth::generate_secret()[..12];
    params.distinguished_name.push(DnType::CommonName, format!("Shardline local CA {tag}"));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok((params, KeyPair::generate()?))
}
