//! Who may send what: the permission each frame kind needs, decided from the header alone.
//!
//! Three permissions, granted per user (`net::auth` checks credentials and keeps a
//! connection's [`Grants`]):
//!
//! | permission | lets a connection send |
//! |---|---|
//! | `client` | reads, writes, updates, deletes, status, stats, log, topology |
//! | `admin` | init, add, rm, failover/switchover (and status, stats, topology) |
//! | `cluster` | everything, control and peer messages included: only the cluster's own processes, by its internal secret |
//!
//! `Ping` and `Auth` need nothing: they are what an unauthenticated connection may send.
//!
//! ```
//! use shardline_protocol::access::{Grants, Need};
//! use shardline_protocol::{kind, Request};
//!
//! let app = Grants { client: true, ..Grants::NONE };
//! assert!(app.allows(Need::of_kind(kind::READ)));
//! assert!(!app.allows(Need::of_request(&Request::RemoveServers { n: 1, servers: vec![] })));
//! ```

use crate::message::{kind, ControlRequest, Message, PeerRequest, Request};

/// The user name the cluster's own processes authenticate as, with the internal secret.
pub const CLUSTER_USER: &str = "cluster";

/// What a request needs of the connection that sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: `Ping`, `Auth`.
    Nothing,
    /// A client operation.
    Client,
    /// An admin operation.
    Admin,
    /// Either permission: read-only views of the cluster (status, stats, topology).
    ClientOrAdmin,
    /// The cluster's internal secret: control and peer messages, and anything unknown.
    Cluster,
}

impl Need {
    /// What a frame of `kind` needs.
    pub fn of_kind(k: u8) -> Need {
        match k {
            kind::PING | kind::AUTH => Need::Nothing,
            kind::INIT | kind::ADD_SERVERS | kind::REMOVE_SERVERS | kind::FAILOVER => Need::Admin,
            kind::STATUS | kind::STATS | kind::GET_TOPOLOGY | kind::SUBSCRIBE_TOPOLOGY => Need::ClientOrAdmin,
            k if Request::owns_kind(k) => Need::Client,
            k if ControlRequest::owns_kind(k) || PeerRequest::owns_kind(k) => Need::Cluster,
            _ => Need::Cluster,
        }
    }

    /// What `request` needs (the text mode's requests, which have no frame).
    pub fn of_request(request: &Request) -> Need {
        match request {
            Request::Ping | Request::Auth { .. } => Need::Nothing,
            Request::Status | Request::Stats | Request::GetTopology { .. } | Request::SubscribeTopology => {
                Need::ClientOrAdmin
            }
            r if r.is_admin() => Need::Admin,
            _ => Need::Client,
        }
    }

    /// The permission's name, for errors.
    pub fn name(self) -> &'static str {
        match self {
            Need::Nothing => "none",
            Need::Client => "client",
            Need::Admin => "admin",
            Need::ClientOrAdmin => "client or admin",
            Need::Cluster => "cluster",
        }
    }
}

/// The permissions a connection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Grants {
    /// Client operations.
    pub client: bool,
    /// Admin operations.
    pub admin: bool,
    /// Control and peer messages (the cluster's own processes).
    pub cluster: bool,
}

impl Grants {
    /// No permission: an unauthenticated connection.
    pub const NONE: Grants = Grants { client: false, admin: false, cluster: false };
    /// Every permission: a server with no credentials configured, or the cluster's secret.
    pub const ALL: Grants = Grants { client: true, admin: true, cluster: true };

    /// Whether these grants cover `need`.
    pub fn allows(self, need: Need) -> bool {
        match need {
            Need::Nothing => true,
            _ if self.cluster => true,
            Need::Client => self.client,
            Need::Admin => self.admin,
            Need::ClientOrAdmin => self.client || self.admin,
            Need::Cluster => false,
        }
    }

    /// Whether nothing but `Ping` and `Auth` is allowed.
    pub fn is_none(self) -> bool {
        self == Grants::NONE
    }

    /// The grants' names, in a stable order.
    pub fn names(self) -> Vec<String> {
        let mut names = Vec::new();
        for (held, name) in [(self.client, "client"), (self.admin, "admin"), (self.cluster, "cluster")] {
            if held {
                names.push(name.to_owned());
            }
        }
        names
    }

    /// Parses one permission name into the grants it adds.
    pub fn parse_one(name: &str) -> Option<Grants> {
        match name {
            "client" => Some(Grants { client: true, ..Grants::NONE }),
            "admin" => Some(Grants { admin: true, ..Grants::NONE }),
            _ => None,
        }
    }

    /// The union of two grants.
    pub fn with(self, other: Grants) -> Grants {
        Grants {
            client: self.client || other.client,
            admin: self.admin || other.admin,
            cluster: self.cluster || other.cluster,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ControlRequest, PeerRequest};

    #[test]
    fn each_kind_needs_its_permission() {
        let client = Grants { client: true, ..Grants::NONE };
        let admin = Grants { admin: true, ..Grants::NONE };
        for k in [kind::READ, kind::WRITE, kind::UPDATE, kind::DELETE, kind::READ_SERVER, kind::LOG] {
            assert!(client.allows(Need::of_kind(k)), "{k:#x}");
            assert!(!admin.allows(Need::of_kind(k)), "{k:#x}");
        }
        for k in [kind::INIT, kind::ADD_SERVERS, kind::REMOVE_SERVERS, kind::FAILOVER] {
            assert!(!client.allows(Need::of_kind(k)), "{k:#x}");
            assert!(admin.allows(Need::of_kind(k)), "{k:#x}");
        }
        for k in [kind::PING, kind::AUTH] {
            assert!(Grants::NONE.allows(Need::of_kind(k)));
        }
        assert!(!Grants::NONE.allows(Need::of_kind(kind::STATUS)));
        let control = ControlRequest::BASE;
        let peer = PeerRequest::BASE;
        for k in [control, peer, 0x00, 0xFF] {
            assert!(!client.with(admin).allows(Need::of_kind(k)), "{k:#x}");
            assert!(Grants::ALL.allows(Need::of_kind(k)), "{k:#x}");
        }
    }

    #[test]
    fn a_request_needs_what_its_frame_needs() {
        let requests = [
            Request::Ping,
            Request::Status,
            Request::Read { low: 1, high: 2, consistency: crate::Consistency::Any },
            Request::RemoveServers { n: 1, servers: vec![] },
            Request::Failover { shard: crate::ShardId(1), to: None },
            Request::Delete { client_id: 0, seq: 0, key: 1 },
            Request::GetTopology { known_version: 0 },
        ];
        for r in requests {
            let frame = r.to_frame(1).unwrap();
            assert_eq!(Need::of_request(&r), Need::of_kind(frame.kind), "{r:?}");
        }
    }
}
