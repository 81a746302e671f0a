//! Credentials: the users file, the cluster's internal secret, and the [`Gate`] that checks
//! them at a server's door.
//!
//! A server with no users file and no cluster secret is open (every connection may do
//! everything, as before authentication existed). Otherwise a connection holds no
//! permission until it authenticates (`Request::Auth`, or `AUTH <user> <secret>` in the
//! text mode), and then holds its user's [`Grants`]:
//!
//! - users come from a TOML users file, each with an argon2 hash of its secret (never the
//!   secret itself) and its permissions (`client`, `admin`);
//! - the user [`CLUSTER_USER`] with the cluster's internal secret (a file holding it in
//!   clear, since every process of the cluster presents it too) holds every permission,
//!   control and peer messages included.
//!
//! A refused credential is answered only after a delay that doubles with each recent
//! failure from the same address (up to [`MAX_PENALTY`]), and at most [`VERIFIERS`] argon2
//! checks run at once, so guessing is slow and cannot eat every core.
//!
//! Outgoing, [`set_outgoing`] names the credential every [`super::Conn`] and
//! [`super::MuxConn`] of this process presents when it connects (the cluster secret, in
//! servers); a client passes its own to [`super::MuxConn::connect_as`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::access::Grants;
pub use crate::access::CLUSTER_USER;
use crate::Secret;

/// argon2 checks that may run at once in one process.
pub const VERIFIERS: usize = 2;
/// The longest a refused credential's answer is held back.
pub const MAX_PENALTY: Duration = Duration::from_secs(2);
/// The delay after the first recent failure; each further one doubles it.
pub const FIRST_PENALTY: Duration = Duration::from_millis(100);
/// Failures older than this are forgotten.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);
/// Addresses whose failures are remembered at once (the map is cleared past it).
const MAX_TRACKED: usize = 4096;
/// Shortest cluster secret accepted.
pub const MIN_CLUSTER_SECRET: usize = 16;
/// Longest user name.
pub const MAX_USER_NAME: usize = 64;

/// Why credentials could not be loaded or checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A users or credentials file does not parse.
    #[error("{path}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The credential was refused (unknown user or wrong secret: not told apart).
    #[error("wrong user or secret")]
    Refused,
    /// Hashing failed.
    #[error("hashing: {0}")]
    Hash(String),
}

/// A user name and secret to present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// The user.
    pub user: String,
    /// The password or token.
    pub secret: Secret,
}

impl Credential {
    /// The cluster's own credential, from its internal secret.
    pub fn cluster(secret: &str) -> Credential {
        Credential { user: CLUSTER_USER.to_owned(), secret: Secret(secret.to_owned()) }
    }

    /// Reads a credentials file: TOML with `user = "..."` and `secret = "..."`.
    pub fn load(path: &Path) -> Result<Credential, AuthError> {
        let text = read(path)?;
        #[derive(Deserialize)]
        struct File {
            user: String,
            secret: String,
        }
        let file: File = toml::from_str(&text).map_err(|e| parse_err(path, e.to_string()))?;
        Ok(Credential { user: file.user, secret: Secret(file.secret) })
    }

    /// The credentials file's text for this credential.
    pub fn to_file(&self) -> String {
        format!("user = {:?}\nsecret = {:?}\n", self.user, self.secret.0)
    }
}

static OUTGOING: RwLock<Option<Credential>> = RwLock::new(None);

/// Sets the credential this process's outgoing connections present (servers: the cluster
/// secret). `None` presents nothing.
pub fn set_outgoing(credential: Option<Credential>) {
    *OUTGOING.write().expect("outgoing credential lock") = credential;
}

/// The credential set by [`set_outgoing`], if any.
pub fn outgoing() -> Option<Credential> {
    OUTGOING.read().expect("outgoing credential lock").clone()
}

/// One entry of the users file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// The user name.
    pub name: String,
    /// The argon2 hash of the secret, as a PHC string (`$argon2id$v=19$...`).
    pub secret_hash: String,
    /// `client`, `admin`, or both.
    pub permissions: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<UserEntry>,
}

/// Renders a users file holding `entries`.
pub fn users_file(entries: &[UserEntry]) -> String {
    toml::to_string(&UsersFile { users: entries.to_vec() }).expect("a users file serializes")
}

#[derive(Debug)]
struct User {
    hash: String,
    grants: Grants,
}

#[derive(Debug, Default)]
struct Failures {
    count: u32,
    last: Option<Instant>,
}

/// Checks credentials for a server: open when nothing is configured.
#[derive(Debug)]
pub struct Gate {
    users: HashMap<String, User>,
    cluster: Option<Secret>,
    open: bool,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    verifiers: Semaphore,
    /// Each user's secret as last verified: a reconnecting client is compared in constant
    /// time instead of paying for argon2 again (at most one entry per configured user).
    verified: Mutex<HashMap<String, Secret>>,
}

impl Default for Gate {
    fn default() -> Gate {
        Gate::open()
    }
}

impl Gate {
    /// A gate that lets every connection do everything (no credentials configured).
    pub fn open() -> Gate {
        Gate {
            users: HashMap::new(),
            cluster: None,
            open: true,
            failures: Mutex::new(HashMap::new()),
            verifiers: Semaphore::new(VERIFIERS),
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// A gate from a users file and a cluster secret file; open if both are `None`.
    pub fn load(users: Option<&Path>, cluster_secret: Option<&Path>) -> Result<Gate, AuthError> {
        let mut gate = Gate::open();
        if users.is_none() && cluster_secret.is_none() {
            return Ok(gate);
        }
        gate.open = false;
        if let Some(path) = users {
            let file: UsersFile = toml::from_str(&read(path)?).map_err(|e| parse_err(path, e.to_string()))?;
            for entry in file.users {
                let user = check_entry(&entry).map_err(|reason| parse_err(path, reason))?;
                if gate.users.insert(entry.name.clone(), user).is_some() {
                    return Err(parse_err(path, format!("user `{}` appears twice", entry.name)));
                }
            }
        }
        if let Some(path) = cluster_secret {
            gate.cluster = Some(Secret(load_cluster_secret(path)?));
        }
        Ok(gate)
    }

    /// Whether no credential is needed.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Checks `user`'s `secret` for a connection from `peer`: its grants, or `Refused`
    /// after the failure penalty.
    pub async fn check(&self, peer: IpAddr, user: &str, secret: &Secret) -> Result<Grants, AuthError> {
        if self.open {
            return Ok(Grants::ALL);
        }
        let grants = if user == CLUSTER_USER {
            let ok = self.cluster.as_ref().is_some_and(|c| bool::from(c.0.as_bytes().ct_eq(secret.0.as_bytes())));
            ok.then_some(Grants::ALL)
        } else {
            self.verify(user, secret).await
        };
        match grants {
            Some(grants) => {
                self.failures.lock().expect("failures lock").remove(&peer);
                Ok(grants)
            }
            None => {
                let penalty = self.note_failure(peer, Instant::now());
                tracing::warn!(%peer, user, penalty_ms = penalty.as_millis() as u64, "credential refused");
                tokio::time::sleep(penalty).await;
                Err(AuthError::Refused)
            }
        }
    }

    /// Verifies a user's secret against its argon2 hash, off the async threads. An unknown
    /// user costs the same as a known one.
    async fn verify(&self, user: &str, secret: &Secret) -> Option<Grants> {
        let known = self.verified.lock().expect("verified lock").get(user).cloned();
        if known.is_some_and(|k| bool::from(k.0.as_bytes().ct_eq(secret.0.as_bytes()))) {
            return self.users.get(user).map(|u| u.grants);
        }
        let (hash, grants) = match self.users.get(user) {
            Some(u) => (u.hash.clone(), Some(u.grants)),
            None => (DUMMY_HASH.to_owned(), None),
        };
        let _permit = self.verifiers.acquire().await.ok()?;
        let given = secret.0.clone();
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|h| Argon2::default().verify_password(given.as_bytes(), &h).is_ok())
        })
        .await
        .unwrap_or(false);
        if ok && grants.is_some() {
            self.verified.lock().expect("verified lock").insert(user.to_owned(), secret.clone());
            grants
        } else {
            None
        }
    }

    /// Counts a failure from `peer` at `now`; the delay its answer should wait.
    fn note_failure(&self, peer: IpAddr, now: Instant) -> Duration {
        let mut failures = self.failures.lock().expect("failures lock");
        if failures.len() >= MAX_TRACKED && !failures.contains_key(&peer) {
            failures.retain(|_, f| f.last.is_some_and(|t| now.duration_since(t) < FAILURE_MEMORY));
            if failures.len() >= MAX_TRACKED {
                failures.clear();
            }
        }
        let f = failures.entry(peer).or_default();
        if f.last.is_some_and(|t| now.duration_since(t) >= FAILURE_MEMORY) {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = Some(now);
        penalty(f.count)
    }
}

/// The delay after the `n`-th recent failure: 100 ms, 200 ms, 400 ms, ... up to 2 s.
pub fn penalty(n: u32) -> Duration {
    let doubled = FIRST_PENALTY.saturating_mul(1u32 << n.saturating_sub(1).min(16));
    doubled.min(MAX_PENALTY)
}

/// A valid argon2 hash of a random secret nobody knows: what an unknown user is checked
/// against, so it takes as long as a known one.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2hhcmRsaW5lLWR1bW15$5V0y7nYqGv9Q1l8l0X8r7m0o1q6b1Hn4QdQm0R3Yc0E";

/// What a server's `main` does with its credential flags: the gate for its listener, and
/// (given a cluster secret) that secret as the credential its own connections present.
pub fn setup(users: Option<&Path>, cluster_secret: Option<&Path>) -> Result<Arc<Gate>, AuthError> {
    let gate = Gate::load(users, cluster_secret)?;
    match cluster_secret {
        Some(path) => set_outgoing(Some(Credential::cluster(&load_cluster_secret(path)?))),
        None if !gate.is_open() => {
            tracing::warn!("a users file without a cluster secret: this process presents no credential to its peers")
        }
        None => tracing::warn!("no users file or cluster secret: anyone who can connect may do anything"),
    }
    Ok(Arc::new(gate))
}

/// Hashes `secret` with argon2id and a random salt, as a PHC string for the users file.
pub fn hash_secret(secret: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// A fresh random secret: 32 bytes from the OS, as 64 hex digits.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a cluster secret file: the secret, surrounding whitespace trimmed.
pub fn load_cluster_secret(path: &Path) -> Result<String, AuthError> {
    let secret = read(path)?.trim().to_owned();
    if secret.len() < MIN_CLUSTER_SECRET {
        return Err(parse_err(path, format!("the cluster secret must be at least {MIN_CLUSTER_SECRET} characters")));
    }
    Ok(secret)
}

fn check_entry(entry: &UserEntry) -> Result<User, String> {
    let name = &entry.name;
    if name.is_empty() || name.len() > MAX_USER_NAME || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("user name `{name}`: 1 to {MAX_USER_NAME} characters, no spaces"));
    }
    if name == CLUSTER_USER {
        return Err(format!("`{CLUSTER_USER}` is reserved for the cluster's own processes"));
    }
    PasswordHash::new(&entry.secret_hash).map_err(|e| format!("user `{name}`: secret_hash is not a PHC hash: {e}"))?;
    if entry.permissions.is_empty() {
        return Err(format!("user `{name}` has no permissions (client, admin)"));
    }
    let mut grants = Grants::NONE;
    for p in &entry.permissions {
        let g =
            Grants::parse_one(p).ok_or_else(|| format!("user `{name}`: unknown permission `{p}` (client, admin)"))?;
        grants = grants.with(g);
    }
    Ok(User { hash: entry.secret_hash.clone(), grants })
}

fn read(path: &Path) -> Result<String, AuthError> {
    std::fs::read_to_string(path).map_err(|source| AuthError::Read { path: path.display().to_string(), source })
}

fn parse_err(path: &Path, reason: String) -> AuthError {
    AuthError::Parse { path: path.display().to_string(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalties_double_up_to_the_cap() {
        assert_eq!(penalty(1), Duration::from_millis(100));
        assert_eq!(penalty(2), Duration::from_millis(200));
        assert_eq!(penalty(3), Duration::from_millis(400));
        assert_eq!(penalty(10), MAX_PENALTY);
        assert_eq!(penalty(u32::MAX), MAX_PENALTY);
    }

    #[test]
    fn the_dummy_hash_parses() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[tokio::test]
    async fn users_and_the_cluster_secret_are_checked() {
        let dir = std::env::temp_dir().join(format!("shardline-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let users = dir.join("users.toml");
        let entries = [
            UserEntry {
                name: "app".into(),
                secret_hash: hash_secret("app-pw").unwrap(),
                permissions: vec!["client".into()],
            },
            UserEntry {
                name: "ops".into(),
                secret_hash: hash_secret("ops-pw").unwrap(),
                permissions: vec!["admin".into()],
            },
        ];
        std::fs::write(&users, users_file(&entries)).unwrap();
        let secret = dir.join("cluster.secret");
        std::fs::write(&secret, "0123456789abcdef0123\n").unwrap();
        let gate = Gate::load(Some(&users), Some(&secret)).unwrap();
        let ip: IpAddr = [127, 0, 0, 1].into();
        let app = gate.check(ip, "app", &Secret("app-pw".into())).await.unwrap();
        assert!(app.client && !app.admin && !app.cluster);
        let ops = gate.check(ip, "ops", &Secret("ops-pw".into())).await.unwrap();
        assert!(ops.admin && !ops.client);
        assert_eq!(gate.check(ip, CLUSTER_USER, &Secret("0123456789abcdef0123".into())).await.unwrap(), Grants::ALL);
        assert!(gate.check(ip, "app", &Secret("ops-pw".into())).await.is_err());
        assert!(gate.check(ip, "nobody", &Secret("app-pw".into())).await.is_err());
        assert!(gate.check(ip, CLUSTER_USER, &Secret("0123456789abcdef".into())).await.is_err());
        std::fs::write(&users, "[[users]]\nname = \"cluster\"\nsecret_hash = \"x\"\npermissions = [\"admin\"]\n")
            .unwrap();
        assert!(Gate::load(Some(&users), None).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
