//! Storage nodes as Docker containers, through the Docker Engine API (bollard).
//!
//! Each node is a container `<prefix>-node-<name>` from an image built offline (no pull),
//! on one user-defined network, with its data on a named volume of the same name mounted
//! at `/data`. Peers reach it as `<container name>:7200` through Docker's DNS, so the
//! address outlives restarts (a restarted container may get another IP). Everything
//! created carries the label `shardline.managed=true`, plus `shardline.prefix`,
//! `shardline.component=node` and `shardline.node`, so `make clean` (and tests) find
//! exactly what Shardline made. The directories holding the credentials the nodes are
//! given ([`DockerConfig::shared_dirs`]) are mounted read-only at the same path: the
//! coordinator, itself in a container, must see them at their host path.
//!
//! - `start` creates the volume and the container if missing, or starts a stopped
//!   container: a killed node comes back on its volume, recovers and catches up.
//! - `remove` stops and deletes the container and its volume.
//! - `shutdown` leaves the containers running: whoever runs the coordinator (the compose
//!   stack) owns their lifecycle.

use std::collections::HashMap;

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures::future::BoxFuture;
use futures::FutureExt;
use tracing::info;

use super::{NodeSpec, SpawnError, Spawner};

/// The label on everything Shardline creates in Docker.
pub const MANAGED_LABEL: &str = "shardline.managed";

/// The port a node listens on inside its container.
pub const NODE_PORT: u16 = 7200;

/// Docker's longest container name that is still one DNS label.
const MAX_NAME: usize = 63;

/// Where and how the Docker spawner runs nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// The image holding `shardline-node` (built locally; never pulled).
    pub image: String,
    /// The user-defined network the coordinator and the nodes share.
    pub network: String,
    /// Prefix of container and volume names, and the `shardline.prefix` label.
    pub prefix: String,
    /// Extra arguments for every node (after `--id`, `--listen`, `--data-dir`).
    pub node_args: Vec<String>,
    /// Host directories mounted read-only into every node container at the same path (the
    /// credentials and certificates `node_args` name).
    pub shared_dirs: Vec<String>,
}

impl DockerConfig {
    /// Image `shardline:latest` on network `shardline`, names prefixed `shardline`.
    pub fn new(image: impl Into<String>, network: impl Into<String>) -> DockerConfig {
        DockerConfig {
            image: image.into(),
            network: network.into(),
            prefix: "shardline".into(),
            node_args: Vec::new(),
            shared_dirs: Vec::new(),
        }
    }
}

/// Why the Docker spawner could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DockerError {
    /// The Docker Engine did not answer (is /var/run/docker.sock mounted?).
    #[error("cannot reach the Docker engine: {0}")]
    Engine(#[from] BollardError),
    /// The node image is not on this engine (build it: `make images`).
    #[error("image {0} is not on this Docker engine (build it with `make images`; nothing is pulled)")]
    NoImage(String),
    /// The network does not exist.
    #[error("Docker network {0} does not exist")]
    NoNetwork(String),
    /// The prefix cannot start a container name.
    #[error("prefix {0:?} is not usable in container names (want [a-z0-9][a-z0-9-]*)")]
    BadPrefix(String),
}

/// Runs storage nodes as containers on one Docker network.
#[derive(Debug)]
pub struct DockerSpawner {
    docker: Docker,
    cfg: DockerConfig,
}

impl DockerSpawner {
    /// Connects to the local engine (`DOCKER_HOST` or /var/run/docker.sock), negotiates the
    /// API version down to the engine's, and checks that the image and network exist.
    pub async fn connect(cfg: DockerConfig) -> Result<DockerSpawner, DockerError> {
        let valid = cfg.prefix.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && cfg.prefix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid || cfg.prefix.len() > 30 {
            return Err(DockerError::BadPrefix(cfg.prefix));
        }
        let docker = Docker::connect_with_unix_defaults()?.negotiate_version().await?;
        if let Err(e) = docker.inspect_image(&cfg.image).await {
            return Err(if is_not_found(&e) { DockerError::NoImage(cfg.image) } else { e.into() });
        }
        if let Err(e) = docker.inspect_network(&cfg.network, None).await {
            return Err(if is_not_found(&e) { DockerError::NoNetwork(cfg.network) } else { e.into() });
        }
        info!(image = %cfg.image, network = %cfg.network, prefix = %cfg.prefix, "docker spawner ready");
        Ok(DockerSpawner { docker, cfg })
    }

    /// The container (and volume) name of node `name`.
    pub fn container_name(&self, name: &str) -> String {
        container_name(&self.cfg.prefix, name)
    }

    fn labels(&self, name: &str) -> HashMap<String, String> {
        HashMap::from([
            (MANAGED_LABEL.to_owned(), "true".to_owned()),
            ("shardline.prefix".to_owned(), self.cfg.prefix.clone()),
            ("shardline.component".to_owned(), "node".to_owned()),
            ("shardline.node".to_owned(), name.to_owned()),
        ])
    }

    async fn create(&self, node: &NodeSpec, container: &str) -> Result<(), BollardError> {
        let volume = VolumeCreateRequest {
            name: Some(container.to_owned()),
            labels: Some(self.labels(&node.name)),
            ..Default::default()
        };
        self.docker.create_volume(volume).await?;
        let port = node.addr.rsplit_once(':').map_or(NODE_PORT.to_string(), |(_, p)| p.to_owned());
        let listen = format!("0.0.0.0:{port}");
        let mut cmd: Vec<String> = ["shardline-node", "--id", &node.name, "--listen", &listen, "--data-dir", "/data"]
            .into_iter()
            .map(String::from)
            .collect();
        cmd.extend(self.cfg.node_args.iter().cloned());
        let body = ContainerCreateBody {
            image: Some(self.cfg.image.clone()),
            cmd: Some(cmd),
            hostname: Some(container.to_owned()),
            labels: Some(self.labels(&node.name)),
            host_config: Some(HostConfig {
                binds: Some(
                    std::iter::once(format!("{container}:/data"))
                        .chain(self.cfg.shared_dirs.iter().map(|d| format!("{d}:{d}:ro")))
                        .collect(),
                ),
                network_mode: Some(self.cfg.network.clone()),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(self.cfg.network.clone(), EndpointSettings::default())])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(container).build();
        match self.docker.create_container(Some(options), body).await {
            Ok(_) => Ok(()),
            // Created meanwhile by a concurrent start: it only needs starting.
            Err(e) if status(&e) == Some(409) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Spawner for DockerSpawner {
    fn address_for(&self, name: &str) -> Result<String, SpawnError> {
        Ok(format!("{}:{NODE_PORT}", self.container_name(name)))
    }

    fn start(&self, node: &NodeSpec) -> BoxFuture<'_, Result<(), SpawnError>> {
        let node = node.clone();
        async move {
            let container = self.container_name(&node.name);
            let fail = |e: BollardError| SpawnError::Start { name: node.name.clone(), reason: e.to_string() };
            match self.docker.inspect_container(&container, None).await {
                Ok(info) if info.state.as_ref().and_then(|s| s.running) == Some(true) => return Ok(()),
                Ok(_) => {}
                Err(e) if is_not_found(&e) => self.create(&node, &container).await.map_err(fail)?,
                Err(e) => return Err(fail(e)),
            }
            match self.docker.start_container(&container, None).await {
                // 304: already running.
                Ok(()) => {}
                Err(e) if status(&e) == Some(304) => {}
                Err(e) => return Err(fail(e)),
            }
            info!(node = %node.name, %container, "started node container");
            Ok(())
        }
        .boxed()
    }

    fn remove(&self, node: &NodeSpec) -> BoxFuture<'_, Result<(), SpawnError>> {
        let node = node.clone();
        async move {
            let container = self.container_name(&node.name);
            let fail = |e: BollardError| SpawnError::Stop { name: node.name.clone(), reason: e.to_string() };
            let stop = StopContainerOptionsBuilder::new().t(2).build();
            match self.docker.stop_container(&container, Some(stop)).await {
                Ok(()) => {}
                Err(e) if matches!(status(&e), Some(304 | 404)) => {}
                Err(e) => return Err(fail(e)),
            }
            let force = RemoveContainerOptionsBuilder::new().force(true).build();
            match self.docker.remove_container(&container, Some(force)).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(fail(e)),
            }
            let force = RemoveVolumeOptionsBuilder::new().force(true).build();
            match self.docker.remove_volume(&container, Some(force)).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(fail(e)),
            }
            info!(node = %node.name, %container, "removed node container and volume");
            Ok(())
        }
        .boxed()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        async { info!("leaving node containers running; `make clean` removes them") }.boxed()
    }
}

/// `<prefix>-node-<name>`, safe for Docker and DNS: lowercase letters, digits and `-`, at
/// most 63 characters. Docker's DNS ignores case, so a name that had to change (case,
/// other characters, length) gets a hash of the original appended: distinct names never
/// share a container.
pub fn container_name(prefix: &str, name: &str) -> String {
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let base = format!("{prefix}-node-");
    if safe == name && base.len() + safe.len() <= MAX_NAME {
        return base + &safe;
    }
    let hash = format!("-{:08x}", fnv1a(name.as_bytes()) as u32);
    let room = MAX_NAME.saturating_sub(base.len() + hash.len());
    let kept: String = safe.chars().take(room).collect();
    base + kept.trim_end_matches('-') + &hash
}

/// FNV-1a: stable across Rust releases, unlike `DefaultHasher`; names must not move.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn status(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn is_not_found(e: &BollardError) -> bool {
    status(e) == Some(404)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_docker_safe_distinct_and_stable() {
        assert_eq!(container_name("shardline", "node7"), "shardline-node-node7");
        let a = container_name("shardline", "Server0");
        let b = container_name("shardline", "server0");
        assert_ne!(a, b, "Docker's DNS ignores case: these must not collide");
        assert!(a.starts_with("shardline-node-server0-"), "{a}");
        assert_eq!(a, container_name("shardline", "Server0"), "stable");
        assert_ne!(container_name("p", "a_b"), container_name("p", "a.b"));
        let long = container_name("shardline-t123", &"X".repeat(200));
        assert!(long.len() <= MAX_NAME, "{long}");
        for n in [&a, &b, &long] {
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{n}");
        }
    }
}
