//! The processes a test starts: where their binaries are, and stopping them by pid.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The directory holding the running test's binaries: `target/<profile>`.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps").to_path_buf()
}

/// Makes sure each `(package, binary)` exists beside the tests, building missing ones
/// with the cargo running the tests (one `cargo build` for all that are missing).
pub fn ensure_binaries(bins: &[(&str, &str)]) {
    let missing: Vec<_> = bins.iter().filter(|(_, bin)| !target_dir().join(bin).exists()).collect();
    if missing.is_empty() {
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.arg("build");
    if target_dir().ends_with("release") {
        build.arg("--release");
    }
    for (package, bin) in &missing {
        build.args(["-p", package, "--bin", bin]);
    }
    let status = build.status().unwrap_or_else(|e| panic!("running cargo build: {e}"));
    for (_, bin) in &missing {
        let path = target_dir().join(bin);
        assert!(status.success() && path.exists(), "could not build {}", path.display());
    }
}

/// The servers `shardline up` starts, as `(package, binary)`.
pub const SERVERS: &[(&str, &str)] = &[
    ("shardline-coordinator", "shardline-coordinator"),
    ("shardline-balancer", "shardline-balancer"),
    ("shardline-storage-node", "shardline-node"),
];

/// Makes sure `shardline` and the servers it starts exist beside the tests.
pub fn ensure_cluster_binaries() {
    let mut bins = vec![("shardline", "shardline")];
    bins.extend_from_slice(SERVERS);
    ensure_binaries(&bins);
}

/// Sends signal `sig` to process `pid` (ignoring a process that is already gone).
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid and a signal number has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Every live process (but this one) whose command line names `dir`: the processes a
/// cluster started under a test's directory, which may outlive their parent.
pub fn pids_naming(dir: &Path) -> Vec<i32> {
    let marker = dir.to_string_lossy().into_owned();
    let me = std::process::id() as i32;
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        if pid == me {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&marker) && !stat.contains(") Z") {
            pids.push(pid);
        }
    }
    pids
}

/// Kills (SIGKILL) every process naming a directory when dropped, whoever started them.
#[derive(Debug)]
pub struct KillNaming(pub PathBuf);

impl Drop for KillNaming {
    fn drop(&mut self) {
        for pid in pids_naming(&self.0) {
            signal(pid, libc::SIGKILL);
        }
    }
}

/// What a finished command left: its exit code and its output.
#[derive(Debug)]
pub struct Finished {
    /// The exit code (None: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `command` (stdin closed, output captured in files, so no pipe can fill up), killing
/// it and panicking if it has not finished within `limit`.
pub fn run_bounded(command: &mut Command, limit: Duration) -> Finished {
    let dir = std::env::temp_dir().join(format!("shardline-run-{}-{}", std::process::id(), unique()));
    std::fs::create_dir_all(&dir).expect("a directory for the output");
    let (out, err) = (dir.join("out"), dir.join("err"));
    let child = command
        .stdin(Stdio::null())
        .stdout(File::create(&out).expect("stdout file"))
        .stderr(File::create(&err).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    let mut guard = ChildGuard::new(child);
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = guard.child().try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "{command:?} did not finish within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let finished = Finished {
        code: status.code(),
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
    };
    let _ = std::fs::remove_dir_all(&dir);
    finished
}

/// A number not handed out before in this process.
fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A child process that is killed (SIGKILL, by its pid) and reaped when dropped, so a
/// failing test leaves nothing running.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    /// Guards `child`.
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard { child: Some(child) }
    }

    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// The child itself, e.g. to wait for it or take its pipes.
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("a guarded child")
    }

    /// Gives the child up unguarded (it is no longer killed on drop).
    pub fn release(mut self) -> Child {
        self.child.take().expect("a guarded child")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_guard_kills_its_child() {
        let guard = ChildGuard::new(Command::new("sleep").arg("30").spawn().expect("sleep"));
        let pid = guard.pid();
        drop(guard);
        // SAFETY: kill(2) with signal 0 only checks whether the pid exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "the child {pid} is gone once the guard is dropped");
    }
}
