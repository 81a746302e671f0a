//! Simulated clients with the balancer's retry rules, recording what they saw.
//!
//! A client runs one operation at a time on a small key space shared with the other
//! clients (so they contend). Each attempt goes to the shard's primary as the coordinator
//! currently names it; a retryable error (the balancer's own [`is_retryable`]) or a call
//! that times out is retried with the same (client, seq) after a backoff, until the
//! balancer's deadline; then the last attempt's error is the answer, as the balancer gives
//! it. Every finished operation goes into the [`History`] with the outcome the README's
//! table of error meanings gives it.

use shardline_balancer::config::BalancerConfig;
use shardline_balancer::route::{final_error, is_retryable, may_have_logged};
use shardline_protocol::consistency::ENTRIES_BOUND_FRESH_MS;
use shardline_protocol::{Consistency, ErrorCode, Operation, Row, SessionToken, ShardId, ShardPosition, Value};

use crate::history::{Acked, History, Level, LevelRead, Op, OpKind, Outcome};
use crate::world::{Addr, ClientAnswer, ClientRequest, Event, Msg, Nanos, World, MS};

/// The operation a client has in flight.
#[derive(Debug)]
struct Pending {
    kind: OpKind,
    /// A read at a level other than primary: goes to a random replica of the shard until
    /// an attempt fails, then to the primary (as the balancer's `reader_at`).
    level: Option<Level>,
    to_primary: bool,
    key: i64,
    shard: ShardId,
    request: ClientRequest,
    invoke: Nanos,
    deadline: Nanos,
    attempt: u64,
    backoff: Nanos,
    target: Option<String>,
    maybe_logged: bool,
}

/// One simulated client.
#[derive(Debug)]
pub struct SimClient {
    /// Test-only ([`Broken::DefiniteRefusals`](crate::run::Broken)): answer the last
    /// attempt's error as it is.
    pub last_error_only: bool,
    /// Bytes of filler in every row written (wide rows).
    pub filler: usize,
    id: u32,
    keys: Vec<(i64, ShardId)>,
    seq: u64,
    values: u64,
    attempts: u64,
    pending: Option<Pending>,
    deadline: Nanos,
    call_timeout: Nanos,
    backoff_min: Nanos,
    backoff_max: Nanos,
    /// Stop starting new operations.
    pub stopped: bool,
    /// Acknowledged writes: (shard, term, node that answered).
    pub acks: Vec<(u32, u64, String)>,
    /// Writes acknowledged after the given moment (for the liveness check).
    pub acked_at: Vec<Nanos>,
    /// The highest position seen per shard, sent with session reads.
    session: SessionToken,
    /// Test-only ([`Broken::SessionIgnored`](crate::run::Broken)): send session reads
    /// with an empty token.
    pub forget_session: bool,
}

impl SimClient {
    /// Client `id` working on `keys` (each with its shard).
    pub fn new(id: u32, keys: Vec<(i64, ShardId)>) -> SimClient {
        let b = BalancerConfig::default();
        SimClient {
            last_error_only: false,
            filler: 0,
            id,
            keys,
            seq: 0,
            values: 0,
            attempts: 0,
            pending: None,
            deadline: b.retry_deadline.as_nanos() as Nanos,
            call_timeout: b.call_timeout.min(b.retry_deadline).as_nanos() as Nanos,
            backoff_min: b.backoff_min.as_nanos() as Nanos,
            backoff_max: b.backoff_max.as_nanos() as Nanos,
            stopped: false,
            acks: Vec::new(),
            acked_at: Vec::new(),
            session: SessionToken::new(),
            forget_session: false,
        }
    }

    /// Whether an operation is in flight.
    pub fn busy(&self) -> bool {
        self.pending.is_some()
    }

    /// Starts the next operation, or retries the one in flight.
    pub fn step(&mut self, world: &mut World, history: &mut History, coordinator: &crate::coordinator::SimCoordinator) {
        if self.pending.is_none() {
            if self.stopped {
                return;
            }
            self.pending = Some(self.next_op(world));
        }
        self.attempts += 1;
        let p = self.pending.as_mut().expect("an operation");
        p.attempt = self.attempts;
        let replica = match (p.level, p.to_primary) {
            (Some(_), false) => coordinator.meta().shards.get(&p.shard).and_then(|s| {
                let holders: Vec<&String> = s.replicas.iter().collect();
                (!holders.is_empty()).then(|| holders[world.rng.range(0, holders.len() as u64) as usize].as_str())
            }),
            _ => None,
        };
        let Some(target) = replica.or_else(|| coordinator.primary_of(p.shard)) else {
            let e = ErrorCode::Unavailable { shard: p.shard, reason: "no primary".into() };
            return self.failed(world, history, e);
        };
        let node = target.strip_prefix('N').and_then(|n| n.parse().ok()).unwrap_or(usize::MAX);
        p.target = Some(target.to_owned());
        let msg = Msg::Client { id: p.attempt, shard: p.shard, request: p.request.clone() };
        world.send(Addr::Client(self.id), Addr::Node(node), msg);
        let wait = self.call_timeout.min(p.deadline.saturating_sub(world.now)).max(MS);
        world.after(wait, Event::ClientTimeout { client: self.id, attempt: p.attempt });
    }

    fn next_op(&mut self, world: &mut World) -> Pending {
        let (key, shard) = *world.rng.pick(&self.keys);
        self.values += 1;
        let value = u64::from(self.id) * 1_000_000_000 + self.values;
        let row = Row::new(key, vec![Value::Str("x".repeat(self.filler)), Value::Int(value as i64)]);
        self.seq += 1;
        let (client_id, seq) = (1000 + u64::from(self.id), self.seq);
        let (kind, request) = match world.rng.range(0, 100) {
            0..30 => {
                (OpKind::Insert(value), ClientRequest::Write(Operation::Write { client_id, seq, rows: vec![row] }))
            }
            30..55 => (OpKind::Update(value), ClientRequest::Write(Operation::Update { client_id, seq, row })),
            55..70 => (OpKind::Delete, ClientRequest::Write(Operation::Delete { client_id, seq, key })),
            _ => (OpKind::Read, ClientRequest::Read { key, level: Consistency::Primary }),
        };
        let level = matches!(kind, OpKind::Read).then(|| self.pick_level(world)).flatten();
        let request = match level {
            Some(level) => ClientRequest::Read { key, level: self.consistency(level, shard) },
            None => request,
        };
        Pending {
            kind,
            level,
            to_primary: false,
            key,
            shard,
            request,
            invoke: world.now,
            deadline: world.now + self.deadline,
            attempt: 0,
            backoff: self.backoff_min,
            target: None,
            maybe_logged: false,
        }
    }

    /// An answer from a node.
    pub fn on_answer(
        &mut self,
        world: &mut World,
        history: &mut History,
        id: u64,
        answer: Result<ClientAnswer, ErrorCode>,
    ) {
        let Some(p) = &self.pending else { return };
        if p.attempt != id {
            return;
        }
        match answer {
            Ok(ClientAnswer::Committed { shard, term, index, rows }) => {
                // A retry answered from an earlier attempt's commit names that commit's
                // term, not the answering primary's: only fresh commits say who led.
                if rows > 0 {
                    let node = p.target.clone().unwrap_or_default();
                    self.acks.push((shard.0, term, node));
                }
                self.session.observe(ShardPosition { shard, term, index });
                let acked = Acked { client: self.id, shard: shard.0, key: p.key, index, complete: world.now };
                history.acked.push(acked);
                self.acked_at.push(world.now);
                self.finish(world, history, Some(Outcome::Ok));
            }
            Ok(ClientAnswer::Rows { rows, at }) => {
                let value = rows.iter().find(|r| r.key == p.key).and_then(|r| match r.values.get(1) {
                    Some(Value::Int(v)) => Some(*v as u64),
                    _ => None,
                });
                self.session.observe(ShardPosition { shard: p.shard, term: at.term, index: at.index });
                if let Some(level) = p.level {
                    history.level_reads.push(LevelRead {
                        client: self.id,
                        shard: p.shard.0,
                        key: p.key,
                        level,
                        invoke: p.invoke,
                        complete: world.now,
                        value,
                        at: at.index,
                    });
                    return self.finish(world, history, None);
                }
                self.finish(world, history, Some(Outcome::Read(value)));
            }
            Err(e) => self.failed(world, history, e),
        }
    }

    /// The attempt `attempt` had no answer within the call timeout.
    pub fn on_timeout(&mut self, world: &mut World, history: &mut History, attempt: u64) {
        if self.pending.as_ref().is_some_and(|p| p.attempt == attempt) {
            self.failed(world, history, ErrorCode::Timeout("the node did not answer in time".into()));
        }
    }

    /// An attempt failed with `e`: retry while the balancer would, else answer `e`.
    fn failed(&mut self, world: &mut World, history: &mut History, e: ErrorCode) {
        let p = self.pending.as_mut().expect("an operation in flight");
        p.attempt = 0;
        let was_replica = !std::mem::replace(&mut p.to_primary, true);
        if matches!(e, ErrorCode::Behind { .. }) && p.level.is_some() && was_replica {
            // As the balancer does: a replica too stale for the level sends the read
            // to the primary at once.
            world.after(0, Event::ClientStep(self.id));
            return;
        }
        if is_retryable(&e) && world.now + p.backoff < p.deadline {
            world.after(p.backoff, Event::ClientStep(self.id));
            p.backoff = (p.backoff * 2).min(self.backoff_max);
            p.maybe_logged |= may_have_logged(&e);
            return;
        }
        let e = if self.last_error_only { e } else { final_error(e, p.maybe_logged) };
        let outcome = match (p.kind, &e) {
            (OpKind::Read, _) => None,
            (_, ErrorCode::DuplicateKey { .. } | ErrorCode::NotFound { .. }) => Some(Outcome::PreconditionFailed),
            (_, ErrorCode::NotPrimary { .. } | ErrorCode::LeaseExpired { .. } | ErrorCode::NoQuorum { .. }) => {
                Some(Outcome::Refused)
            }
            (_, ErrorCode::KeyOutOfRange { .. } | ErrorCode::SchemaViolation(_) | ErrorCode::BadRequest(_)) => {
                Some(Outcome::Refused)
            }
            _ => Some(Outcome::Unknown),
        };
        self.finish(world, history, outcome);
    }

    /// A read's level: 30% primary (the linearizable checker's), the rest spread over
    /// `any`, `session` and `bounded` (by time, or by entries).
    fn pick_level(&mut self, world: &mut World) -> Option<Level> {
        Some(match world.rng.range(0, 10) {
            0..3 => return None,
            3..5 => Level::Any,
            5..8 => Level::Session,
            8 => Level::Bounded { max_lag_ms: [0, 20, 100, 400][world.rng.range(0, 4) as usize], max_lag_entries: 0 },
            _ => Level::Bounded { max_lag_ms: ENTRIES_BOUND_FRESH_MS, max_lag_entries: world.rng.range(0, 6) },
        })
    }

    /// What a read at `level` of `shard` asks the node.
    fn consistency(&self, level: Level, shard: ShardId) -> Consistency {
        match level {
            Level::Any => Consistency::Any,
            Level::Bounded { max_lag_ms, max_lag_entries } => Consistency::Bounded { max_lag_ms, max_lag_entries },
            Level::Session if self.forget_session => Consistency::Session { positions: Vec::new() },
            Level::Session => self.session.consistency().for_shard(shard),
        }
    }

    /// Records the operation (reads only when they returned) and schedules the next one.
    fn finish(&mut self, world: &mut World, history: &mut History, outcome: Option<Outcome>) {
        let p = self.pending.take().expect("an operation in flight");
        if let Some(outcome) = outcome {
            history.push(Op {
                client: self.id,
                key: p.key,
                kind: p.kind,
                invoke: p.invoke,
                complete: world.now,
                outcome,
            });
        }
        let think = world.rng.range(MS, 20 * MS);
        world.after(think, Event::ClientStep(self.id));
    }
}
