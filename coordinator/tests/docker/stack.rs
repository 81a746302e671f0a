//! One Shardline stack on Docker for one test run, brought up the way `make all` does it
//! (`make up`: docker-compose, wait for the balancer, init with the CLI) under a prefix of
//! its own: compose project, network `<prefix>-net`, containers and volumes `<prefix>-…`,
//! a free port for the balancer. Parallel runs and a developer's own `make all` never meet.
//!
//! Dropping the [`Stack`] (also on panic) runs `make clean CLEAN_SCOPE=prefix`, which
//! removes this run's containers, volumes and network and nothing else.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use shardline_coordinator::spawner::container_name;

/// The image `make images` builds.
pub(crate) const IMAGE: &str = "shardline:latest";

/// Why the Docker tests cannot run here, if they cannot: no engine, no compose, no make.
pub(crate) fn unavailable() -> Option<String> {
    let checks: [(&str, &[&str]); 3] = [
        ("docker", &["version", "--format", "{{.Server.Version}}"]),
        ("docker-compose", &["version"]),
        ("make", &["--version"]),
    ];
    for (program, args) in checks {
        match Command::new(program).args(args).stdin(Stdio::null()).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                let why = String::from_utf8_lossy(&out.stderr);
                return Some(format!("`{program}` does not answer: {}", why.lines().next().unwrap_or("")));
            }
            Err(e) => return Some(format!("no `{program}` here: {e}")),
        }
    }
    None
}

/// The workspace root (where the Makefile is).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Runs `make images`, so the image holds the code under test: a no-op for cargo and
/// cached layers for Docker when nothing changed, a static release build the first time.
pub(crate) fn ensure_images() {
    eprintln!("building {IMAGE} with `make images` (a release build)");
    let started = Instant::now();
    let status = Command::new("make").arg("images").current_dir(root()).status().expect("running make images");
    assert!(status.success(), "make images failed");
    eprintln!("make images took {:.0} s", started.elapsed().as_secs_f64());
}

/// A stack of this test run; removed on drop.
pub(crate) struct Stack {
    /// Names everything of this run.
    pub prefix: String,
    /// The balancer's port on 127.0.0.1.
    pub port: u16,
}

impl Stack {
    /// A stack with a fresh prefix and port, not started yet (dropping it cleans up).
    pub(crate) fn new() -> Stack {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let prefix = format!("sltest-{}-{:04x}", std::process::id(), nanos & 0xffff);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Stack { prefix, port }
    }

    /// Runs `make <target>` for this stack; returns its stdout, panics if it fails.
    pub(crate) fn make(&self, target: &str, extra: &[&str]) -> String {
        let out = self.make_output(target, extra);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "make {target} failed:\n{text}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.compose_logs()
        );
        text
    }

    fn make_output(&self, target: &str, extra: &[&str]) -> Output {
        // Under `make test` the outer make exports its own SHARDLINE_* (the default stack's):
        // each is set here on the command line, which wins over the environment.
        Command::new("make")
            .args(["--no-print-directory", target])
            .arg(format!("SHARDLINE_PREFIX={}", self.prefix))
            .arg(format!("SHARDLINE_PORT={}", self.port))
            .arg(format!("SHARDLINE_AUTH={}", self.auth_dir().display()))
            .arg(format!("SHARDLINE_IMAGE={IMAGE}"))
            .args(extra)
            .current_dir(root())
            .stdin(Stdio::null())
            .output()
            .expect("running make")
    }

    /// The credentials `make up` made for this stack (`SHARDLINE_AUTH`).
    pub(crate) fn auth_dir(&self) -> PathBuf {
        root().join("docker/auth").join(&self.prefix)
    }

    /// The stack's admin credential file.
    pub(crate) fn admin_credentials(&self) -> PathBuf {
        self.auth_dir().join("admin.credentials")
    }

    /// Makes the stack's admin credential this process's own (every `Conn` presents it).
    pub(crate) fn present_admin(&self) {
        let admin = shardline_protocol::net::auth::Credential::load(&self.admin_credentials())
            .expect("make up wrote the admin credential");
        shardline_protocol::net::auth::set_outgoing(Some(admin));
    }

    /// The balancer's address on the host.
    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The Docker network of this stack.
    pub(crate) fn network(&self) -> String {
        format!("{}-net", self.prefix)
    }

    /// The container (and volume) of server `name`.
    pub(crate) fn container(&self, name: &str) -> String {
        container_name(&self.prefix, name)
    }

    /// The node containers of this stack, running or not.
    pub(crate) async fn node_containers(&self) -> Vec<String> {
        let filter = format!("label=shardline.prefix={}", self.prefix);
        let out = docker(&[
            "ps",
            "-a",
            "--filter",
            &filter,
            "--filter",
            "label=shardline.component=node",
            "--format",
            "{{.Names}}",
        ])
        .await
        .expect("docker ps");
        let mut names: Vec<String> = out.lines().map(str::to_owned).collect();
        names.sort();
        names
    }

    /// What of this run is still in Docker: containers, volumes, networks (by label and name).
    pub(crate) fn leftovers(&self) -> Vec<String> {
        let label = format!("label=shardline.prefix={}", self.prefix);
        let name = format!("name={}", self.prefix);
        let queries: [&[&str]; 6] = [
            &["ps", "-aq", "--filter", &label],
            &["ps", "-aq", "--filter", &name],
            &["volume", "ls", "-q", "--filter", &label],
            &["volume", "ls", "-q", "--filter", &name],
            &["network", "ls", "-q", "--filter", &label],
            &["network", "ls", "-q", "--filter", &name],
        ];
        let mut left = Vec::new();
        for args in queries {
            let out = Command::new("docker").args(args).output().expect("docker");
            let text = String::from_utf8_lossy(&out.stdout);
            left.extend(text.lines().map(|l| format!("{}: {l}", args[..2].join(" "))));
        }
        left
    }

    /// The coordinator's and balancer's last log lines, for failure messages.
    pub(crate) fn compose_logs(&self) -> String {
        let out = Command::new("docker-compose")
            .args(["-p", &self.prefix, "-f", "docker/docker-compose.yml", "logs", "--no-color", "--tail", "40"])
            .env("SHARDLINE_PREFIX", &self.prefix)
            .env("SHARDLINE_PORT", self.port.to_string())
            .current_dir(root())
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- compose logs of {} ---\n{}", self.prefix, self.compose_logs());
        }
        let out = self.make_output("clean", &["CLEAN_SCOPE=prefix"]);
        if !out.status.success() {
            eprintln!("make clean for {} failed: {}", self.prefix, String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// Runs `docker ARGS`; its stdout, or its stderr as the error.
pub(crate) async fn docker(args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// A node's STATS, read inside its container (`docker exec … shardline stats` on its
/// loopback): works while the node is cut off from every network.
pub(crate) async fn node_stats(
    stack: &Stack,
    container: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    // The node container has the stack's credentials mounted at their host path.
    let credentials = stack.admin_credentials();
    let credentials = credentials.to_str().expect("a UTF-8 path");
    let exec = ["exec", container, "shardline", "--addr", "127.0.0.1:7200", "--credentials", credentials];
    let out = tokio::time::timeout(
        Duration::from_secs(15),
        docker(&[&exec[..], &["--timeout", "3", "--json", "stats"]].concat()),
    )
    .await
    .map_err(|_| format!("docker exec {container}: no answer in 15 s"))??;
    match serde_json::from_str(&out) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err(format!("stats of {container} are not a JSON object: {out}")),
    }
}

/// One stat as text ("" if absent).
pub(crate) fn stat(stats: &serde_json::Map<String, serde_json::Value>, key: &str) -> String {
    stats.get(key).and_then(|v| v.as_str()).unwrap_or("").to_owned()
}
