//! The shard task: the thin driver of one [`Replica`].
//!
//! Commands arrive on one channel. Writes queued together go to the core as one group
//! (one log append, one fsync). Everything else is handed over in arrival order, so the
//! replica's state changes one step at a time. After each step the task publishes the
//! core's state for readers, then carries out its effects.
//!
//! The task runs on a thread of its own (a single-threaded runtime), where the core's disk
//! work (log fsyncs, table commits) simply blocks: measured, handing a worker of the shared
//! runtime to another thread around every step (`block_in_place`) cost more in context
//! switches than the work itself. The follower links run on the node's shared runtime, so
//! an append leaves while this thread waits for its own fsync.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use shardline_protocol::{ErrorCode, PeerResponse, Schema, ShardCommit, ShardSpec};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, info_span, Instrument};

use super::link::{self, Answer};
use super::{shard_dir, Command, Counters, Published, ShardHandle, Shared};
use crate::config::NodeConfig;
use crate::disk::FsDisk;
use crate::failpoint::Failpoints;
use crate::replica::{AppendRequest, Effect, Link, OpenError, Replica, ReplicaConfig};
use crate::store::{StoreError, Table};

/// How often the task ticks the core (write deadlines, follower heartbeats).
const TICK: Duration = Duration::from_millis(10);
/// Most commands handled as one group.
const MAX_GROUP: usize = 1024;
/// Committed entries wait at most this long to be applied to the table: acknowledgements
/// leave at commit, and applying in batches turns many small table commits into few. A read
/// that needs what waits asks for it at once (`Command::Apply`), so the interval costs reads
/// nothing. Against 1 ms, 10 ms gave one shard 10–55% more writes at 16 and 64 writers
/// (`make bench-write`). Against 10 ms, 50 ms gave the seed's 8-replica layout about 40%
/// more: its 48 replicas each took ~200 writes a second, so a 10 ms batch held two entries
/// and a table commit's fixed cost dominated. 100 ms gave no more than 50.
const APPLY_EVERY: Duration = Duration::from_millis(50);
/// So many committed entries are applied at once, whatever the interval.
const APPLY_BATCH: u64 = 1024;

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
    /// The node's shared runtime, where follower links run.
    links_runtime: Option<tokio::runtime::Handle>,
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
    /// Starts the task on a thread of its own; its follower links go to the current runtime.
    pub fn start(self) {
        let ShardRunner { mut task, commands, answers, span } = self;
        task.links_runtime = Some(tokio::runtime::Handle::current());
        let name = format!("shard-{}", task.shared.spec.id);
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            match runtime {
                Ok(runtime) => runtime.block_on(task.run(commands, answers).instrument(span)),
                Err(e) => tracing::error!(%e, "could not start the shard's runtime"),
            }
        });
        if let Err(e) = spawned {
            tracing::error!(%e, "could not start the shard's thread");
        }
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
            syncs: Default::default(),
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
        links_runtime: None,
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
        let mut last_apply = tokio::time::Instant::now();
        let mut apply_at: Option<tokio::time::Instant> = None;
        loop {
            // Biased, in this order: follower answers first (an answer that came while this
            // thread waited on an fsync commits and acknowledges before the next group of
            // writes costs another fsync), then the tick (write deadlines), then commands;
            // the apply timer last (the policy below also applies when it is overdue).
            tokio::select! {
                biased;
                Some(first) = answers.recv() => {
                    // Answers that came together (a follower's grouped appends) move the
                    // commit index once.
                    let mut batch = vec![first];
                    while batch.len() < MAX_GROUP {
                        match answers.try_recv() {
                            Ok(answer) => batch.push(answer),
                            Err(_) => break,
                        }
                    }
                    let now = self.now();
                    self.replica.on_peer_answers(now, batch);
                }
                // Only a primary has deadlines: the replicas that follow sleep until a
                // message comes (a node holds many: their ticks were a third of an idle
                // cluster's CPU in the seed's 8-replica layout).
                _ = tick.tick(), if self.replica.needs_tick() => {
                    let now = self.now();
                    self.replica.tick(now);
                }
                command = rx.recv() => {
                    let Some(first) = command else { break };
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(c) => group.push(c),
                            Err(_) => break,
                        }
                    }
                    if !self.handle_group(group) {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(apply_at.unwrap_or(last_apply)), if apply_at.is_some() => {
                    apply_at = None;
                    last_apply = self.apply();
                    continue;
                }
            }
            self.carry_out();
            // The apply policy: at once when a batch is full or the interval has passed,
            // else when it passes.
            let unapplied = self.replica.unapplied();
            if unapplied >= APPLY_BATCH || (unapplied > 0 && last_apply.elapsed() >= APPLY_EVERY) {
                apply_at = None;
                last_apply = self.apply();
            } else if unapplied > 0 && apply_at.is_none() {
                apply_at = Some(last_apply + APPLY_EVERY);
            }
        }
        self.replica.shut_down();
        self.carry_out();
        info!("shard task stopped");
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Applies what is committed, publishes it (waking readers waiting for it): when.
    fn apply(&mut self) -> tokio::time::Instant {
        self.replica.apply_committed();
        self.carry_out();
        tokio::time::Instant::now()
    }

    /// Hands a group of commands to the core in order: consecutive writes as one group (one
    /// log append, one fsync), consecutive appends from a primary likewise.
    /// Returns false when the task should stop.
    fn handle_group(&mut self, group: Vec<Command>) -> bool {
        let mut writes = Vec::new();
        let mut appends = Vec::new();
        for command in group {
            match command {
                Command::Write { op, reply } => {
                    self.receive_appends(std::mem::take(&mut appends));
                    self.tokens += 1;
                    self.writes.insert(self.tokens, reply);
                    writes.push((op, self.tokens));
                }
                Command::Append(request, reply) => {
                    self.write_group(std::mem::take(&mut writes));
                    appends.push((request, reply));
                }
                other => {
                    self.write_group(std::mem::take(&mut writes));
                    self.receive_appends(std::mem::take(&mut appends));
                    if !self.handle(other) {
                        return false;
                    }
                }
            }
        }
        self.write_group(writes);
        self.receive_appends(appends);
        true
    }

    /// Appends from the primary that came together: logged with one fsync and answered; the
    /// entries they commit are applied later, in batches (the apply policy in `run`).
    fn receive_appends(&mut self, appends: Vec<(AppendRequest, oneshot::Sender<PeerResponse>)>) {
        if appends.is_empty() {
            return;
        }
        let now = self.now();
        let (requests, replies): (Vec<_>, Vec<_>) = appends.into_iter().unzip();
        let answers = self.replica.receive_appends(requests, now);
        for (reply, answer) in replies.into_iter().zip(answers) {
            let _ = reply.send(answer);
        }
    }

    /// Logs a group of writes: the appends to the followers leave before this replica's
    /// own fsync, so the two disks work at once.
    fn write_group(&mut self, writes: Vec<(shardline_protocol::Operation, u64)>) {
        if writes.is_empty() {
            return;
        }
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
            Command::Write { .. } | Command::Append(..) => unreachable!("writes and appends are grouped"),
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
            Command::Snapshot(chunk, reply) => {
                let _ = reply.send(r.on_snapshot(chunk));
            }
            Command::Apply => r.apply_committed(),
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

    /// Publishes the core's state, then carries out its effects: a write is acknowledged
    /// only once the commit index covering it is published, so a `primary` read sent after
    /// the acknowledgement finds it and waits for the apply.
    fn carry_out(&mut self) {
        let effects = self.replica.effects();
        self.publish();
        for effect in effects {
            match effect {
                Effect::WriteDone { token, result } => {
                    if let Some(reply) = self.writes.remove(&token) {
                        let _ = reply.send(result);
                    }
                }
                Effect::Send { link, to, request } => {
                    if !self.links.contains_key(&(link.epoch, link.slot)) {
                        self.links.retain(|(epoch, _), _| *epoch == link.epoch);
                        // Never this thread's own runtime: a link must not wait out the fsyncs.
                        let runtime = self.links_runtime.as_ref().expect("set when the task starts");
                        let tx =
                            link::spawn(runtime, &to.name, to.addr.clone(), self.cfg.clone(), self.answers.clone());
                        self.links.insert((link.epoch, link.slot), tx);
                    }
                    let _ = self.links[&(link.epoch, link.slot)].send((link, request));
                }
            }
        }
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
        c.syncs = syncs;
    }
}
