//! A simulated storage node: the real replica cores on simulated disks and tables.
//!
//! It plays the part of the node's dispatcher and shard tasks: a message for a shard goes
//! to that shard's [`Replica`], and the core's effects become answers and messages on the
//! simulated network. Its clock may drift; it can crash (losing what was never synced),
//! restart, and pause (keeping what arrives for when it wakes). A failpoint armed on it
//! kills it at that sync, as the real node's abort would: after each step the node checks
//! whether one fired, and if so crashes without carrying out that step's effects.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shardline_protocol::{
    ControlRequest, ControlResponse, ErrorCode, LogEntry, Message, NodeStatus, Operation, PeerRequest, PeerResponse,
    ReplicaRole, ShardCommit, ShardId,
};
use shardline_storage_node::disk::{CrashTail, SimDisk};
use shardline_storage_node::failpoint::{Action, Failpoints, Fired, Point};
use shardline_storage_node::heartbeats::HeardBeats;
use shardline_storage_node::replica::{
    fresh, AppendRequest, Effect, Link, Replica, ReplicaConfig, SnapshotChunk, Time,
};
use shardline_storage_node::store::{MemTable, TableStore};

use crate::check::FreshCommit;
use crate::faults::Fault;
use crate::world::{Addr, ClientAnswer, ClientRequest, Event, Msg, Nanos, World, MS};

mod appends;

/// The replica core as the simulator runs it.
pub type SimReplica = Replica<SimDisk, MemTable>;

/// One shard replica's storage: it outlives crashes.
#[derive(Debug, Clone, Default)]
pub struct Storage {
    /// The log's disk.
    pub disk: SimDisk,
    /// The table.
    pub table: MemTable,
}

/// A lease a primary held, in global time, for the checker.
#[derive(Debug, Clone)]
pub struct LeaseRecord {
    /// The shard.
    pub shard: u32,
    /// The term it was held in.
    pub term: u64,
    /// The node holding it.
    pub node: String,
    /// When it was first held (global time).
    pub from: Nanos,
    /// When it ended (global time).
    pub until: Nanos,
}

/// A simulated storage node.
#[derive(Debug)]
pub struct SimNode {
    /// Its number.
    pub index: usize,
    /// Its server name.
    pub name: String,
    /// Whether it runs (false after a crash, until restarted).
    pub up: bool,
    /// Paused (as under SIGSTOP): events wait in `inbox`.
    pub paused: bool,
    /// Messages that arrived while paused.
    pub inbox: Vec<(Addr, Msg)>,
    /// Clock drift in parts per million.
    pub drift_ppm: i64,
    /// Times it started.
    pub incarnation: u64,
    /// Shard storage, by shard.
    pub storage: BTreeMap<ShardId, Storage>,
    /// The running replicas.
    pub replicas: BTreeMap<ShardId, SimReplica>,
    /// Writes waiting for the core: (shard, token) → (client, request id).
    waiting: BTreeMap<(ShardId, u64), (Addr, u64)>,
    /// Every write handed to the core, until it is answered: (shard, token) → (client id,
    /// sequence). Unlike `waiting`, it outlives the client's connection.
    writes: BTreeMap<(ShardId, u64), (u64, u64)>,
    /// Writes the core committed afresh (not answered from a retry mark), for the checker.
    pub fresh_commits: Vec<FreshCommit>,
    /// Entries the node's primaries applied (committed ones), per shard, for the read
    /// level checkers: the committed log, whatever prefix the replicas truncated since.
    pub journal: Vec<(ShardId, LogEntry)>,
    tokens: u64,
    /// Replica settings shared by the node's shards.
    pub settings: ReplicaConfig,
    /// Leases seen, for the lease checker.
    pub leases: Vec<LeaseRecord>,
    /// Per shard, the lease record still open (an index into `leases`).
    open_lease: BTreeMap<ShardId, usize>,
    /// When recent heartbeats were handled (this run of the process): grants count from these.
    heard: HeardBeats<Time>,
    /// Test-only ([`Broken::LeaseFromReceipt`](crate::run::Broken)): a grant counts from
    /// when it is read.
    pub lease_from_receipt: bool,
    /// This run of the process's failpoints, shared by its replicas' logs and tables.
    failpoints: Arc<Failpoints>,
    /// How long after an armed failpoint kills the node it starts again.
    restart_after: Nanos,
    /// Each failpoint that killed the node: when, and which.
    pub fired: Vec<(Nanos, Fired)>,
    /// Test-only ([`Broken::SnapshotMarks`](crate::run::Broken)): snapshots installed
    /// without their retry marks.
    pub drop_snapshot_marks: bool,
    /// Clients numbered below this cannot reach the node
    /// ([`Fault::CutClients`](crate::faults::Fault)).
    pub clients_cut: u32,
    /// Appends that arrived and wait for their shard task, which takes those that queued up
    /// while it was busy as one group: (sender, link, shard, append).
    pending_appends: Vec<(Addr, Link, ShardId, AppendRequest)>,
    /// Whether an [`Event::FlushAppends`] is on its way.
    flush_scheduled: bool,
}

impl SimNode {
    /// A node with no shards yet.
    pub fn new(index: usize, drift_ppm: i64, settings: ReplicaConfig) -> SimNode {
        SimNode {
            index,
            name: format!("N{index}"),
            up: true,
            paused: false,
            inbox: Vec::new(),
            drift_ppm,
            incarnation: 1,
            storage: BTreeMap::new(),
            replicas: BTreeMap::new(),
            waiting: BTreeMap::new(),
            writes: BTreeMap::new(),
            fresh_commits: Vec::new(),
            journal: Vec::new(),
            tokens: 0,
            settings,
            leases: Vec::new(),
            open_lease: BTreeMap::new(),
            heard: Default::default(),
            lease_from_receipt: false,
            failpoints: Arc::new(Failpoints::simulated()),
            restart_after: 0,
            fired: Vec::new(),
            drop_snapshot_marks: false,
            clients_cut: 0,
            pending_appends: Vec::new(),
            flush_scheduled: false,
        }
    }

    /// The node's own clock at global time `now`.
    pub fn local(&self, now: Nanos) -> Time {
        let skewed = now as i128 + now as i128 * self.drift_ppm as i128 / 1_000_000;
        Duration::from_nanos(skewed.max(0) as u64)
    }

    /// Global time at which the node's clock reads `t`.
    fn global(&self, t: Time) -> Nanos {
        let t = t.as_nanos() as i128;
        (t * 1_000_000 / (1_000_000 + self.drift_ppm as i128)).max(0) as u64
    }

    fn config(&self) -> Arc<ReplicaConfig> {
        let mut cfg = self.settings.clone();
        cfg.node = self.name.clone();
        cfg.addr = self.name.clone();
        cfg.incarnation = self.incarnation;
        Arc::new(cfg)
    }

    /// Creates a shard replica on fresh storage.
    pub fn configure(&mut self, spec: shardline_protocol::ShardSpec, schema: shardline_protocol::Schema) {
        let storage = Storage::default();
        let replica = Replica::open(
            self.config(),
            storage.table.with_failpoints(self.failpoints.clone()),
            storage.disk.clone(),
            self.failpoints.clone(),
            Some((spec, schema)),
        )
        .expect("a fresh replica opens");
        self.storage.insert(spec.id, storage);
        self.insert_replica(spec.id, replica);
    }

    /// Adds a replica, journaling what it applies as primary.
    fn insert_replica(&mut self, id: ShardId, mut replica: Replica<SimDisk, MemTable>) {
        replica.keep_journal();
        self.replicas.insert(id, replica);
    }

    /// Moves what the replicas applied as primaries into [`SimNode::journal`].
    pub fn drain_journal(&mut self) {
        for (id, r) in &mut self.replicas {
            self.journal.extend(r.take_journal().into_iter().map(|e| (*id, e)));
        }
    }

    /// A crash: the replicas are gone, each disk keeps what was synced (and maybe a torn
    /// prefix of the rest), each table rolls back to its last durable commit.
    pub fn crash(&mut self, world: &mut World, tail: CrashTail) {
        for (_, i) in std::mem::take(&mut self.open_lease) {
            self.leases[i].until = self.leases[i].until.min(world.now);
        }
        // The clients' connections break: they see a reset, not silence, both for requests
        // in the replicas and for those that waited in a paused process's sockets.
        for ((shard, _), (client, id)) in std::mem::take(&mut self.waiting) {
            self.unreachable(world, client, id, shard, "connection reset");
        }
        for (from, msg) in std::mem::take(&mut self.inbox) {
            if let Msg::Client { id, shard, .. } = msg {
                self.unreachable(world, from, id, shard, "connection reset");
            }
        }
        self.up = false;
        self.paused = false;
        self.pending_appends.clear();
        self.replicas.clear();
        self.waiting.clear();
        self.writes.clear();
        for s in self.storage.values() {
            s.disk.crash(tail);
            s.table.crash();
        }
    }

    /// Clients `0..clients` lose the node: the writes they wait for are answered with a
    /// reset (their connections break), and what they send from now on is refused.
    pub fn cut_clients(&mut self, world: &mut World, clients: u32) {
        self.clients_cut = clients;
        let cut: Vec<_> = self.waiting.iter().filter(|(_, (c, _))| self.cut_off(*c)).map(|(k, v)| (*k, *v)).collect();
        for ((shard, token), (client, id)) in cut {
            self.waiting.remove(&(shard, token));
            self.unreachable(world, client, id, shard, "connection reset");
        }
    }

    fn cut_off(&self, from: Addr) -> bool {
        matches!(from, Addr::Client(c) if c < self.clients_cut)
    }

    /// A restart: every replica opens from its storage, as the real node does.
    pub fn restart(&mut self) {
        self.incarnation += 1;
        self.heard = HeardBeats::default();
        self.up = true;
        // A new process: no failpoint armed (as the process tests restart without one).
        self.failpoints = Arc::new(Failpoints::simulated());
        let cfg = self.config();
        for (id, s) in &self.storage {
            let table = s.table.with_failpoints(self.failpoints.clone());
            let opened = Replica::open(cfg.clone(), table, s.disk.clone(), self.failpoints.clone(), None);
            // A replica that cannot open (its log's BASE damaged, say) is missing, as the
            // real node would be: the checkers count it as a damaged replica.
            if let Ok(mut replica) = opened {
                replica.keep_journal();
                self.replicas.insert(*id, replica);
            }
        }
    }

    /// Handles one message that arrived from `from`.
    pub fn handle(&mut self, world: &mut World, from: Addr, msg: Msg) {
        if !self.up || self.cut_off(from) {
            if let Msg::Client { id, shard, .. } = msg {
                // Nothing listens on the port (or a firewall refuses): the client's connect
                // is refused at once.
                return self.unreachable(world, from, id, shard, "connection refused");
            }
            if !self.up {
                return;
            }
        }
        if self.paused {
            self.inbox.push((from, msg));
            return;
        }
        let msg = match msg {
            Msg::Peer {
                link,
                shard,
                request: PeerRequest::Append { term, primary, prev, entries, commit, echo, .. },
            } => {
                let append = AppendRequest { term, primary, prev, entries, commit, echo };
                return self.queue_append(world, from, link, shard, append);
            }
            other => other,
        };
        let now = self.local(world.now);
        let answer = match msg {
            Msg::Client { id, shard, request } => {
                self.client(world, now, from, id, shard, request);
                None
            }
            Msg::Control { id, request } => {
                Some(Msg::ControlAnswer { id, response: self.control(world, now, request) })
            }
            Msg::Peer { link, shard, request } => {
                Some(Msg::PeerAnswer { link, shard, response: self.peer(shard, request) })
            }
            Msg::PeerAnswer { link, shard, response } => {
                if let Some(r) = self.replicas.get_mut(&shard) {
                    r.on_peer_answer(now, link, Ok(response));
                }
                None
            }
            Msg::ClientAnswer { .. } | Msg::ControlAnswer { .. } => None,
        };
        if self.died_at_failpoint(world) {
            return;
        }
        if let Some(answer) = answer {
            world.send(Addr::Node(self.index), from, answer);
        }
        self.finish_step(world);
    }

    /// After a step whose answers left: each replica applies what it committed or not, at
    /// random (as in a node, whose shard task applies in batches, acknowledgements leave
    /// before the entries they commit are applied; a tick applies them all), then the
    /// effects are carried out, unless a failpoint killed the node meanwhile.
    fn finish_step(&mut self, world: &mut World) {
        let shards: Vec<ShardId> = self.replicas.keys().copied().collect();
        for shard in shards {
            if world.rng.chance(0.5) {
                if let Some(r) = self.replicas.get_mut(&shard) {
                    r.apply_committed();
                }
            }
        }
        if self.died_at_failpoint(world) {
            return;
        }
        self.carry_out(world);
    }

    /// A tick of every replica's clock.
    pub fn tick(&mut self, world: &mut World) {
        if !self.up || self.paused {
            return;
        }
        let now = self.local(world.now);
        for r in self.replicas.values_mut() {
            r.tick(now);
            // Sooner than the node, which applies at most 50 ms after a commit (at once when
            // a read needs it): reads are gated on the applied index, so when the apply
            // comes decides only what a read waits for, never what it may see.
            r.apply_committed();
        }
        if self.died_at_failpoint(world) {
            return;
        }
        self.carry_out(world);
    }

    /// Arms a failpoint on this run of the process: its `hit`-th sync at `point` from now
    /// kills it (as `action` says), and it starts again `restart_after` later.
    pub fn arm(&mut self, point: Point, action: Action, hit: u64, restart_after: Nanos) {
        self.failpoints.arm(point, action, hit);
        self.restart_after = restart_after;
    }

    /// If a failpoint fired during the step just taken, the process died there: it crashes
    /// now, before the step's answers and effects leave it (the disk keeps what was synced
    /// before the death, torn bytes included), and a restart is scheduled.
    fn died_at_failpoint(&mut self, world: &mut World) -> bool {
        let Some(fired) = self.failpoints.fired() else {
            return false;
        };
        self.fired.push((world.now, fired));
        self.crash(world, CrashTail::Drop);
        world.after(self.restart_after, Event::Fault(Fault::Restart { node: self.index }));
        true
    }

    /// Wakes from a pause and handles what arrived meanwhile, in order.
    ///
    /// What queued up is read as a woken process reads its sockets: each connection in
    /// order, the connections side by side, working through the backlog over the next
    /// milliseconds. Heartbeats, other control calls, peer links and clients come on
    /// different connections, so a queued lease grant may well be read before a queued
    /// election query is.
    pub fn wake(&mut self, world: &mut World) {
        self.paused = false;
        if !self.pending_appends.is_empty() && !self.flush_scheduled {
            self.flush_scheduled = true;
            let at = world.rng.range(10_000, MS);
            world.after(at, Event::FlushAppends(self.index));
        }
        let mut connections: BTreeMap<(Addr, u8), Nanos> = BTreeMap::new();
        for (from, msg) in std::mem::take(&mut self.inbox) {
            let channel = match &msg {
                Msg::Control { request: ControlRequest::Heartbeat { .. }, .. } => 0,
                Msg::Control { .. } => 1,
                Msg::Client { .. } => 2,
                _ => 3,
            };
            let at = connections.entry((from, channel)).or_insert(0);
            *at += world.rng.range(10_000, MS);
            world.after(*at, Event::Deliver { from, to: Addr::Node(self.index), msg });
        }
    }

    /// What a client sees when the node's process is gone: an `Unavailable` at once.
    fn unreachable(&self, world: &mut World, client: Addr, id: u64, shard: ShardId, why: &str) {
        let answer = Err(ErrorCode::Unavailable { shard, reason: why.into() });
        world.send(Addr::Node(self.index), client, Msg::ClientAnswer { id, answer });
    }

    fn client(&mut self, world: &mut World, now: Time, from: Addr, id: u64, routed: ShardId, request: ClientRequest) {
        let key = match &request {
            ClientRequest::Write(op) => op_key(op),
            ClientRequest::Read { key, .. } => *key,
        };
        let Some((&shard, replica)) = self.replicas.iter_mut().find(|(_, r)| r.spec().contains(key)) else {
            // As a node answers a request routed to a shard it does not hold.
            let answer = Err(ErrorCode::UnknownShard { shard: routed });
            return world.send(Addr::Node(self.index), from, Msg::ClientAnswer { id, answer });
        };
        match request {
            ClientRequest::Write(op) => {
                self.tokens += 1;
                self.waiting.insert((shard, self.tokens), (from, id));
                if let Some(client_seq) = op.client_seq() {
                    self.writes.insert((shard, self.tokens), client_seq);
                }
                // As the node's shard task does: the appends leave before the primary's own
                // fsync (staging has no failpoint: it only buffers), so a crash at that
                // fsync finds the followers already holding entries it never made durable.
                replica.stage_writes(now, vec![(op, self.tokens)]);
                self.carry_out(world);
                if let Some(r) = self.replicas.get_mut(&shard) {
                    r.sync_log(now);
                }
            }
            ClientRequest::Read { key, level } => {
                // As a node does, but a session read it is behind for is answered `Behind`
                // at once (the node's 50 ms wait only saves the client a trip). A read at a
                // primary has the shard task apply what it acknowledged, and waits for it.
                if replica.state().role == ReplicaRole::Primary {
                    replica.apply_committed();
                }
                let answer = replica
                    .read_gate(now, &level)
                    .and_then(|()| replica.table().read_at(key, key).map_err(|e| ErrorCode::Internal(e.to_string())))
                    .and_then(|(rows, at)| {
                        fresh::session_gate(shard, &level, at.index).map(|()| ClientAnswer::Rows { rows, at })
                    });
                world.send(Addr::Node(self.index), from, Msg::ClientAnswer { id, answer });
            }
        }
    }

    fn control(&mut self, world: &mut World, now: Time, request: ControlRequest) -> ControlResponse {
        let now_global = world.now;
        let missing = |shard| ControlResponse::Error(ErrorCode::UnknownShard { shard });
        match request {
            ControlRequest::Heartbeat { seq, lease_ms, grant } => {
                let since = self.heard.handled(seq, now, grant.as_ref());
                let since = if self.lease_from_receipt { grant.as_ref().map(|_| now) } else { since };
                if let (Some(grant), Some(since)) = (grant, since) {
                    for (shard, term) in grant.shards {
                        if let Some(r) = self.replicas.get_mut(&shard) {
                            r.renew_lease(since, lease_ms, term);
                        }
                    }
                }
                let shards = self.replicas.values().map(|r| r.state()).collect();
                ControlResponse::Status(NodeStatus { node: self.name.clone(), shards })
            }
            ControlRequest::ElectionQuery { shard, term } => match self.replicas.get_mut(&shard) {
                Some(r) => r.election_query(now, term),
                None => missing(shard),
            },
            ControlRequest::Handoff { shard, term, for_ms } => match self.replicas.get_mut(&shard) {
                Some(r) => r.handoff(now, term, for_ms),
                None => missing(shard),
            },
            ControlRequest::BecomePrimary { shard, term, followers, learners, lease_ms } => {
                match self.replicas.get_mut(&shard) {
                    Some(r) => r.become_primary(now, term, followers, learners, lease_ms),
                    None => missing(shard),
                }
            }
            ControlRequest::BecomeFollower { shard, term, primary } => match self.replicas.get_mut(&shard) {
                Some(r) => r.become_follower(term, primary),
                None => missing(shard),
            },
            ControlRequest::ConfigureShard { shard, schema } => {
                if !self.replicas.contains_key(&shard.id) {
                    self.configure(shard, schema);
                }
                ControlResponse::Ok
            }
            ControlRequest::DropShard { shard } => {
                if let Some(mut r) = self.replicas.remove(&shard) {
                    r.shut_down();
                    self.answer_writes(world, shard, r.effects());
                }
                self.storage.remove(&shard);
                if let Some(i) = self.open_lease.remove(&shard) {
                    self.leases[i].until = self.leases[i].until.min(now_global);
                }
                ControlResponse::Ok
            }
        }
    }

    fn peer(&mut self, shard: ShardId, request: PeerRequest) -> PeerResponse {
        let Some(r) = self.replicas.get_mut(&shard) else {
            return PeerResponse::Error(ErrorCode::UnknownShard { shard });
        };
        match request {
            PeerRequest::Append { .. } => unreachable!("appends are queued for their shard (queue_append)"),
            PeerRequest::Snapshot { term, primary, last_included, chunk, rows, mut marks, done, total, .. } => {
                if self.drop_snapshot_marks {
                    // Before scenario 4's fix, snapshots carried no retry marks.
                    marks.clear();
                }
                r.on_snapshot(SnapshotChunk { term, primary, last_included, chunk, rows, marks, done, total })
            }
            PeerRequest::FetchEntries { .. } => PeerResponse::Error(ErrorCode::BadRequest("not served".into())),
        }
    }

    /// Carries out every replica's effects and records the leases they hold.
    fn carry_out(&mut self, world: &mut World) {
        let me = Addr::Node(self.index);
        let shards: Vec<ShardId> = self.replicas.keys().copied().collect();
        for shard in shards {
            let effects = self.replicas.get_mut(&shard).expect("listed").effects();
            for effect in effects {
                match effect {
                    Effect::WriteDone { token, result } => self.answer_write(world, shard, token, result),
                    Effect::Send { link, to, request } => {
                        let len = request.to_frame(0).map_or(usize::MAX, |f| f.payload.len());
                        if len > self.settings.max_payload {
                            // As a connection does, a request over the frame limit is refused
                            // rather than sent; the call fails at once.
                            let response = PeerResponse::Error(ErrorCode::too_large(len, self.settings.max_payload));
                            world.after(
                                0,
                                Event::Deliver { from: me, to: me, msg: Msg::PeerAnswer { link, shard, response } },
                            );
                        } else if let Some(n) = to.name.strip_prefix('N').and_then(|n| n.parse().ok()) {
                            world.send(me, Addr::Node(n), Msg::Peer { link, shard, request });
                        }
                    }
                }
            }
            self.record_lease(world.now, shard);
        }
    }

    fn answer_write(&mut self, world: &mut World, shard: ShardId, token: u64, result: Result<ShardCommit, ErrorCode>) {
        let write = self.writes.remove(&(shard, token));
        if let (Some((client, seq)), Ok(c)) = (write, &result) {
            if c.rows > 0 {
                self.fresh_commits.push(FreshCommit { client, seq, shard: shard.0, term: c.term, index: c.index });
            }
        }
        if let Some((client, id)) = self.waiting.remove(&(shard, token)) {
            let answer = result.map(|c| ClientAnswer::Committed { shard, term: c.term, index: c.index, rows: c.rows });
            world.send(Addr::Node(self.index), client, Msg::ClientAnswer { id, answer });
        }
    }

    /// Answers the writes a dropped replica left waiting, then any the core never answered
    /// (as a stopped shard task does: its reply channels close).
    fn answer_writes(&mut self, world: &mut World, shard: ShardId, effects: Vec<Effect>) {
        for effect in effects {
            if let Effect::WriteDone { token, result } = effect {
                self.answer_write(world, shard, token, result);
            }
        }
        let stuck: Vec<u64> = self.waiting.keys().filter(|(s, _)| *s == shard).map(|(_, t)| *t).collect();
        for token in stuck {
            self.answer_write(world, shard, token, Err(ErrorCode::Internal("shard task stopped".into())));
        }
    }

    fn record_lease(&mut self, now: Nanos, shard: ShardId) {
        let r = &self.replicas[&shard];
        let state = r.state();
        let held = r.lease_until().map(|t| self.global(t)).filter(|&until| until > now);
        let open = self.open_lease.get(&shard).copied();
        match (open, held) {
            (Some(i), Some(until)) if self.leases[i].term == state.term && self.leases[i].until >= now => {
                self.leases[i].until = self.leases[i].until.max(until);
            }
            (open, held) => {
                if let Some(i) = open {
                    self.leases[i].until = self.leases[i].until.min(now);
                    self.open_lease.remove(&shard);
                }
                if let Some(until) = held {
                    self.leases.push(LeaseRecord {
                        shard: shard.0,
                        term: state.term,
                        node: self.name.clone(),
                        from: now,
                        until,
                    });
                    self.open_lease.insert(shard, self.leases.len() - 1);
                }
            }
        }
    }
}

/// The key a write touches (the simulator writes one row at a time).
pub fn op_key(op: &Operation) -> i64 {
    match op {
        Operation::Write { rows, .. } => rows.first().map_or(0, |r| r.key),
        Operation::Update { row, .. } => row.key,
        Operation::Delete { key, .. } => *key,
        Operation::Noop => 0,
    }
}
