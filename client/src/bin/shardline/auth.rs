//! Credentials for the CLI and for `shardline up`: which one a command presents, the local
//! users file and cluster secret `shardline up` generates, and `shardline auth`.
//!
//! A local auth directory (by default `<data-dir>/auth`) holds:
//!
//! | file | what |
//! |---|---|
//! | `users.toml` | the users file: `admin` (client + admin) and `app` (client only), argon2 hashes |
//! | `cluster.secret` | the cluster's internal secret (nodes, coordinator and balancer present it) |
//! | `admin.credentials`, `app.credentials` | `user = ...`, `secret = ...` for the CLI (`--credentials`) |
//!
//! Every file is created mode 0600 and kept: a resumed cluster keeps its credentials.
//! With `--tls`, `DIR/tls` holds a local CA and the servers' certificate ([`crate::certs`]).

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;
use shardline::Credential;
use shardline_protocol::net::auth::{self, UserEntry};

/// Where `shardline up` keeps its credentials under the default data directory: the CLI
/// uses the admin credential there when none is given.
pub(crate) const DEFAULT_CREDENTIALS: &str = "./shardline-data/auth/admin.credentials";

/// `shardline auth ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum AuthCommand {
    /// Create a local auth directory (users file, cluster secret, admin and app
    /// credentials), or keep the one there.
    Init {
        /// The directory.
        dir: PathBuf,
        /// Also a local CA and a certificate it signed for 127.0.0.1 and localhost, in
        /// DIR/tls (for the servers' --tls-cert, --tls-key and --tls-ca).
        #[arg(long)]
        tls: bool,
    },
    /// Read a secret on standard input and print its argon2 hash, for a users file.
    Hash,
}

/// Runs `shardline auth ...`.
pub(crate) fn run(command: AuthCommand) -> anyhow::Result<()> {
    match command {
        AuthCommand::Init { dir, tls } => {
            let local = LocalAuth::ensure(&dir)?;
            println!("users file      {}", local.users_file.display());
            println!("cluster secret  {}", local.cluster_secret_file.display());
            println!("admin           {}", local.admin_credentials.display());
            println!("app (client)    {}", local.dir.join("app.credentials").display());
            if tls {
                let tls = crate::certs::LocalTls::ensure(&local.dir)?;
                println!("TLS CA          {}", tls.ca.display());
                println!("TLS certificate {}", tls.cert.display());
                println!("TLS key         {}", tls.key.display());
            }
            Ok(())
        }
        AuthCommand::Hash => {
            let mut secret = String::new();
            std::io::stdin().read_to_string(&mut secret).context("reading the secret from standard input")?;
            let secret = secret.trim_end_matches(['\n', '\r']);
            if secret.is_empty() {
                bail!("no secret on standard input");
            }
            println!("{}", auth::hash_secret(secret)?);
            Ok(())
        }
    }
}

/// The credential a command presents: `--credentials FILE`, else the default one of
/// `shardline up` if that file exists, else none.
pub(crate) fn resolve(flag: Option<&Path>) -> anyhow::Result<Option<Credential>> {
    match flag {
        Some(path) => Ok(Some(Credential::load(path)?)),
        None if Path::new(DEFAULT_CREDENTIALS).is_file() => Ok(Some(Credential::load(Path::new(DEFAULT_CREDENTIALS))?)),
        None => Ok(None),
    }
}

/// A local auth directory's files.
#[derive(Debug)]
pub(crate) struct LocalAuth {
    /// The directory.
    pub dir: PathBuf,
    /// `users.toml`.
    pub users_file: PathBuf,
    /// `cluster.secret`.
    pub cluster_secret_file: PathBuf,
    /// `admin.credentials`.
    pub admin_credentials: PathBuf,
    /// The admin credential itself.
    pub admin: Credential,
}

impl LocalAuth {
    /// Uses the files in `dir`, generating the missing ones (all of them, if the users
    /// file is missing: the credentials and the hashes must agree).
    pub(crate) fn ensure(dir: &Path) -> anyhow::Result<LocalAuth> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        let users_file = dir.join("users.toml");
        let cluster_secret_file = dir.join("cluster.secret");
        let admin_credentials = dir.join("admin.credentials");
        if !users_file.is_file() {
            let admin =
                Credential { user: "admin".into(), secret: shardline_protocol::Secret(auth::generate_secret()) };
            let app = Credential { user: "app".into(), secret: shardline_protocol::Secret(auth::generate_secret()) };
            let entry = |c: &Credential, permissions: &[&str]| -> anyhow::Result<UserEntry> {
                Ok(UserEntry {
                    name: c.user.clone(),
                    secret_hash: auth::hash_secret(&c.secret.0)?,
                    permissions: permissions.iter().map(|p| p.to_string()).collect(),
                })
            };
            let users = auth::users_file(&[entry(&admin, &["client", "admin"])?, entry(&app, &["client"])?]);
            write_private(&admin_credentials, &admin.to_file())?;
            write_private(&dir.join("app.credentials"), &app.to_file())?;
            write_private(&users_file, &users)?;
        }
        if !cluster_secret_file.is_file() {
            write_private(&cluster_secret_file, &format!("{}\n", auth::generate_secret()))?;
        }
        let admin = Credential::load(&admin_credentials)?;
        Ok(LocalAuth { dir, users_file, cluster_secret_file, admin_credentials, admin })
    }
}

/// Writes `text` to a file only its owner may read (mode 0600).
pub(crate) fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}
