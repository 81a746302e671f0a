//! After `shardline add`: wait until the new replicas serve reads, showing each one's copy
//! as a progress bar (bytes of the snapshot its primary has sent it, of the estimate).
//!
//! The cluster's STATUS lists the snapshot copies under way as the coordinator last heard
//! of them from each node (every heartbeat); a new replica catching up by the log instead
//! shows as a spinner until it is readable. Where stderr is not a terminal the bars are
//! not drawn, and a line per replica is printed each second instead.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use shardline::{Client, CopyDirection, CopyProgress, ShardId, Topology};

/// How often STATUS is asked while waiting.
const POLL: Duration = Duration::from_millis(200);
/// How long the wait goes on with no replica becoming readable and no copy moving.
const STALL: Duration = Duration::from_secs(120);

/// A replica of a shard on a server.
pub(crate) type Replica = (ShardId, String);

/// The replicas `after` lists that `before` did not: the ones an add created.
pub(crate) fn new_replicas(before: &Topology, after: &Topology) -> Vec<Replica> {
    let mut out = Vec::new();
    for shard in &after.shards {
        let old = before.shards.iter().find(|s| s.spec.id == shard.spec.id);
        for server in &shard.replicas {
            if old.is_none_or(|s| !s.replicas.contains(server)) {
                out.push((shard.spec.id, server.clone()));
            }
        }
    }
    out
}

/// The copy to `replica` under way, as its sender reports it (or else its receiver), with
/// the server it comes from.
pub(crate) fn copy_to<'a>(t: &'a Topology, (shard, server): &Replica) -> Option<(&'a str, &'a CopyProgress)> {
    let of_shard = || t.copies.iter().filter(move |c| c.shard == *shard);
    let sent = of_shard()
        .find(|c| c.progress.direction == CopyDirection::Sending && c.progress.peer == *server)
        .map(|c| (c.server.as_str(), &c.progress));
    sent.or_else(|| {
        of_shard()
            .find(|c| c.progress.direction == CopyDirection::Receiving && c.server == *server)
            .map(|c| (c.progress.peer.as_str(), &c.progress))
    })
}

/// Whether `replica` serves reads in `t`.
pub(crate) fn readable(t: &Topology, (shard, server): &Replica) -> bool {
    t.shards.iter().any(|s| s.spec.id == *shard && s.readable.contains(server))
}

/// Waits until every replica in `replicas` is readable, drawing their progress.
pub(crate) async fn wait(client: &Client, replicas: Vec<Replica>) -> anyhow::Result<Topology> {
    let tty = std::io::stderr().is_terminal();
    let bars =
        MultiProgress::with_draw_target(if tty { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() });
    let style = ProgressStyle::with_template(
        "{prefix:>14} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
    )
    .expect("a valid template")
    .progress_chars("=> ");
    let mut shown: BTreeMap<Replica, ProgressBar> = BTreeMap::new();
    for r in &replicas {
        let bar = bars.add(ProgressBar::new(0).with_style(style.clone()).with_prefix(format!("{} on {}", r.0, r.1)));
        bar.set_message("catching up");
        shown.insert(r.clone(), bar);
    }
    let (mut moved, mut printed) = (Instant::now(), Instant::now());
    let mut last: Vec<(bool, u64)> = Vec::new();
    loop {
        let t = client.status().await?;
        let now: Vec<(bool, u64)> =
            replicas.iter().map(|r| (readable(&t, r), copy_to(&t, r).map_or(0, |(_, c)| c.copied.bytes))).collect();
        if now != last {
            moved = Instant::now();
        }
        for (r, bar) in &shown {
            if readable(&t, r) {
                if !bar.is_finished() {
                    bar.finish_with_message("readable");
                }
            } else if let Some((from, c)) = copy_to(&t, r) {
                bar.set_length(c.total.bytes.max(c.copied.bytes));
                bar.set_position(c.copied.bytes);
                bar.set_message(format!("{}/{} rows from {from}", c.copied.rows, c.total.rows));
            }
        }
        if !tty && printed.elapsed() >= Duration::from_secs(1) {
            printed = Instant::now();
            for r in replicas.iter().filter(|r| !readable(&t, r)) {
                eprintln!("{}", progress_line(&t, r));
            }
        }
        if now.iter().all(|(ready, _)| *ready) {
            return Ok(t);
        }
        if moved.elapsed() > STALL {
            bail!("no new replica became readable and no copy moved for {STALL:?}; `shardline status` shows where they are");
        }
        last = now;
        tokio::time::sleep(POLL).await;
    }
}

/// A plain line for one replica still catching up.
fn progress_line(t: &Topology, r: &Replica) -> String {
    match copy_to(t, r) {
        Some((from, c)) => format!(
            "{} on {}: copying from {from}: {}/{} rows, {:.1}/{:.1} MiB ({:.0}%)",
            r.0,
            r.1,
            c.copied.rows,
            c.total.rows,
            c.copied.bytes as f64 / (1 << 20) as f64,
            c.total.bytes as f64 / (1 << 20) as f64,
            c.fraction() * 100.0
        ),
        None => format!("{} on {}: catching up", r.0, r.1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline::{CopySize, ShardCopy, ShardSpec, ShardTopology};

    fn shard(id: u32, replicas: &[&str], readable: &[&str]) -> ShardTopology {
        ShardTopology {
            spec: ShardSpec { id: ShardId(id), low: 0, size: 10 },
            term: 1,
            primary: Some(replicas[0].into()),
            replicas: replicas.iter().map(|s| s.to_string()).collect(),
            readable: readable.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn copy(server: &str, direction: CopyDirection, peer: &str, rows: u64) -> ShardCopy {
        let progress = CopyProgress {
            direction,
            peer: peer.into(),
            upto: 9,
            copied: CopySize { rows, bytes: rows * 10 },
            total: CopySize { rows: 100, bytes: 1000 },
        };
        ShardCopy { shard: ShardId(1), server: server.into(), progress }
    }

    #[test]
    fn the_new_replicas_are_those_added() {
        let before = Topology { shards: vec![shard(1, &["a", "b"], &["a", "b"])], ..Topology::default() };
        let after = Topology {
            shards: vec![shard(1, &["a", "b", "c"], &["a", "b"]), shard(2, &["c"], &[])],
            ..Topology::default()
        };
        assert_eq!(new_replicas(&before, &after), vec![(ShardId(1), "c".into()), (ShardId(2), "c".into())]);
    }

    #[test]
    fn the_senders_progress_comes_first() {
        let mut t = Topology { shards: vec![shard(1, &["a", "c"], &["a"])], ..Topology::default() };
        let c = (ShardId(1), "c".to_owned());
        assert!(copy_to(&t, &c).is_none() && !readable(&t, &c));
        t.copies.push(copy("c", CopyDirection::Receiving, "a", 20));
        assert_eq!(copy_to(&t, &c).map(|(f, p)| (f, p.copied.rows)), Some(("a", 20)), "the receiver's, if alone");
        t.copies.push(copy("a", CopyDirection::Sending, "c", 30));
        t.copies.push(copy("b", CopyDirection::Sending, "d", 90));
        assert_eq!(copy_to(&t, &c).map(|(f, p)| (f, p.copied.rows)), Some(("a", 30)), "the sender's to c");
        let line = progress_line(&t, &c);
        assert!(line.starts_with("sh1 on c: copying from a: 30/100 rows"), "{line}");
    }
}
