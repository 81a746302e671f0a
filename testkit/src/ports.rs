//! Ports nobody listens on right now, for servers a test starts.
//!
//! Every port comes from below the kernel's ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`, 32768 and up by default). A test picks a port,
//! lets it go, and only then starts the server that binds it. A port from the ephemeral
//! range could be taken in that window by any outgoing connection (the tests make many),
//! and the server would fail to start with "address in use". Below the range, only an
//! explicit bind can take it, and within one process [`claim`] hands no port out twice.
//!
//! ```text
//! 10000 ..            single ports (free_port, free_service_ports), stepped per process
//! 11000 ..            their metrics ports, 1000 above
//! 20000 .. 31999      storage-node ranges: 16 ports and 16 metrics ports 1000 above,
//!                     slots 2000 apart
//! ```

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Mutex;

/// The first port single ports are picked from.
const SINGLE_LOW: u16 = 10_000;
/// Single ports stay below this, so their metrics ports (1000 above) stay below the node
/// ranges.
const SINGLE_HIGH: u16 = 18_990;
/// The first node range's first port.
const NODES_LOW: u16 = 20_000;
/// Node ranges: slots 2000 apart, so one cluster's metrics ports are never another's
/// node ports.
const NODE_SLOTS: u16 = 6;

/// Whether `port` on 127.0.0.1 can be bound right now.
fn is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A small number for this process, so two test processes started together (by hand, or
/// a parallel runner) start their scans in different places.
fn spread() -> u16 {
    (std::process::id() % 97) as u16
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

/// The first of `n` consecutive ports, none handed out before by this process, all free
/// now, and (with `metrics`) each with a free port 1000 above it that no one was handed.
fn pick_single(n: u16, metrics: bool) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = SINGLE_HIGH - SINGLE_LOW - n;
    for _ in 0..span {
        let step = NEXT.fetch_add(n.max(1), Ordering::Relaxed) % span;
        let port = SINGLE_LOW + (spread() * 89 + step) % span;
        let ports = port..port + n;
        let above = if metrics { port + 1000..port + 1000 + n } else { 0..0 };
        if ports.clone().chain(above.clone()).all(is_free) && claim(ports.chain(above)) {
            return port;
        }
    }
    panic!("no {n} free ports in a row on 127.0.0.1 between {SINGLE_LOW} and {SINGLE_HIGH}");
}

/// A port nobody listens on right now, below the ephemeral range, never the same port
/// twice in one process (two tests of one binary must not talk to one server).
pub fn free_port() -> u16 {
    pick_single(1, false)
}

/// A free port whose next `n - 1` ports are free too.
pub fn free_port_range(n: u16) -> u16 {
    pick_single(n, false)
}

/// A free port whose metrics port (`shardline up` serves metrics at each port plus 1000)
/// is free too.
pub fn free_service_port() -> u16 {
    free_service_ports(1)
}

/// A free port whose next `n - 1` ports are free too, each with its metrics port (1000
/// above): for `shardline up --balancers n`.
pub fn free_service_ports(n: u16) -> u16 {
    pick_single(n, true)
}

/// The start of a range of ports for storage nodes, different for each call in this
/// process, whose first 16 ports are free now, and so are the 16 ports 1000 above them
/// (the nodes' metrics).
pub fn node_base_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    for _ in 0..200 {
        let slot = NEXT.fetch_add(1, Ordering::Relaxed) % NODE_SLOTS;
        let base = NODES_LOW + slot * 2000 + (spread() % 24) * 40;
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

    #[test]
    fn every_port_is_below_the_ephemeral_range_and_handed_out_once() {
        let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
            .unwrap_or(32_768);
        if low < 32_000 {
            // Nothing below such a range is left for tests to pick from safely.
            eprintln!("skipped: this machine's ephemeral ports start at {low}, below the test ports");
            return;
        }
        let singles: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let distinct: BTreeSet<u16> = singles.iter().copied().collect();
        assert_eq!(distinct.len(), singles.len(), "no port twice: {singles:?}");
        let service = free_service_ports(4);
        let nodes = node_base_port();
        let highest = [singles.iter().copied().max().unwrap_or(0), service + 1003, nodes + 1015];
        for port in highest {
            assert!(port < low, "port {port} is in the ephemeral range (from {low})");
        }
        assert!(!distinct.contains(&service), "a service port was handed out singly before");
    }
}
