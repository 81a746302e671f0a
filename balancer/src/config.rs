//! The balancer's configuration: a validated value with documented defaults.

use std::sync::Arc;
use std::time::Duration;

use shardline_protocol::net::auth::{Credential, Gate};
use shardline_protocol::net::tls::ClientTls;
use shardline_protocol::net::Limits;
use shardline_protocol::net::Outgoing;
use shardline_protocol::{DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_PAYLOAD};

use crate::error::BalancerError;

/// Everything the balancer needs besides its listener.
#[derive(Debug, Clone)]
pub struct BalancerConfig {
    /// The coordinator's `host:port` (topology, admin operations), or several, comma-separated
    /// (coordinators on etcd: the balancer follows whichever leads).
    pub coordinator: String,
    /// Client connections served at once (default 1024).
    pub max_connections: usize,
    /// Requests one client connection may have in flight before `Overloaded` (default 1024).
    pub max_in_flight: usize,
    /// Largest frame payload accepted or sent (default 16 MiB).
    pub max_payload: usize,
    /// How long a request is retried across failovers before its last error is answered
    /// (default 5 s).
    pub retry_deadline: Duration,
    /// Multiplexed connections kept per node (default 2).
    pub pool_size: usize,
    /// How long connecting to a node may take (default 1 s).
    pub connect_timeout: Duration,
    /// How long one call to a node may wait for its answer (default 5 s: longer than a
    /// node's own write timeout, so its `Timeout` answer arrives first).
    pub call_timeout: Duration,
    /// How long an admin call to the coordinator may take (default 120 s: `Init` and
    /// `AddServers` start processes and copy data).
    pub admin_timeout: Duration,
    /// First pause between retries; doubles each time (default 10 ms).
    pub backoff_min: Duration,
    /// Longest pause between retries (default 200 ms).
    pub backoff_max: Duration,
    /// How long a client may take to send its first byte and authenticate (default 10 s).
    pub handshake_timeout: Duration,
    /// How long a client connection may stay silent with nothing in flight (default 300 s).
    pub idle_timeout: Duration,
    /// Who may connect and do what (default: open, no credentials asked).
    pub gate: Arc<Gate>,
    /// What the balancer presents to the nodes and the coordinator (default `None`: this
    /// process's own credential, [`shardline_protocol::net::auth::set_outgoing`]).
    pub credential: Option<Credential>,
    /// The CA the nodes' and coordinator's certificates must chain to (default `None`:
    /// this process's own, [`shardline_protocol::net::tls::set_outgoing`]; else in the clear).
    pub tls: Option<ClientTls>,
}

impl Default for BalancerConfig {
    fn default() -> BalancerConfig {
        BalancerConfig {
            coordinator: "127.0.0.1:7100".into(),
            max_connections: 1024,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_payload: DEFAULT_MAX_PAYLOAD,
            retry_deadline: Duration::from_millis(5000),
            pool_size: 2,
            connect_timeout: Duration::from_secs(1),
            call_timeout: Duration::from_secs(5),
            admin_timeout: Duration::from_secs(120),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(200),
            handshake_timeout: shardline_protocol::net::DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: shardline_protocol::net::DEFAULT_IDLE_TIMEOUT,
            gate: Arc::new(Gate::open()),
            credential: None,
            tls: None,
        }
    }
}

impl BalancerConfig {
    /// The defaults, with the coordinator at `coordinator`.
    pub fn new(coordinator: impl Into<String>) -> BalancerConfig {
        BalancerConfig { coordinator: coordinator.into(), ..BalancerConfig::default() }
    }

    /// The TLS and credential to present to the nodes and the coordinator:
    /// [`BalancerConfig::tls`] and [`BalancerConfig::credential`], else this process's own.
    pub fn outgoing(&self) -> Outgoing {
        Outgoing {
            tls: self.tls.clone().or_else(shardline_protocol::net::tls::outgoing),
            credential: self.credential.clone().or_else(shardline_protocol::net::auth::outgoing),
        }
    }

    /// The limits the client listener enforces.
    pub fn limits(&self) -> Limits {
        Limits {
            max_payload: self.max_payload,
            max_in_flight: self.max_in_flight,
            max_connections: self.max_connections,
            handshake_timeout: self.handshake_timeout,
            idle_timeout: self.idle_timeout,
        }
    }

    /// Checks that the values make sense together.
    pub fn validate(&self) -> Result<(), BalancerError> {
        let bad = |m: &str| Err(BalancerError::Config(m.into()));
        if self.coordinator.trim().is_empty() {
            return bad("the coordinator address is empty");
        }
        if self.max_connections == 0 || self.max_in_flight == 0 || self.pool_size == 0 {
            return bad("connections, requests in flight and the pool size must be above zero");
        }
        if self.pool_size > 64 {
            return bad("a pool of more than 64 connections per node is a mistake");
        }
        if self.max_payload < 1024 {
            return bad("frames must be allowed at least 1 KiB");
        }
        if self.connect_timeout.is_zero()
            || self.call_timeout.is_zero()
            || self.handshake_timeout.is_zero()
            || self.idle_timeout.is_zero()
        {
            return bad("timeouts must be above zero");
        }
        if self.backoff_min.is_zero() || self.backoff_max < self.backoff_min {
            return bad("the backoff must be above zero and its maximum at least its minimum");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_zeros_are_not() {
        BalancerConfig::default().validate().unwrap();
        let zero_pool = BalancerConfig { pool_size: 0, ..BalancerConfig::default() };
        assert!(zero_pool.validate().is_err());
        assert!(BalancerConfig::new(" ").validate().is_err());
    }
}
