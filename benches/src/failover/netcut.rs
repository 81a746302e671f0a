//! A real network partition of one local process, for the process-mode `partition` fault.
//!
//! Nodes of a `shardline up` cluster all listen on 127.0.0.1, so a cut cannot be made by
//! address. It is made by process: the node is moved into a cgroup of the `net_cls`
//! controller with a class id of its own (which the kernel also stamps on the sockets it
//! already has), and two iptables rules drop every packet it sends (`-m cgroup --cgroup`)
//! and every packet sent to its port. Its established connections stall, as they would
//! behind a broken switch; nothing is closed or reset. Moving it back and deleting the
//! rules heals the cut.
//!
//! This needs root, `iptables` with the `cgroup` match, and the `net_cls` controller (it is
//! mounted in a temporary directory when no hierarchy has it). [`NetCut::prepare`] checks
//! all of it by adding and removing the rule once, and says what is missing otherwise.

use std::path::PathBuf;
use std::process::Command;

use crate::error::BenchError;

/// The prepared cgroup and class id; removed (and the controller unmounted if it was
/// mounted here) on drop.
#[derive(Debug)]
pub struct NetCut {
    root: PathBuf,
    group: PathBuf,
    classid: u32,
    mounted: bool,
}

impl NetCut {
    /// Checks that a cut can be made here and prepares the cgroup.
    pub fn prepare() -> Result<NetCut, BenchError> {
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(unsupported("it needs root (iptables rules and a net_cls cgroup)"));
        }
        let (root, mounted) = match net_cls_mount() {
            Some(root) => (root, false),
            None => (mount_net_cls()?, true),
        };
        let classid = 0x5e1b_0000 | (std::process::id() & 0xffff);
        let group = root.join(format!("shardline-bench-{}", std::process::id()));
        let cut = NetCut { root, group, classid, mounted };
        std::fs::create_dir_all(&cut.group).map_err(|e| BenchError::io(cut.group.display(), e))?;
        let classid_file = cut.group.join("net_cls.classid");
        std::fs::write(&classid_file, cut.classid.to_string())
            .map_err(|e| BenchError::io(classid_file.display(), e))?;
        // A rule added and removed proves the cgroup match works with this iptables.
        iptables("-I", &cut.output_rule()).map_err(|e| unsupported(&e))?;
        iptables("-D", &cut.output_rule()).map_err(|e| unsupported(&e))?;
        Ok(cut)
    }

    fn output_rule(&self) -> Vec<String> {
        let mut rule = vec!["OUTPUT".to_owned(), "-m".into(), "cgroup".into(), "--cgroup".into()];
        rule.push(format!("{:#x}", self.classid));
        rule.extend(self.tail());
        rule
    }

    fn input_rule(&self, port: u16) -> Vec<String> {
        let mut rule: Vec<String> = ["INPUT", "-p", "tcp", "--dport"].map(String::from).to_vec();
        rule.push(port.to_string());
        rule.extend(self.tail());
        rule
    }

    fn tail(&self) -> Vec<String> {
        let tag = format!("shardline-bench-{}", std::process::id());
        ["-m", "comment", "--comment", &tag, "-j", "DROP"].map(String::from).to_vec()
    }

    /// Cuts process `pid`, listening on `port`, off until the returned [`Cut`] heals (or is
    /// dropped).
    pub fn cut(&self, pid: u32, port: u16) -> Result<Cut<'_>, BenchError> {
        let procs = self.group.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).map_err(|e| BenchError::io(procs.display(), e))?;
        let mut cut = Cut { net: self, pid, rules: Vec::new() };
        for rule in [self.output_rule(), self.input_rule(port)] {
            iptables("-I", &rule).map_err(BenchError::Process)?;
            cut.rules.push(rule);
        }
        Ok(cut)
    }
}

impl Drop for NetCut {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.group);
        if self.mounted {
            let _ = Command::new("umount").arg(&self.root).status();
            let _ = std::fs::remove_dir(&self.root);
        }
    }
}

/// One process cut off; [`Cut::heal`] (or dropping it) gives it its network back.
#[derive(Debug)]
pub struct Cut<'a> {
    net: &'a NetCut,
    pid: u32,
    rules: Vec<Vec<String>>,
}

impl Cut<'_> {
    /// Removes the rules and moves the process back to the root cgroup.
    pub fn heal(mut self) -> Result<(), BenchError> {
        self.undo()
    }

    fn undo(&mut self) -> Result<(), BenchError> {
        let mut first_error = None;
        for rule in self.rules.drain(..) {
            if let Err(e) = iptables("-D", &rule) {
                first_error.get_or_insert(BenchError::Process(e));
            }
        }
        // The process may be gone (killed and restarted by the coordinator meanwhile).
        let _ = std::fs::write(self.net.root.join("cgroup.procs"), self.pid.to_string());
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Cut<'_> {
    fn drop(&mut self) {
        let _ = self.undo();
    }
}

fn unsupported(why: &str) -> BenchError {
    BenchError::InvalidSpec(format!(
        "partition is not supported in process mode here: {why}; run it against the Docker stack \
         (--docker), or leave it out (--kinds kill,pause)"
    ))
}

/// Runs `iptables -w <op> <rule>`.
fn iptables(op: &str, rule: &[String]) -> Result<(), String> {
    let out = Command::new("iptables")
        .arg("-w")
        .arg(op)
        .args(rule)
        .output()
        .map_err(|e| format!("cannot run iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("iptables {op} {}: {}", rule.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Where a cgroup v1 hierarchy with the `net_cls` controller is mounted, if anywhere.
fn net_cls_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 3 && f[2] == "cgroup" && f[3].split(',').any(|o| o == "net_cls")).then(|| PathBuf::from(f[1]))
    })
}

/// Mounts the `net_cls` controller in a directory of its own.
fn mount_net_cls() -> Result<PathBuf, BenchError> {
    let dir = std::env::temp_dir().join(format!("shardline-bench-net_cls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::io(dir.display(), e))?;
    let out = Command::new("mount")
        .args(["-t", "cgroup", "-o", "net_cls", "net_cls"])
        .arg(&dir)
        .output()
        .map_err(|e| unsupported(&format!("cannot run mount: {e}")))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir(&dir);
        let why = String::from_utf8_lossy(&out.stderr);
        return Err(unsupported(&format!("the net_cls cgroup controller cannot be mounted: {}", why.trim())));
    }
    Ok(dir)
}
