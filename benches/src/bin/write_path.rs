//! The storage write path, end to end on loopback: acknowledged writes/s, latency and
//! fsyncs per acknowledged write for one shard, with 1, 16 and 64 concurrent writers, for
//! 1, 3 and 5 replicas.
//!
//! Each configuration starts fresh storage nodes in this process (real TCP between them,
//! real files in a temporary directory, real fsyncs), makes one the shard's primary, and
//! lets W writers (one connection each) insert single 64-byte rows for `--seconds`.
//! Besides throughput and latency it reports, from the nodes' STATS: log fsyncs per
//! acknowledged write on the primary and on each follower, the appends the primary kept in
//! flight to a follower on average (counted as each one left, itself included), and the
//! table applies (redb commits) per acknowledged write on the primary.
//! `make bench-write` runs it in release.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use shardline_protocol::{
    ControlRequest, ControlResponse, FrameCodec, Message, Request, Response, Row, Schema, ServerAddr, ShardId,
    ShardSpec, Value, WriteBatch,
};
use shardline_storage_node::config::NodeConfig;
use shardline_storage_node::failpoint::Failpoints;
use shardline_storage_node::node::Node;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// Benchmarks one shard's write path on loopback.
#[derive(Debug, Parser)]
struct Args {
    /// Seconds each configuration runs (after a 1 s warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent writers to try, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    writers: Vec<usize>,
    /// Replica counts to try, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,3,5")]
    replicas: Vec<usize>,
}

const SHARD: ShardId = ShardId(1);

struct Outcome {
    acked: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    primary_fsyncs: u64,
    follower_fsyncs: u64,
    /// Appends the primary sent, and the messages in flight summed over them.
    appends_sent: u64,
    in_flight_sum: u64,
    /// Table applies on the primary.
    primary_applies: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.writers.contains(&0) || args.replicas.contains(&0) || args.seconds == 0 {
        bail!("writers, replicas and seconds must all be above zero");
    }
    println!("one shard, single-row inserts (~64 B), {} s per run, loopback, fsync on\n", args.seconds);
    println!(
        "{:>8} {:>7} {:>12} {:>9} {:>9} {:>9} {:>13} {:>13} {:>10} {:>12}",
        "replicas",
        "writers",
        "acked/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "fsyncs/ack P",
        "fsyncs/ack F",
        "in flight",
        "applies/ack"
    );
    for &replicas in &args.replicas {
        for &writers in &args.writers {
            let o = run(replicas, writers, Duration::from_secs(args.seconds)).await?;
            let ms = |q: f64| o.latency.value_at_quantile(q) as f64 / 1000.0;
            let followers = (replicas - 1).max(1) as f64;
            let per_ack = |n: u64| n as f64 / o.acked.max(1) as f64;
            println!(
                "{:>8} {:>7} {:>12.0} {:>9.2} {:>9.2} {:>9.2} {:>13.3} {:>13} {:>10} {:>12.3}",
                replicas,
                writers,
                o.acked as f64 / o.elapsed.as_secs_f64(),
                ms(0.5),
                ms(0.99),
                o.latency.max() as f64 / 1000.0,
                per_ack(o.primary_fsyncs),
                if replicas > 1 { format!("{:.3}", per_ack(o.follower_fsyncs) / followers) } else { "-".into() },
                if o.appends_sent > 0 {
                    format!("{:.2}", o.in_flight_sum as f64 / o.appends_sent as f64)
                } else {
                    "-".into()
                },
                per_ack(o.primary_applies),
            );
        }
    }
    println!(
        "\nP: the primary's log fsyncs per acknowledged write; F: each follower's. in flight: appends \
         in flight to a follower as each was sent, on average (itself included; 1.00 is \
         stop-and-wait). applies/ack: the primary's table commits per acknowledged write."
    );
    Ok(())
}

async fn run(replicas: usize, writers: usize, duration: Duration) -> anyhow::Result<Outcome> {
    let dir = tempfile::tempdir()?;
    let mut addrs = Vec::new();
    for i in 0..replicas {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cfg = NodeConfig::new(format!("Server{i}"), addr, dir.path().join(format!("n{i}")));
        let limits = cfg.limits();
        let node = Node::open(cfg, Failpoints::none())?;
        tokio::spawn(node.serve(listener, limits, std::future::pending()));
        addrs.push(addr);
    }
    let spec = ShardSpec { id: SHARD, low: 0, size: 1 << 40 };
    for addr in &addrs {
        expect_ok(control(*addr, ControlRequest::ConfigureShard { shard: spec, schema: Schema::seed() }).await?)?;
    }
    let server = |i: usize| ServerAddr { name: format!("Server{i}"), addr: addrs[i].to_string() };
    for addr in &addrs[1..] {
        let follow = ControlRequest::BecomeFollower { shard: SHARD, term: 1, primary: server(0) };
        expect_ok(control(*addr, follow).await?)?;
    }
    let followers = (1..replicas).map(server).collect();
    let lease_ms = 3_600_000;
    // The first lease counts from the primary's answer to the election query.
    control(addrs[0], ControlRequest::ElectionQuery { shard: SHARD, term: 1 }).await?;
    expect_ok(
        control(
            addrs[0],
            ControlRequest::BecomePrimary { shard: SHARD, term: 1, followers, learners: vec![], lease_ms },
        )
        .await?,
    )?;

    let warmup = Duration::from_secs(1);
    let measure_from = Instant::now() + warmup;
    let stop = measure_from + duration;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let addr = addrs[0];
        tasks.push(tokio::spawn(async move { writer(addr, w as i64, measure_from, stop).await }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let before = counters(&addrs).await?;
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut acked = 0;
    for t in tasks {
        let (h, n) = t.await??;
        latency.add(h)?;
        acked += n;
    }
    let after = counters(&addrs).await?;
    let delta = |node: usize, name: &str| after[node][name] - before[node][name];
    Ok(Outcome {
        acked,
        elapsed: duration,
        latency,
        primary_fsyncs: delta(0, "fsyncs"),
        follower_fsyncs: (1..replicas).map(|n| delta(n, "fsyncs")).sum(),
        appends_sent: delta(0, "appends_sent"),
        in_flight_sum: delta(0, "appends_in_flight_sum"),
        primary_applies: delta(0, "applies"),
    })
}

/// One writer: inserts distinct keys back to back; records latency after the warm-up.
async fn writer(
    addr: SocketAddr,
    id: i64,
    measure_from: Instant,
    stop: Instant,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut conn = Framed::new(stream, FrameCodec::default());
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut acked = 0;
    let name = "x".repeat(48);
    for seq in 1u64.. {
        let now = Instant::now();
        if now >= stop {
            break;
        }
        let key = id * 1_000_000_000 + seq as i64;
        let row = Row::new(key, vec![Value::Str(name.clone()), Value::Int(seq as i64)]);
        let request = Request::Write(WriteBatch::encode(id as u64 + 1, seq, &[row])?);
        conn.send(request.to_frame(seq)?).await?;
        let frame = conn.next().await.context("node closed the connection")??;
        match Response::from_frame(&frame)? {
            Response::Committed(_) => {
                if now >= measure_from {
                    latency.record(now.elapsed().as_micros().max(1) as u64)?;
                    acked += 1;
                }
            }
            other => bail!("write {key} failed: {other:?}"),
        }
    }
    Ok((latency, acked))
}

/// The shard's counters each node reports in STATS (fsyncs, appends sent, ...), by name.
async fn counters(addrs: &[SocketAddr]) -> anyhow::Result<Vec<std::collections::HashMap<String, u64>>> {
    const NAMES: [&str; 4] = ["fsyncs", "appends_sent", "appends_in_flight_sum", "applies"];
    let mut out = Vec::new();
    for addr in addrs {
        let Response::Stats(pairs) = request(*addr, Request::Stats).await? else { bail!("no stats") };
        let value = |name: &str| {
            let key = format!("{SHARD}.{name}");
            pairs.iter().find(|(k, _)| *k == key).and_then(|(_, v)| v.parse().ok()).unwrap_or(0)
        };
        out.push(NAMES.iter().map(|&name| (name.to_owned(), value(name))).collect());
    }
    Ok(out)
}

async fn control(addr: SocketAddr, request: ControlRequest) -> anyhow::Result<ControlResponse> {
    let mut conn = Framed::new(TcpStream::connect(addr).await?, FrameCodec::default());
    conn.send(request.to_frame(1)?).await?;
    let frame = conn.next().await.context("closed")??;
    Ok(ControlResponse::from_frame(&frame)?)
}

async fn request(addr: SocketAddr, request: Request) -> anyhow::Result<Response> {
    let mut conn = Framed::new(TcpStream::connect(addr).await?, FrameCodec::default());
    conn.send(request.to_frame(1)?).await?;
    let frame = conn.next().await.context("closed")??;
    Ok(Response::from_frame(&frame)?)
}

fn expect_ok(response: ControlResponse) -> anyhow::Result<()> {
    match response {
        ControlResponse::Ok => Ok(()),
        other => bail!("control request failed: {other:?}"),
    }
}
