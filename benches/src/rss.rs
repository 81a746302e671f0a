//! Memory of the cluster's processes during a run, from `/proc/<pid>/status`: `VmHWM`
//! (the kernel's peak resident set) and `VmRSS` (now), sampled while the load runs.
//!
//! Nodes and the balancer report their pid in STATS; failing that, the balancer is found as the process holding the
//! listening socket of its port (`/proc/net/tcp` gives the socket's inode, `/proc/*/fd` the
//! process that has it open). Both only work for processes on this machine.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

/// One reading of a process's memory, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mem {
    /// Peak resident set since the process started (`VmHWM`).
    pub hwm_kib: u64,
    /// Resident set now (`VmRSS`).
    pub rss_kib: u64,
}

/// Reads `VmHWM` and `VmRSS` from the text of a `/proc/<pid>/status` file.
pub fn parse_status(text: &str) -> Option<Mem> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some(Mem { hwm_kib: field("VmHWM:")?, rss_kib: field("VmRSS:")? })
}

/// The memory of process `pid` now, if it exists and is readable.
pub fn read(pid: u32) -> Option<Mem> {
    parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// The inode of the socket listening on `port` in a `/proc/net/tcp` (or tcp6) table.
pub fn listening_inode(table: &str, port: u16) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local_port = f.get(1)?.rsplit(':').next()?;
        let listening = *f.get(3)? == "0A";
        (listening && u16::from_str_radix(local_port, 16).ok()? == port).then(|| f.get(9)?.parse().ok())?
    })
}

/// The pid of the process listening on TCP `port` on this machine, if it can be seen.
pub fn listening_pid(port: u16) -> Option<u32> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|t| listening_inode(&t, port))?;
    let want = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == want) {
                return Some(pid);
            }
        }
    }
    None
}

/// What a run saw of one process's memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcMem {
    /// `balancer` or the node's name.
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// Peak resident set over the process's life, read at the end of the run (KiB).
    pub hwm_kib: u64,
    /// Highest resident set sampled during the run (KiB).
    pub rss_max_kib: u64,
    /// Resident set at the end of the run (KiB).
    pub rss_end_kib: u64,
}

/// Samples a set of processes every `every` until stopped.
#[derive(Debug)]
pub struct Sampler {
    seen: Arc<Mutex<BTreeMap<String, ProcMem>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Starts sampling `procs` (name, pid).
    pub fn start(procs: Vec<(String, u32)>, every: Duration) -> Sampler {
        let seen: BTreeMap<String, ProcMem> = procs
            .iter()
            .map(|(name, pid)| {
                let m = ProcMem { name: name.clone(), pid: *pid, hwm_kib: 0, rss_max_kib: 0, rss_end_kib: 0 };
                (name.clone(), m)
            })
            .collect();
        let seen = Arc::new(Mutex::new(seen));
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                sample(&shared);
            }
        });
        Sampler { seen, task }
    }

    /// Stops sampling and returns the last reading of every process still readable.
    pub fn finish(self) -> Vec<ProcMem> {
        self.task.abort();
        sample(&self.seen);
        let seen = self.seen.lock().expect("sampler lock");
        seen.values().filter(|m| m.hwm_kib > 0).cloned().collect()
    }
}

fn sample(seen: &Mutex<BTreeMap<String, ProcMem>>) {
    let mut seen = seen.lock().expect("sampler lock");
    for m in seen.values_mut() {
        if let Some(now) = read(m.pid) {
            m.hwm_kib = m.hwm_kib.max(now.hwm_kib);
            m.rss_max_kib = m.rss_max_kib.max(now.rss_kib);
            m.rss_end_kib = now.rss_kib;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields() {
        let text = "Name:\tshardline-node\nVmPeak:\t  900 kB\nVmHWM:\t    4242 kB\nVmRSS:\t    4000 kB\n";
        assert_eq!(parse_status(text), Some(Mem { hwm_kib: 4242, rss_kib: 4000 }));
        assert_eq!(parse_status("Name: x\n"), None);
        let me = read(std::process::id()).expect("our own status");
        assert!(me.hwm_kib >= me.rss_kib && me.rss_kib > 0);
    }

    #[test]
    fn finds_the_listener_of_a_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1B58 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1\n   1: 0100007F:1B58 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 999 1\n";
        assert_eq!(listening_inode(table, 7000), Some(12345));
        assert_eq!(listening_inode(table, 7001), None);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(listening_pid(port), Some(std::process::id()));
    }
}
