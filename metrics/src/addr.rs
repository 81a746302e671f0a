//! The `--metrics-addr` flag's value.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// Where a process serves `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAddr {
    /// Not served.
    Off,
    /// On the service's own host, at its port plus this offset (the default, `+1000`), so
    /// every process of a cluster gets a port of its own without being told one.
    Offset(u16),
    /// At this address.
    At(SocketAddr),
}

/// The default: the service port plus 1000 (balancer 7000 → 8000, coordinator 7100 →
/// 8100, nodes 7200.. → 8200..).
pub const DEFAULT_OFFSET: u16 = 1000;

impl Default for MetricsAddr {
    fn default() -> MetricsAddr {
        MetricsAddr::Offset(DEFAULT_OFFSET)
    }
}

/// A `--metrics-addr` value that is neither an address, `+N` nor `off`.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a metrics address: give HOST:PORT, +N (the service port plus N) or off")]
pub struct BadMetricsAddr(String);

impl FromStr for MetricsAddr {
    type Err = BadMetricsAddr;

    fn from_str(s: &str) -> Result<MetricsAddr, BadMetricsAddr> {
        if s.eq_ignore_ascii_case("off") || s.eq_ignore_ascii_case("none") {
            return Ok(MetricsAddr::Off);
        }
        if let Some(offset) = s.strip_prefix('+') {
            return offset.parse().map(MetricsAddr::Offset).map_err(|_| BadMetricsAddr(s.to_owned()));
        }
        s.parse().map(MetricsAddr::At).map_err(|_| BadMetricsAddr(s.to_owned()))
    }
}

impl fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricsAddr::Off => f.write_str("off"),
            MetricsAddr::Offset(n) => write!(f, "+{n}"),
            MetricsAddr::At(addr) => write!(f, "{addr}"),
        }
    }
}

impl MetricsAddr {
    /// The address to bind for a service listening on `listen`; `None` when off, or when
    /// the offset runs past the last port.
    pub fn resolve(self, listen: SocketAddr) -> Option<SocketAddr> {
        match self {
            MetricsAddr::Off => None,
            MetricsAddr::Offset(n) => listen.port().checked_add(n).map(|port| SocketAddr::new(listen.ip(), port)),
            MetricsAddr::At(addr) => Some(addr),
        }
    }

    /// Whether the address was given outright: failing to bind it is then an error, while
    /// a derived one that is taken only costs the process its metrics (a warning).
    pub fn explicit(self) -> bool {
        matches!(self, MetricsAddr::At(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!("off".parse::<MetricsAddr>().unwrap(), MetricsAddr::Off);
        assert_eq!("+1000".parse::<MetricsAddr>().unwrap(), MetricsAddr::Offset(1000));
        assert_eq!("0.0.0.0:9100".parse::<MetricsAddr>().unwrap(), MetricsAddr::At("0.0.0.0:9100".parse().unwrap()));
        assert!("+x".parse::<MetricsAddr>().is_err());
        assert!("localhost".parse::<MetricsAddr>().is_err());
    }

    #[test]
    fn an_offset_follows_the_service_address() {
        let listen: SocketAddr = "127.0.0.1:7200".parse().unwrap();
        assert_eq!(MetricsAddr::default().resolve(listen), Some("127.0.0.1:8200".parse().unwrap()));
        assert_eq!(MetricsAddr::Offset(60000).resolve(listen), None);
        assert_eq!(MetricsAddr::Off.resolve(listen), None);
        assert_eq!(MetricsAddr::default().to_string().parse::<MetricsAddr>().unwrap(), MetricsAddr::default());
    }
}
