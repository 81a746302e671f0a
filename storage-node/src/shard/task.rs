//! The shard task: the thin driver of one [`Replica`].
//!
//! Commands arrive on one channel. Writes queued together go to the core as one group
//! (one log append, one fsync). Everything else is handed over in arrival order, so the
//! replica's state changes one step at a time. After each step the task carries out the
//! core's effects, then publishes its state for readers. Disk work runs in
//! `block_in_place`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use shardline_protocol::{ErrorCode, Schema, ShardCommit, ShardSpec};
use tokio::sync::{mpsc, oneshot};
use tokio::task::block_in_place;
use tracing::{info, info_span, Instrument};

use super::link::{self, Answer};
use super::{shard_dir, Command, Counters, Published, ShardHandle, Shared};
use crate::config::NodeConfig;
use crate::disk::FsDisk;
use crate::failpoint::Failpoints;
use crate::replica::{Effect, Link, OpenError, Replica, ReplicaConfig};
use crate::store::{StoreError, Table};

/// How often the task ticks the core (write deadlines, follower heartbeats).
const TICK: Duration = Duration::from_millis(10);
/// Most commands handled as one group.
const MAX_GROUP: usize = 1024;

type Reply = oneshot::Sender<Result<ShardCommit, ErrorCode>>;

/// A follower connection: the primary epoch and the follower's slot.
type LinkKey = ((u64, u64, u64), usize);

/// The shard task's state: the core and what it takes to carry out its effects.
struct ShardTask {
    replica: Replica<FsDisk, Table>,
    cfg: Arc<NodeConfig>,
    origin: Instant,
    shared: Arc<Shared>,
    writes: HashMap<u64, Reply>,
    tokens: u64,
    links: HashMap<LinkKey, mpsc::UnboundedSender<(Link, shardline_protocol::PeerRequest)>>,
    answers: mpsc::UnboundedSender<Answer>,
}

/// How many times this process has opened a replica: tells runs apart (see
/// [`ReplicaConfig::incarnation`]).
static INCARNATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A number for this run of a replica that no earlier run of this process or of an
/// earlier process used: a follower's contact stamps are only taken back from its own
/// run, whose clock they were read on (a restarted process counts from 1 again, so the
/// wall clock at first use sets the high bits).
fn incarnation() -> u64 {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        (since_epoch.as_millis() as u64) << 16
    });
    base | INCARNATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & 0xffff
}

/// A shard replica's task, opened and ready to run: [`ShardRunner::start`] spawns it (a
/// constructor never spawns; the node starts its replicas when it starts serving).
pub struct ShardRunner {
    task: ShardTask,
    commands: mpsc::Receiver<Command>,
    answers: mpsc::UnboundedReceiver<Answer>,
    span: tracing::Span,
}

impl std::fmt::Debug for ShardRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardRunner").field("shard", &self.task.shared.spec.id).finish_non_exhaustive()
    }
}

impl ShardRunner {
    /// Spawns the task onto the current runtime.
    pub fn start(self) {
        let ShardRunner { task, commands, answers, span } = self;
        tokio::spawn(task.run(commands, answers).instrument(span));
    }
}

/// Opens (configuring, if `config` is given) the replica in `data_dir`: its handle, and its
/// task to start.
pub fn open_shard(
    data_dir: &Path,
    cfg: Arc<NodeConfig>,
    failpoints: Arc<Failpoints>,
    shard: shardline_protocol::ShardId,
    config: Option<(ShardSpec, Schema)>,
) -> Result<(ShardHandle, ShardRunner), StoreError> {
    let dir = shard_dir(data_dir, shard);
    std::fs::create_dir_all(&dir)?;
    let table = Table::open(&dir.join("table.redb"), failpoints.clone())?;
    let disk = FsDisk::open(dir.join("log"))?;
    let span = info_span!("shard", node = %cfg.id, shard = %shard, term = tracing::field::Empty);
    let _enter = span.enter();
    let replica_cfg = Arc::new(ReplicaConfig {
        node: cfg.id.clone(),
        addr: cfg.listen.to_string(),
        write_timeout: cfg.write_timeout,
        sync_heartbeat: cfg.sync_heartbeat,
        peer_timeout: cfg.peer_timeout,
        snapshot_lag: cfg.snapshot_lag,
        log_retain: cfg.log_retain,
        max_payload: cfg.max_payload,
        snapshot_chunk_bytes: crate::replica::room::SNAPSHOT_CHUNK_BYTES,
        snapshot_rate: cfg.snapshot_rate,
        incarnation: incarnation(),
        regressions: Default::default(),
    });
    let replica = Replica::open(replica_cfg, table.clone(), disk, failpoints, config).map_err(|e| match e {
        OpenError::Store(e) => e,
        other => StoreError::Io(std::io::Error::other(format!("{}: {other}", dir.display()))),
    })?;
    let (tx, rx) = mpsc::channel(4096);
    let (answers, answers_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        spec: replica.spec(),
        table,
        published: Mutex::new(Published {
            state: replica.state(),
            primary: None,
            lease_until: None,
            origin: Instant::now(),
            ready: false,
            contact: None,
            followers: Vec::new(),
        }),
        reads: std::sync::atomic::AtomicU64::new(0),
        applied: tokio::sync::Notify::new(),
        counters: Mutex::new(Counters {
            writes_acked: 0,
            writes_failed: 0,
            fsyncs: 0,
            entries_synced: 0,
            write_latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        }),
    });
    let task = ShardTask {
        replica,
        cfg,
        origin: shared.published.lock().expect("published lock").origin,
        shared: shared.clone(),
        writes: HashMap::new(),
        tokens: 0,
        links: HashMap::new(),
        answers,
    };
    span.record("term", task.replica.state().term);
    drop(_enter);
    let runner = ShardRunner { task, commands: rx, answers: answers_rx, span };
    Ok((ShardHandle { tx, shared }, runner))
}

impl ShardTask {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>, mut answers: mpsc::UnboundedReceiver<Answer>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = rx.recv() => {
                    let Some(first) = command else { break };
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(c) => group.push(c),
                            Err(_) => break,
                        }
                    }
                    if !block_in_place(|| self.handle_group(group)) {
                        break;
                    }
                }
                Some((link, answer)) = answers.recv() => {
                    let now = self.now();
                    block_in_place(|| self.replica.on_peer_answer(now, link, answer));
                }
                _ = tick.tick() => {
                    let now = self.now();
                    block_in_place(|| self.replica.tick(now));
                }
            }
            self.carry_out();
        }
        self.replica.shut_down();
        self.carry_out();
        info!("shard task stopped");
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Hands a group of commands to the core: consecutive writes as one group.
    /// Returns false when the task should stop.
    fn handle_group(&mut self, group: Vec<Command>) -> bool {
        let mut writes = Vec::new();
        for command in group {
            match command {
                Command::Write { op, reply } => {
                    self.tokens += 1;
                    self.writes.insert(self.tokens, reply);
                    writes.push((op, self.tokens));
                }
                other => {
                    if !writes.is_empty() {
                        self.write_group(std::mem::take(&mut writes));
                    }
                    if !self.handle(other) {
                        return false;
                    }
                }
            }
        }
        if !writes.is_empty() {
            self.write_group(writes);
        }
        true
    }

    /// Logs a group of writes: the appends to the followers leave before this replica's
    /// own fsync, so the two disks work at once.
    fn write_group(&mut self, writes: Vec<(shardline_protocol::Operation, u64)>) {
        let now = self.now();
        self.replica.stage_writes(now, writes);
        self.carry_out();
        let now = self.now();
        self.replica.sync_log(now);
    }

    fn handle(&mut self, command: Command) -> bool {
        let now = self.now();
        let r = &mut self.replica;
        match command {
            Command::Write { .. } => unreachable!("writes are grouped"),
            // A role change is published before it is answered: a heartbeat the coordinator
            // sends after the answer must show the new role and replica set (whose `settled`
            // it acts on), never the state from before.
            Command::BecomePrimary { term, followers, learners, lease_ms, reply } => {
                let answer = r.become_primary(now, term, followers, learners, lease_ms);
                self.publish();
                let _ = reply.send(answer);
            }
            Command::BecomeFollower { term, primary, reply } => {
                let answer = r.become_follower(term, primary);
                self.publish();
                let _ = reply.send(answer);
            }
            Command::ElectionQuery { term, reply } => {
                let _ = reply.send(r.election_query(now, term));
            }
            Command::Handoff { term, for_ms, reply } => {
                let _ = reply.send(r.handoff(now, term, for_ms));
            }
            Command::RenewLease { since, lease_ms, term } => {
                r.renew_lease(since.saturating_duration_since(self.origin), lease_ms, term)
            }
            Command::Append(request, reply) => {
                // Answered once on disk; the table's commit comes after the answer left.
                let _ = reply.send(r.receive_append(request, now));
                r.apply_committed();
            }
            Command::Snapshot(chunk, reply) => {
                let _ = reply.send(r.on_snapshot(chunk));
            }
            Command::Log { count, reply } => {
                let _ = reply.send(r.log_lines(count));
            }
            Command::Stop { reply } => {
                let _ = reply.send(());
                return false;
            }
        }
        true
    }

    /// Carries out the core's effects, then publishes its state.
    fn carry_out(&mut self) {
        for effect in self.replica.effects() {
            match effect {
                Effect::WriteDone { token, result } => {
                    if let Some(reply) = self.writes.remove(&token) {
                        let _ = reply.send(result);
                    }
                }
                Effect::Send { link, to, request } => {
                    if !self.links.contains_key(&(link.epoch, link.slot)) {
                        self.links.retain(|(epoch, _), _| *epoch == link.epoch);
                        let tx = link::spawn(&to.name, to.addr.clone(), self.cfg.clone(), self.answers.clone());
                        self.links.insert((link.epoch, link.slot), tx);
                    }
                    let _ = self.links[&(link.epoch, link.slot)].send((link, request));
                }
            }
        }
        self.publish();
    }

    /// Publishes the replica's state for readers, heartbeats and STATS.
    fn publish(&self) {
        let r = &self.replica;
        {
            let mut published = self.shared.published.lock().expect("published lock");
            let state = r.state();
            if state.term != published.state.term {
                // The shard span names the term, so every line it logs says which.
                tracing::Span::current().record("term", state.term);
            }
            published.state = state;
            published.primary = r.primary_hint();
            published.lease_until = r.lease_until();
            published.origin = self.origin;
            published.ready = r.ready();
            published.contact = r.contact();
            published.followers = r.follower_lag(self.origin.elapsed());
        }
        self.shared.applied.notify_waiters();
        let syncs = r.sync_counts();
        let mut c = self.shared.counters.lock().expect("counters lock");
        c.fsyncs = syncs.fsyncs;
        c.entries_synced = syncs.entries;
    }
}
