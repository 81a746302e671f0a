//! One failover run: bring up (or reach) the cluster, start the load, then fault after
//! fault on a shard's current primary (shards taken in turn, kinds taken in turn), each
//! time waiting until the cluster is healthy again (a primary at a newer term, every
//! replica readable, every server up) and the shard has taken a write and served a read
//! sent after the fault; then stop the load and read every written key back.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use shardline::{Client, Topology};

use crate::cluster::LocalCluster;
use crate::error::BenchError;
use crate::failover::inject::{Injected, Injector};
use crate::failover::ledger::{self, Verdict};
use crate::failover::load::{self, KeyBlock, Load, LoadPlan};
use crate::failover::report::FailoverReport;
use crate::failover::window::{FaultEvent, FaultKind, OpKind};
use crate::failover::{layout, FailoverSpec, Target};
use crate::prepare::{self, RowMaker};

/// How often STATUS is asked while waiting.
const POLL: Duration = Duration::from_millis(50);

/// Longest wait for a window to close once the cluster is healthy again.
const WINDOW_GRACE: Duration = Duration::from_secs(10);

/// Bytes of the string column in written rows.
const ROW_SIZE: usize = 32;

/// Runs `spec` and returns its report (the files are written by the caller).
pub async fn run(spec: &FailoverSpec) -> Result<FailoverReport, BenchError> {
    spec.validate()?;
    // Kept alive for the whole run: dropping it stops the cluster it started.
    let mut own = None;
    let (addr, injector, label) = match &spec.target {
        Target::OwnCluster { shardline_bin } => {
            let c = LocalCluster::start(shardline_bin, Some(&layout()), Duration::from_secs(90)).await?;
            let nodes_dir = nodes_dir_of(&c.data_dir());
            let addr = c.addr();
            own = Some(c);
            (addr, Injector::processes(nodes_dir, &spec.kinds)?, "processes (shardline up, started by the bench)")
        }
        Target::Processes { addr, nodes_dir } => {
            (addr.clone(), Injector::processes(nodes_dir.clone(), &spec.kinds)?, "processes (shardline up)")
        }
        Target::Docker { addr, prefix } => (addr.clone(), Injector::docker(prefix.clone()).await?, "Docker containers"),
    };
    let result = measure(spec, &addr, &injector).await;
    if let Some(c) = own {
        c.stop(Duration::from_secs(10)).await;
    }
    let mut report = result?;
    report.target = label.to_owned();
    Ok(report)
}

async fn measure(spec: &FailoverSpec, addr: &str, injector: &Injector) -> Result<FailoverReport, BenchError> {
    let (admin, topology) = ready_topology(addr, spec.recover_timeout).await?;
    let schema = topology.schema.clone().ok_or_else(|| BenchError::Cluster("no schema after init".into()))?;
    let blocks = load::key_blocks(&admin, &topology).await?;
    let plan = LoadPlan {
        addr: addr.to_owned(),
        connections: spec.connections,
        rate: spec.rate,
        write_percent: spec.write_percent,
        primary_reads: spec.primary_reads,
        seed: spec.seed,
    };
    let rows = RowMaker::new(&schema, ROW_SIZE);
    let load = Load::start(&plan, rows.clone(), blocks, Instant::now()).await?;
    let progress = progress_bar(spec);
    let events = faults(spec, &admin, injector, &load, &progress).await;
    progress.finish_and_clear();
    let blocks = load.blocks.clone();
    let elapsed = load.start.elapsed();
    let log = load.stop().await?;
    let events = events?;
    let verdict = read_back(&admin, &blocks, &log.written, &rows).await?;
    let notes = blocks
        .iter()
        .filter(|b| b.used() >= b.len)
        .map(|b| format!("sh{}'s {} free keys ran out: later calls on it were reads", b.shard, b.len))
        .collect();
    Ok(FailoverReport::new(spec, addr, elapsed, &log.records, events, verdict, notes))
}

/// A client of the balancer at `addr` and the topology, once the balancer answers (a
/// stack just started may take a while) and the cluster is initialized (with the bench's
/// layout, if it was not) and settled, all within `limit`.
async fn ready_topology(addr: &str, limit: Duration) -> Result<(Client, Topology), BenchError> {
    let deadline = Instant::now() + limit;
    let admin = loop {
        match prepare::connect(addr, load::client_config()).await {
            Ok(client) => break client,
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let first = wait_until(&admin, limit, |t| Some(t.clone()))
        .await
        .ok_or_else(|| BenchError::Cluster(format!("no STATUS from {addr} within {limit:?}")))?;
    if first.schema.is_none() {
        admin.init(layout()).await.map_err(|e| BenchError::client("initializing the cluster", e))?;
    }
    let settled = wait_until(&admin, limit, |t| t.is_settled().then(|| t.clone()))
        .await
        .ok_or_else(|| BenchError::Cluster(format!("the cluster did not settle within {limit:?}")))?;
    Ok((admin, settled))
}

/// Polls STATUS until `done` gives a value, at most `limit`.
async fn wait_until<T>(admin: &Client, limit: Duration, mut done: impl FnMut(&Topology) -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    for _ in 0..(limit.as_millis() / POLL.as_millis() + 2) {
        if let Ok(t) = admin.status().await {
            if let Some(v) = done(&t) {
                return Some(v);
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    None
}

fn progress_bar(spec: &FailoverSpec) -> ProgressBar {
    if !spec.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(spec.total_events() as u64);
    let style = ProgressStyle::with_template("{bar:30} {pos}/{len} faults  {msg}").expect("a valid template");
    bar.set_style(style);
    bar
}

/// Every fault of the run, in order.
async fn faults(
    spec: &FailoverSpec,
    admin: &Client,
    injector: &Injector,
    load: &Load,
    progress: &ProgressBar,
) -> Result<Vec<FaultEvent>, BenchError> {
    tokio::time::sleep(spec.interval).await;
    let mut events = Vec::with_capacity(spec.total_events());
    for i in 0..spec.total_events() {
        let kind = spec.kind_of(i);
        let topology = admin.status().await.map_err(|e| BenchError::client("STATUS before a fault", e))?;
        let shard = &topology.shards[i % topology.shards.len()];
        let block = load.blocks.iter().find(|b| b.shard == shard.spec.id.0).expect("a block per shard").clone();
        let victim =
            shard.primary.clone().ok_or_else(|| BenchError::Cluster(format!("{} has no primary", shard.spec.id)))?;
        let port = topology.server(&victim).and_then(|s| port_of(&s.addr)).unwrap_or(0);
        progress.set_message(format!("{} of {}'s primary {victim}", kind.name(), shard.spec.id));
        let injected = injector.inject(kind, &victim, port, spec.hold).await?;
        let event = recover(spec, admin, load, &block, kind, (&victim, shard.term), injected).await?;
        events.push(event);
        progress.inc(1);
        tokio::time::sleep(spec.interval).await;
    }
    Ok(events)
}

/// The port of `host:port`.
fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit(':').next()?.parse().ok()
}

/// Waits for the cluster to heal after a fault on `block`'s shard and for both windows to
/// close (or [`WINDOW_GRACE`] to pass); the event as it happened.
async fn recover(
    spec: &FailoverSpec,
    admin: &Client,
    load: &Load,
    block: &KeyBlock,
    kind: FaultKind,
    (victim, term_before): (&str, u64),
    injected: Injected,
) -> Result<FaultEvent, BenchError> {
    let us = |t: Instant| t.saturating_duration_since(load.start).as_micros() as u64;
    let at_us = us(injected.at);
    let shard = block.shard;
    // A pause or cut shorter than failure detection leaves the old primary in place.
    let needs_new_term = injected.healed.is_none();
    let healed = wait_until(admin, spec.recover_timeout, |t| {
        let s = t.shards.iter().find(|s| s.spec.id.0 == shard)?;
        let moved_on = s.term > term_before || !needs_new_term;
        (moved_on && t.is_settled()).then(|| (s.primary.clone(), s.term))
    })
    .await;
    let Some((primary_after, term_after)) = healed else {
        return Err(BenchError::Cluster(format!(
            "after the {} of sh{shard}'s primary {victim}, the cluster was not healthy again within {:?}",
            kind.name(),
            spec.recover_timeout
        )));
    };
    let recovered_us = load.now_us();
    let deadline = Instant::now() + WINDOW_GRACE;
    while Instant::now() < deadline
        && !(block.succeeded_since(OpKind::Write, at_us) && block.succeeded_since(OpKind::Read, at_us))
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(FaultEvent {
        kind,
        shard,
        victim: victim.to_owned(),
        term_before,
        at_us,
        inject_ms: injected.took.as_secs_f64() * 1000.0,
        healed_us: injected.healed.map(us),
        recovered_us,
        primary_after,
        term_after,
    })
}

/// Reads every block's written keys back from the primaries and checks them.
async fn read_back(
    admin: &Client,
    blocks: &[std::sync::Arc<KeyBlock>],
    written: &[ledger::Written],
    rows: &RowMaker,
) -> Result<Verdict, BenchError> {
    let mut held = Vec::new();
    for b in blocks.iter().filter(|b| b.used() > 0) {
        held.extend(load::read_chunks(admin, b.start, b.start + b.used() as i64 - 1).await?);
    }
    Ok(ledger::check(written, &held, |k| rows.row(k)))
}

/// Where `shardline up --data-dir DIR` keeps the nodes' pid files.
pub fn nodes_dir_of(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("coordinator").join("nodes")
}
