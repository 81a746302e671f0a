//! Ports nobody listens on right now, picked by the kernel or probed in ranges.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Mutex;

/// Whether `port` on 127.0.0.1 can be bound right now.
fn is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A port nobody listens on right now: bind `127.0.0.1:0`, read the port, let it go.
/// Never the same port twice in one process: once let go, the kernel may hand the same
/// port to the next caller (another test of this binary) before the first one's server
/// has bound it, and the two tests would then talk to one server.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind an ephemeral port on 127.0.0.1")
            .port();
        if claim(port..port + 1) {
            return port;
        }
    }
    panic!("no ephemeral port this process has not handed out already");
}

/// Every port this process has handed out: singly, and in node ranges (which are reused
/// from call to call, so a single port must stay out of all of them).
static HANDED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Marks `ports` handed out, if none of them was: whether they were all new.
fn claim(ports: impl Iterator<Item = u16> + Clone) -> bool {
    let mut handed = HANDED.lock().expect("ports lock");
    if ports.clone().any(|p| handed.contains(&p)) {
        return false;
    }
    handed.extend(ports);
    true
}

/// Marks a node range handed out (it may have been before).
fn note(ports: impl Iterator<Item = u16>) {
    HANDED.lock().expect("ports lock").extend(ports);
}

/// A free port whose next `n - 1` ports are free too.
pub fn free_port_range(n: u16) -> u16 {
    for _ in 0..100 {
        let port = free_port();
        if port <= u16::MAX - n && (1..n).all(|i| is_free(port + i)) {
            return port;
        }
    }
    panic!("no {n} free ports in a row on 127.0.0.1");
}

/// A free port whose metrics port (`shardline up` serves metrics at each port plus 1000)
/// is free too.
pub fn free_service_port() -> u16 {
    free_service_ports(1)
}

/// A free port whose next `n - 1` ports are free too, each with its metrics port (1000
/// above): for `shardline up --balancers n`.
pub fn free_service_ports(n: u16) -> u16 {
    for _ in 0..100 {
        let port = free_port();
        if port <= u16::MAX - 1000 - n && (0..n).all(|i| (i == 0 || is_free(port + i)) && is_free(port + i + 1000)) {
            return port;
        }
    }
    panic!("no {n} free ports in a row with free ports 1000 above them");
}

/// The start of a range of ports for storage nodes, different for each call in this
/// process and each test process, whose first 16 ports are free now, and so are the 16
/// ports 1000 above them (the nodes' metrics). Ranges are 2000 apart, so one cluster's
/// metrics ports are never another's node ports.
pub fn node_base_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let spread = (std::process::id() % 500) as u16;
    for _ in 0..200 {
        let slot = NEXT.fetch_add(1, Ordering::Relaxed) % 15;
        let base = 20_000 + (spread * 40 + slot * 2000) % 30_000;
        let ports = (base..base + 16).chain(base + 1000..base + 1016);
        if ports.clone().all(is_free) {
            note(ports);
            return base;
        }
    }
    panic!("no free range of 16 ports found for the nodes");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_free_and_distinct() {
        let a = node_base_port();
        let b = node_base_port();
        assert_ne!(a, b, "two calls give two ranges");
        assert!((a..a + 16).all(is_free));
        let p = free_service_ports(3);
        assert!((p + 1..p + 3).all(is_free) && (p + 1000..p + 1003).all(is_free));
    }
}
