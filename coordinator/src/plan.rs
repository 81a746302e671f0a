//! Admin requests checked against the cluster and turned into plans: pure functions.
//!
//! Every refusal happens here, before anything is persisted, spawned or sent: a request
//! that is refused changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use shardline_protocol::{AddServersRequest, ErrorCode, InitRequest, ShardId, ShardSpec};

use crate::meta::ClusterMeta;

/// What Init or AddServers will create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddPlan {
    /// New servers, by final name, with the shards each will hold.
    pub servers: BTreeMap<String, Vec<ShardId>>,
    /// New shards.
    pub new_shards: Vec<ShardSpec>,
    /// The next generated-name number after this plan.
    pub next_server: u64,
}

fn bad(msg: impl Into<String>) -> ErrorCode {
    ErrorCode::BadRequest(msg.into())
}

/// Checks an Init request against an uninitialized cluster.
pub fn init(request: &InitRequest, meta: &ClusterMeta) -> Result<AddPlan, ErrorCode> {
    if meta.schema.is_some() {
        return Err(bad("the cluster is already initialized; use add and rm to change it"));
    }
    request.schema.validate().map_err(|e| ErrorCode::SchemaViolation(e.to_string()))?;
    if request.schema.columns.len() > MAX_COLUMNS {
        return Err(bad(format!("{} columns; at most {MAX_COLUMNS}", request.schema.columns.len())));
    }
    if let Some(c) = request.schema.columns.iter().find(|c| c.name.is_empty() || c.name.len() > MAX_NAME) {
        return Err(bad(format!("column name of {} bytes: 1 to {MAX_NAME}", c.name.len())));
    }
    if request.shards.is_empty() {
        return Err(bad("init needs at least one shard"));
    }
    let add = AddServersRequest { n: request.n, new_shards: request.shards.clone(), servers: request.servers.clone() };
    let plan = add_servers(&add, meta)?;
    for shard in &request.shards {
        if !plan.servers.values().any(|held| held.contains(&shard.id)) {
            return Err(bad(format!("shard {} has no server", shard.id)));
        }
    }
    Ok(plan)
}

/// The most servers a cluster may have: an admin request past it is refused before the
/// coordinator allocates anything for it (a huge `n` must not exhaust memory while the
/// admin lock is held).
pub const MAX_SERVERS: usize = 1024;

/// The most shards one request may create.
pub const MAX_NEW_SHARDS: usize = 4096;

/// The most shards a cluster may have.
pub const MAX_SHARDS: usize = 4096;

/// The longest server or column name, in bytes.
pub const MAX_NAME: usize = 64;

/// The most columns a schema may have.
pub const MAX_COLUMNS: usize = 64;

/// Refuses a server name past [`MAX_NAME`] bytes before it is looked up or echoed.
pub fn check_name(name: &str) -> Result<(), ErrorCode> {
    if name.len() > MAX_NAME {
        return Err(bad(format!("a server name of {} bytes; at most {MAX_NAME}", name.len())));
    }
    Ok(())
}

/// Checks an AddServers request (also used by Init) against the cluster.
pub fn add_servers(request: &AddServersRequest, meta: &ClusterMeta) -> Result<AddPlan, ErrorCode> {
    if request.n == 0 {
        return Err(bad("n must be at least 1"));
    }
    if request.n > MAX_SERVERS.saturating_sub(meta.servers.len()) {
        return Err(bad(format!(
            "n = {} would take the cluster past {MAX_SERVERS} servers (it has {})",
            request.n,
            meta.servers.len()
        )));
    }
    if request.new_shards.len() > MAX_NEW_SHARDS {
        return Err(bad(format!("{} new shards in one request; at most {MAX_NEW_SHARDS}", request.new_shards.len())));
    }
    if request.new_shards.len() > MAX_SHARDS.saturating_sub(meta.shards.len()) {
        return Err(bad(format!(
            "{} new shards would take the cluster past {MAX_SHARDS} shards (it has {})",
            request.new_shards.len(),
            meta.shards.len()
        )));
    }
    for name in request.servers.keys() {
        check_name(name)?;
    }
    if request.n < request.servers.len() {
        return Err(bad(format!("n = {} is less than the {} servers named", request.n, request.servers.len())));
    }
    let mut all: Vec<ShardSpec> = meta.shards.values().map(|s| s.spec).collect();
    for shard in &request.new_shards {
        if shard.size == 0 {
            return Err(bad(format!("shard {} has size 0", shard.id)));
        }
        if shard.low.checked_add_unsigned(shard.size - 1).is_none() {
            return Err(bad(format!("shard {} runs past the largest key", shard.id)));
        }
        if let Some(other) = all.iter().find(|o| o.id == shard.id) {
            return Err(bad(format!("shard {} already exists", other.id)));
        }
        let high = shard.high().expect("size > 0");
        if let Some(other) = all.iter().find(|o| o.overlaps(shard.low, high)) {
            return Err(bad(format!("shard {} overlaps shard {}", shard.id, other.id)));
        }
        all.push(*shard);
    }
    let known: BTreeSet<ShardId> = all.iter().map(|s| s.id).collect();
    let mut names = meta.server_names();
    let mut next = meta.next_server;
    let mut servers = BTreeMap::new();
    for (name, shards) in &request.servers {
        let name = if is_placeholder(name) {
            generate(&mut names, &mut next)
        } else {
            if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c.is_control() || c == ',') {
                return Err(bad(format!("server name {name:?} must be non-empty, without spaces or commas")));
            }
            if !names.insert(name.clone()) {
                return Err(bad(format!("server `{name}` already exists")));
            }
            name.clone()
        };
        let mut held = BTreeSet::new();
        for shard in shards {
            if !known.contains(shard) {
                return Err(ErrorCode::UnknownShard { shard: *shard });
            }
            if !held.insert(*shard) {
                return Err(bad(format!("server `{name}` lists shard {shard} twice")));
            }
        }
        servers.insert(name, held.into_iter().collect());
    }
    while servers.len() < request.n {
        servers.insert(generate(&mut names, &mut next), Vec::new());
    }
    Ok(AddPlan { servers, new_shards: request.new_shards.clone(), next_server: next })
}

/// Chooses the servers RemoveServers takes away: the named ones, then the most recently
/// named others, refusing a removal that would leave a shard without a replica.
pub fn remove_servers(n: usize, named: &[String], meta: &ClusterMeta) -> Result<Vec<String>, ErrorCode> {
    if n == 0 {
        return Err(bad("n must be at least 1"));
    }
    if n < named.len() {
        return Err(bad(format!("n = {n} is less than the {} servers named", named.len())));
    }
    if n > meta.servers.len() {
        return Err(bad(format!("n = {n}, but the cluster has {} servers", meta.servers.len())));
    }
    for name in named {
        check_name(name)?;
    }
    let mut chosen: Vec<String> = Vec::new();
    for name in named {
        if !meta.servers.contains_key(name) {
            return Err(ErrorCode::UnknownServer { name: name.clone() });
        }
        if chosen.contains(name) {
            return Err(bad(format!("server `{name}` named twice")));
        }
        chosen.push(name.clone());
    }
    let mut others: Vec<&String> = meta.servers.keys().filter(|s| !chosen.contains(s)).collect();
    others.sort_by_key(|n| std::cmp::Reverse(natural(n)));
    for name in others {
        if chosen.len() == n {
            break;
        }
        chosen.push(name.clone());
    }
    if chosen.len() < n {
        return Err(bad(format!("cannot remove {n} servers: the cluster has {}", meta.servers.len())));
    }
    for shard in meta.shards.values() {
        if shard.replicas.iter().all(|r| chosen.contains(r)) {
            let what = if shard.learners.iter().all(|r| chosen.contains(r)) {
                "no replica".to_owned()
            } else {
                "no voting replica; wait until its new replicas have caught up and become voters (STATUS), \
                 then try again"
                    .to_owned()
            };
            return Err(bad(format!("removing {} would leave shard {} with {what}", chosen.join(", "), shard.spec.id)));
        }
    }
    Ok(chosen)
}

/// `Server[5]`-style names ask for a generated one.
fn is_placeholder(name: &str) -> bool {
    name.contains('[') && name.ends_with(']')
}

fn generate(names: &mut BTreeSet<String>, next: &mut u64) -> String {
    loop {
        let name = format!("Server{next}");
        *next += 1;
        if names.insert(name.clone()) {
            return name;
        }
    }
}

/// Sort key that puts `Server10` after `Server9`.
fn natural(name: &str) -> (String, u64) {
    let digits = name.trim_start_matches(|c: char| !c.is_ascii_digit());
    let prefix = &name[..name.len() - digits.len()];
    (prefix.to_owned(), digits.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{ServerMeta, ShardMeta};
    use shardline_protocol::Schema;

    fn spec(id: u32, low: i64) -> ShardSpec {
        ShardSpec { id: ShardId(id), low, size: 4096 }
    }

    fn init_request() -> InitRequest {
        let mut servers = BTreeMap::new();
        servers.insert("Server0".to_owned(), vec![ShardId(1), ShardId(2)]);
        servers.insert("Server1".to_owned(), vec![ShardId(1)]);
        servers.insert("Server2".to_owned(), vec![ShardId(2)]);
        InitRequest { n: 4, schema: Schema::seed(), shards: vec![spec(1, 0), spec(2, 4096)], servers }
    }

    fn initialized() -> ClusterMeta {
        let mut meta = ClusterMeta { schema: Some(Schema::seed()), next_server: 3, ..Default::default() };
        for (id, low, replicas) in [(1, 0, vec!["Server0", "Server1"]), (2, 4096, vec!["Server0", "Server2"])] {
            let replicas: Vec<String> = replicas.into_iter().map(String::from).collect();
            meta.shards.insert(
                ShardId(id),
                ShardMeta {
                    spec: spec(id, low),
                    term: 1,
                    primary: Some(replicas[0].clone()),
                    replicas,
                    catch_up: Default::default(),
                    learners: vec![],
                    unsettled: false,
                },
            );
        }
        for s in ["Server0", "Server1", "Server2"] {
            meta.servers.insert(s.into(), ServerMeta { addr: String::new() });
        }
        meta
    }

    #[test]
    fn init_fills_up_to_n_servers() {
        let plan = init(&init_request(), &ClusterMeta::default()).unwrap();
        assert_eq!(plan.servers.len(), 4);
        assert_eq!(plan.servers["Server3"], Vec::<ShardId>::new());
    }

    #[test]
    fn init_refuses_bad_requests() {
        let mut r = init_request();
        r.n = 2;
        assert!(init(&r, &ClusterMeta::default()).unwrap_err().to_string().contains("less than"));
        let mut r = init_request();
        r.shards[1].low = 100;
        assert!(init(&r, &ClusterMeta::default()).unwrap_err().to_string().contains("overlaps"));
        let mut r = init_request();
        r.servers.insert("Server9".into(), vec![ShardId(7)]);
        r.n = 5;
        assert_eq!(init(&r, &ClusterMeta::default()), Err(ErrorCode::UnknownShard { shard: ShardId(7) }));
        let mut r = init_request();
        r.servers.remove("Server2");
        r.servers.insert("Server0".into(), vec![ShardId(1)]);
        assert!(init(&r, &ClusterMeta::default()).unwrap_err().to_string().contains("no server"));
        assert!(init(&init_request(), &initialized()).unwrap_err().to_string().contains("already"));
    }

    #[test]
    fn add_generates_names_for_placeholders() {
        let mut servers = BTreeMap::new();
        servers.insert("Server[5]".to_owned(), vec![ShardId(1)]);
        let add = AddServersRequest { n: 2, new_shards: vec![], servers };
        let plan = add_servers(&add, &initialized()).unwrap();
        assert_eq!(plan.servers.keys().collect::<Vec<_>>(), vec!["Server3", "Server4"]);
        let mut servers = BTreeMap::new();
        servers.insert("Server0".to_owned(), vec![]);
        let add = AddServersRequest { n: 1, new_shards: vec![], servers };
        assert!(add_servers(&add, &initialized()).unwrap_err().to_string().contains("already exists"));
    }

    #[test]
    fn remove_takes_named_first_and_keeps_a_replica_everywhere() {
        let meta = initialized();
        assert_eq!(remove_servers(1, &["Server1".into()], &meta).unwrap(), vec!["Server1"]);
        assert_eq!(remove_servers(1, &[], &meta).unwrap(), vec!["Server2"]);
        assert!(remove_servers(2, &["Server0".into(), "Server1".into()], &meta)
            .unwrap_err()
            .to_string()
            .contains("no replica"));
        assert_eq!(remove_servers(1, &["Nope".into()], &meta), Err(ErrorCode::UnknownServer { name: "Nope".into() }));
        assert!(remove_servers(0, &[], &meta).is_err());
    }

    #[test]
    fn a_huge_n_is_refused_before_anything_is_allocated() {
        let meta = ClusterMeta::default();
        let add = AddServersRequest { n: usize::MAX, new_shards: vec![], servers: BTreeMap::new() };
        let e = add_servers(&add, &meta).unwrap_err();
        assert!(matches!(&e, ErrorCode::BadRequest(m) if m.contains("past 1024 servers")), "{e:?}");
    }

    #[test]
    fn long_names_many_columns_and_too_many_shards_are_refused() {
        let meta = initialized();
        let long = "S".repeat(MAX_NAME + 1);
        let add = AddServersRequest { n: 1, new_shards: vec![], servers: BTreeMap::from([(long.clone(), vec![])]) };
        assert!(add_servers(&add, &meta).unwrap_err().to_string().contains("at most 64"));
        assert!(remove_servers(1, std::slice::from_ref(&long), &meta).unwrap_err().to_string().contains("at most 64"));
        assert!(remove_servers(usize::MAX, &[], &meta).is_err());
        let shards = (0..MAX_SHARDS as u32).map(|i| spec(100 + i, 1_000_000 + i64::from(i) * 10)).collect();
        let add = AddServersRequest { n: 1, new_shards: shards, servers: BTreeMap::new() };
        assert!(add_servers(&add, &meta).unwrap_err().to_string().contains("past 4096 shards"));
        let mut init = init_request();
        let column =
            |i: usize| shardline_protocol::Column { name: format!("c{i}"), ty: shardline_protocol::ColumnType::Int };
        init.schema.columns.extend((0..MAX_COLUMNS).map(column));
        assert!(super::init(&init, &ClusterMeta::default()).unwrap_err().to_string().contains("columns"));
    }
}
