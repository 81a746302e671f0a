//! Shardline on Docker, end to end: `make up` brings up coordinator + balancer with
//! docker-compose from the `make images` image, the coordinator spawns the storage nodes as
//! containers through the Docker API, and the test talks to the published balancer port.
//!
//! One stack, reused across scenarios (Docker is slow on two cores): bring-up, write and
//! read; `docker kill` of primaries under write load (failover time measured; the killed
//! container restarted on its volume); `docker network disconnect` of a primary; AddServers
//! and RemoveServers creating and removing containers and volumes; a scoped `make clean`
//! leaving nothing of the run; then the full `make clean` (when no other Shardline stack is
//! on the engine) leaving nothing labelled, image included. Where no Docker engine answers,
//! the test prints "skipped: …".

#[path = "harness/wire.rs"]
mod common;
#[path = "docker/stack.rs"]
mod stack;
#[path = "docker/wire.rs"]
mod wire;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardline_protocol::net::MuxConn;
use shardline_protocol::{AddServersRequest, ErrorCode, Message, Request, Response, ShardId, Topology};
use stack::{docker, node_stats, stat, Stack};
use wire::{converged, primary_keys, primary_of, topology, wait_topology, write, Outcome};

const SETTLE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shardline_on_docker() {
    if let Some(reason) = stack::unavailable() {
        eprintln!("skipped: {reason}");
        return;
    }
    stack::ensure_images();
    let stack = Stack::new();
    let started = Instant::now();
    let out = stack.make("up", &[]);
    assert!(out.contains("initialized: docker/seed-init.json"), "make up did not init:\n{out}");
    stack.present_admin();
    eprintln!("make up (compose up, wait, init): {:.1} s", started.elapsed().as_secs_f64());

    bring_up(&stack).await;
    let mut acked = kills_under_load(&stack).await;
    acked.extend(network_cut(&stack).await);
    add_and_remove(&stack).await;

    let keys = primary_keys(&stack.addr(), 0, 4 * 4096 - 1).await;
    let missing: Vec<&i64> = acked.iter().filter(|k| keys.binary_search(k).is_err()).collect();
    assert!(missing.is_empty(), "acknowledged keys missing: {missing:?}");
    eprintln!("{} acknowledged writes, none missing", acked.len());

    assert!(!stack.leftovers().is_empty(), "the run's resources are visible before clean");
    stack.make("clean", &["CLEAN_SCOPE=prefix"]);
    assert_eq!(stack.leftovers(), Vec::<String>::new(), "make clean left something of this run");
    assert!(docker(&["image", "inspect", stack::IMAGE]).await.is_ok(), "a scoped clean keeps the image");

    // The full `make clean` removes everything Shardline made, the image included. It would
    // also remove a developer's own stack, so it runs only when nothing else is there (as on
    // a clean engine); a second run on the emptied engine must work too.
    let others = labelled(&["ps -aq", "volume ls -q", "network ls -q"]);
    if others.is_empty() {
        stack.make("clean", &[]);
        let left = labelled(&["ps -aq", "volume ls -q", "network ls -q", "images -q"]);
        assert_eq!(left, Vec::<String>::new(), "make clean left something labelled shardline.managed=true");
        stack.make("clean", &[]);
        eprintln!("make clean removed every container, volume, network and image Shardline made");
    } else {
        eprintln!("skipped the full make clean: other Shardline resources are here ({others:?})");
    }
    eprintln!("whole docker test: {:.0} s", started.elapsed().as_secs_f64());
}

/// Everything labelled `shardline.managed=true` that the given `docker <kind> <list>`
/// commands show.
fn labelled(kinds: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for kind in kinds {
        let mut args: Vec<&str> = kind.split(' ').collect();
        args.extend(["--filter", "label=shardline.managed=true"]);
        let out = std::process::Command::new("docker").args(&args).output().expect("running docker");
        found.extend(String::from_utf8_lossy(&out.stdout).lines().map(|l| format!("{kind}: {l}")));
    }
    found
}

/// The seed's layout came up as containers; a write and a read through the published port,
/// in frames and in the text mode; `make up` again changes nothing.
async fn bring_up(stack: &Stack) {
    let addr = stack.addr();
    let t = wait_topology(&addr, "the seed's layout settles", SETTLE, Topology::is_settled).await;
    assert_eq!((t.servers.len(), t.shards.len()), (6, 4));
    assert!(t.shards.iter().all(|s| s.replicas.len() == 3));
    let mut want: Vec<String> = t.servers.iter().map(|s| stack.container(&s.name)).collect();
    want.sort();
    assert_eq!(stack.node_containers().await, want, "one container per server");
    for s in &t.servers {
        assert_eq!(s.addr, format!("{}:7200", stack.container(&s.name)), "reached by container name");
    }

    assert!(matches!(write(&addr, 1, 1, 42, Duration::from_secs(20)).await, Outcome::Acked(_)));
    assert!(primary_keys(&addr, 0, 100).await.contains(&42));
    refuses_strangers(&addr).await;
    let admin = shardline_protocol::net::auth::outgoing().expect("the admin credential");
    let text = text_request(&addr, &format!("AUTH {} {}\nREAD 40 45", admin.user, admin.secret.0));
    assert!(text.contains("42 student42 42") && text.contains("\nOK"), "text mode answered:\n{text}");

    let again = stack.make("up", &[]);
    assert!(again.contains("already initialized"), "second make up:\n{again}");
    assert_eq!(topology(&addr).await.servers.len(), 6);
}

/// The stack asks for credentials: without any, a write is refused in frames and in the
/// text mode, and nothing is written.
async fn refuses_strangers(addr: &str) {
    let stranger = shardline_protocol::net::Outgoing::default();
    let conn = MuxConn::connect_as(Arc::from(addr), Duration::from_secs(10), 1 << 20, 16, &stranger)
        .await
        .expect("a connection without credentials");
    let batch = shardline_protocol::WriteBatch::encode(7, 1, &[common::row(43)]).expect("a batch");
    let answer = conn.call(Request::Write(batch).to_frame(1).unwrap(), Duration::from_secs(10)).await.unwrap();
    let answer = Response::from_frame(&answer).expect("a response");
    assert!(matches!(answer, Response::Error(ErrorCode::Unauthenticated(_))), "an unauthenticated write: {answer:?}");
    let text = text_request(addr, "WRITE 43 eve 1");
    assert!(text.trim_start().starts_with("ERR Unauthenticated"), "an unauthenticated text write: {text}");
    assert!(!primary_keys(addr, 0, 100).await.contains(&43), "a stranger's write was applied");
}

/// Lines to the text mode (what `nc 127.0.0.1 PORT` does); the answers up to the last
/// line's OK/ERR.
fn text_request(addr: &str, lines: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(format!("{lines}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    let mut left = lines.lines().count();
    for l in BufReader::new(stream).lines().take(1000) {
        let l = l.expect("an answer line");
        answer.push('\n');
        answer.push_str(&l);
        if l.starts_with("OK") || l.starts_with("ERR") {
            left -= 1;
            if left == 0 {
                break;
            }
        }
    }
    answer
}

/// A steady write load, one writer a shard, until `stop`; returns the acknowledged keys.
fn load(addr: String, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<Vec<i64>>> {
    (0..4i64)
        .map(|shard| {
            let (addr, stop) = (addr.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                for i in 0..1800i64 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    tick.tick().await;
                    let key = 4096 * shard + 100 + i;
                    let client = 1000 + shard as u64;
                    if let Outcome::Acked(_) = write(&addr, client, i as u64 + 1, key, Duration::from_secs(15)).await {
                        acked.push(key);
                    }
                }
                acked
            })
        })
        .collect()
}

/// `docker kill` of shard 1's primary, ten times, under load: a new primary acks, the
/// coordinator restarts the same container on its volume, it catches up; nothing acked is lost.
async fn kills_under_load(stack: &Stack) -> Vec<i64> {
    let addr = stack.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = load(addr.clone(), stop.clone());
    let mut acked = Vec::new();
    let mut failovers = Vec::new();
    for round in 0..10u64 {
        let t = wait_topology(&addr, "settled before a kill", SETTLE, Topology::is_settled).await;
        let (victim, term) = primary_of(&t, 1);
        let container = stack.container(&victim);
        let before = docker(&["inspect", "-f", "{{.Id}} {{.State.StartedAt}}", &container]).await.unwrap();
        docker(&["kill", &container]).await.unwrap();
        let killed = Instant::now();
        let key = 2000 + round as i64;
        match write(&addr, 2002, round + 1, key, Duration::from_secs(30)).await {
            Outcome::Acked(c) => {
                failovers.push(killed.elapsed());
                // (The victim may be among the replicas: the coordinator restarts it at once.)
                assert!(c.term > term, "round {round}: ack {c:?} after the kill, in the old term {term}");
                acked.push(key);
            }
            Outcome::Failed(e) => panic!("round {round}: no write acknowledged within 30 s of the kill: {e}"),
        }
        wait_topology(&addr, "the killed node is back and caught up", SETTLE, Topology::is_settled).await;
        let after = docker(&["inspect", "-f", "{{.Id}} {{.State.StartedAt}} {{.State.Running}}", &container]).await;
        let after = after.unwrap();
        let (id_before, id_after) = (before.split(' ').next().unwrap(), after.split(' ').next().unwrap());
        assert_eq!(id_before, id_after, "restarted in place, not re-created");
        assert!(after != before && after.ends_with("true"), "restarted: {before} -> {after}");
        let mounts = docker(&["inspect", "-f", "{{range .Mounts}}{{.Name}}{{end}}", &container]).await.unwrap();
        assert_eq!(mounts, container, "on its own volume");
    }
    stop.store(true, Ordering::Relaxed);
    let mut loaded = 0;
    for writer in writers {
        let keys = writer.await.expect("a load task");
        loaded += keys.len();
        acked.extend(keys);
    }
    eprintln!("load during the kills: {loaded} writes acknowledged");
    for shard in 1..=4 {
        converged(&addr, shard, Duration::from_secs(60)).await;
    }
    failovers.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "failover in containers (docker kill of a primary to the first acknowledged write), {} kills: \
         p50 {:.0} ms, max {:.0} ms, all {:?}",
        failovers.len(),
        ms(failovers[failovers.len() / 2]),
        ms(*failovers.last().unwrap()),
        failovers.iter().map(|d| ms(*d).round() as u64).collect::<Vec<_>>()
    );
    acked
}

/// `docker network disconnect` of shard 2's primary: a new primary is elected; the cut-off
/// node commits and acknowledges nothing after its lease lapses (its STATS, read inside the
/// container, stand still); reconnected, it follows the new term and converges.
async fn network_cut(stack: &Stack) -> Vec<i64> {
    let addr = stack.addr();
    let t = wait_topology(&addr, "settled before the cut", SETTLE, Topology::is_settled).await;
    let (victim, term) = primary_of(&t, 2);
    let container = stack.container(&victim);
    docker(&["network", "disconnect", &stack.network(), &container]).await.unwrap();
    let cut = Instant::now();
    let elected = wait_topology(&addr, "a new primary for sh2", SETTLE, |t| {
        // During the election the shard has no primary at all: not done yet.
        t.shards.iter().any(|s| s.spec.id == ShardId(2) && s.primary.as_ref().is_some_and(|p| *p != victim))
    })
    .await;
    let election = cut.elapsed();
    let mut acked = Vec::new();
    let new_term = match write(&addr, 3003, 1, 4096 + 3000, Duration::from_secs(30)).await {
        Outcome::Acked(c) => {
            assert!(c.term > term && !c.replicas.contains(&victim), "ack {c:?} after the cut");
            c.term
        }
        Outcome::Failed(e) => panic!("no write acknowledged within 30 s of the cut: {e}"),
    };
    acked.push(4096 + 3000);
    eprintln!(
        "network cut of {victim}: {} primary of sh2 after {:.0} ms, first ack after {:.0} ms",
        primary_of(&elected, 2).0,
        election.as_secs_f64() * 1000.0,
        cut.elapsed().as_secs_f64() * 1000.0
    );
    // The new primary's election took longer than the old one's lease: it has lapsed.
    let lapsed = node_stats(stack, &container).await.expect("stats of the cut-off node");
    for seq in 2..=6u64 {
        let key = 4096 + 3000 + seq as i64;
        assert!(matches!(write(&addr, 3003, seq, key, Duration::from_secs(20)).await, Outcome::Acked(_)));
        acked.push(key);
    }
    let later = node_stats(stack, &container).await.expect("stats of the cut-off node");
    eprintln!(
        "cut-off {victim}: role {}, term {}, last {}, commit {}",
        stat(&later, "sh2.role"),
        stat(&later, "sh2.term"),
        stat(&later, "sh2.last"),
        stat(&later, "sh2.commit")
    );
    assert_eq!(stat(&later, "sh2.term"), term.to_string(), "isolated: it never heard of the new term");
    for key in ["sh2.writes_acked", "sh2.commit", "sh2.last"] {
        assert_eq!(stat(&lapsed, key), stat(&later, key), "{key} moved on the cut-off node");
    }

    docker(&["network", "connect", &stack.network(), &container]).await.unwrap();
    wait_topology(&addr, "the reconnected node serves again", SETTLE, Topology::is_settled).await;
    let back = node_stats(stack, &container).await.expect("stats after reconnect");
    let back_term: u64 = stat(&back, "sh2.term").parse().expect("a term");
    assert!(back_term >= new_term, "it follows the new term: {back_term} < {new_term}");
    converged(&addr, 2, Duration::from_secs(60)).await;
    acked
}

/// AddServers creates a container and a volume; RemoveServers removes both.
async fn add_and_remove(stack: &Stack) {
    let addr = stack.addr();
    let add = AddServersRequest {
        n: 1,
        new_shards: vec![],
        servers: BTreeMap::from([("Server6".to_owned(), vec![ShardId(1)])]),
    };
    match wire::request(&addr, &Request::AddServers(add)).await {
        Ok(Response::Topology(t)) => assert!(t.server("Server6").is_some()),
        other => panic!("add: {other:?}"),
    }
    let container = stack.container("Server6");
    let format = "{{.State.Running}} {{index .Config.Labels \"shardline.node\"}}";
    assert_eq!(docker(&["inspect", "-f", format, &container]).await.unwrap(), "true Server6");
    assert!(docker(&["volume", "inspect", &container]).await.is_ok(), "its volume exists");
    wait_topology(&addr, "Server6 caught up", SETTLE, Topology::is_settled).await;
    converged(&addr, 1, Duration::from_secs(60)).await;

    match wire::request(&addr, &Request::RemoveServers { n: 1, servers: vec!["Server6".into()] }).await {
        Ok(Response::Topology(t)) => assert!(t.server("Server6").is_none()),
        other => panic!("rm: {other:?}"),
    }
    assert!(docker(&["inspect", &container]).await.is_err(), "the container is gone");
    assert!(docker(&["volume", "inspect", &container]).await.is_err(), "the volume is gone");
    assert_eq!(stack.node_containers().await.len(), 6);
    wait_topology(&addr, "settled after the removal", SETTLE, Topology::is_settled).await;
}
