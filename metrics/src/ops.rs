//! The `op` label: one short name per request kind, from the frame kind or the typed message.

use shardline_protocol::{kind, ControlRequest, PeerRequest, Request};

/// Client operations (what a balancer or coordinator serves), and `other`.
pub const CLIENT: &[&str] = &[
    "ping",
    "status",
    "stats",
    "init",
    "add_servers",
    "remove_servers",
    "read",
    "read_server",
    "write",
    "update",
    "delete",
    "log",
    "get_topology",
    "subscribe_topology",
    "failover",
    OTHER,
];

/// What a storage node serves: client operations, the coordinator's control messages and
/// a primary's replication messages.
pub const NODE: &[&str] = &[
    "ping",
    "status",
    "stats",
    "read",
    "read_server",
    "write",
    "update",
    "delete",
    "log",
    "configure_shard",
    "drop_shard",
    "become_primary",
    "become_follower",
    "heartbeat",
    "election_query",
    "handoff",
    "append",
    "snapshot",
    "fetch_entries",
    OTHER,
];

/// A request that could not be decoded, or of a kind the process does not serve.
pub const OTHER: &str = "other";

/// The op of a client request frame, by its kind byte.
pub fn of_kind(k: u8) -> &'static str {
    match k {
        kind::PING => "ping",
        kind::STATUS => "status",
        kind::STATS => "stats",
        kind::INIT => "init",
        kind::ADD_SERVERS => "add_servers",
        kind::REMOVE_SERVERS => "remove_servers",
        kind::READ => "read",
        kind::READ_SERVER => "read_server",
        kind::WRITE => "write",
        kind::UPDATE => "update",
        kind::DELETE => "delete",
        kind::LOG => "log",
        kind::GET_TOPOLOGY => "get_topology",
        kind::SUBSCRIBE_TOPOLOGY => "subscribe_topology",
        kind::FAILOVER => "failover",
        _ => OTHER,
    }
}

/// The op of a decoded client request.
pub fn of_request(r: &Request) -> &'static str {
    match r {
        Request::Ping => "ping",
        Request::Status => "status",
        Request::Stats => "stats",
        Request::Init(_) => "init",
        Request::AddServers(_) => "add_servers",
        Request::RemoveServers { .. } => "remove_servers",
        Request::Read { .. } => "read",
        Request::ReadServer { .. } => "read_server",
        Request::Write(_) => "write",
        Request::Update { .. } => "update",
        Request::Delete { .. } => "delete",
        Request::Log { .. } => "log",
        Request::GetTopology { .. } => "get_topology",
        Request::SubscribeTopology => "subscribe_topology",
        Request::Failover { .. } => "failover",
        Request::Auth { .. } => OTHER,
    }
}

/// The op of a coordinator → node message.
pub fn of_control(r: &ControlRequest) -> &'static str {
    match r {
        ControlRequest::ConfigureShard { .. } => "configure_shard",
        ControlRequest::DropShard { .. } => "drop_shard",
        ControlRequest::BecomePrimary { .. } => "become_primary",
        ControlRequest::BecomeFollower { .. } => "become_follower",
        ControlRequest::Heartbeat { .. } => "heartbeat",
        ControlRequest::ElectionQuery { .. } => "election_query",
        ControlRequest::Handoff { .. } => "handoff",
    }
}

/// The op of a primary → follower message.
pub fn of_peer(r: &PeerRequest) -> &'static str {
    match r {
        PeerRequest::Append { .. } => "append",
        PeerRequest::Snapshot { .. } => "snapshot",
        PeerRequest::FetchEntries { .. } => "fetch_entries",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline_protocol::Message;

    #[test]
    fn kinds_and_typed_requests_agree() {
        let failover = Request::Failover { shard: shardline_protocol::ShardId(1), to: None };
        for r in [Request::Ping, Request::Status, Request::Stats, Request::SubscribeTopology, failover] {
            let frame = r.to_frame(1).unwrap();
            assert_eq!(of_kind(frame.kind), of_request(&r));
        }
        // Every label a kind can map to is pre-registered.
        assert!((0..=u8::MAX).all(|k| CLIENT.contains(&of_kind(k))));
        assert_eq!(of_kind(0xff), OTHER);
    }
}
