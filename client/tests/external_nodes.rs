//! The `external` spawner end to end: the test is the outside supervisor (as systemd or a
//! Kubernetes StatefulSet would be). It starts three storage nodes itself, a coordinator
//! with `--spawner external --node NAME=HOST:PORT ...` and a balancer; the cluster is
//! initialized and written to. Then the test SIGKILLs the node leading sh1 while clients
//! write: another is elected (the coordinator never restarts a node it does not run), and
//! writes go on. The test restarts the node on its data and port: the coordinator adopts
//! it again (it follows, catches up and serves reads), with no respawn of its own, and
//! every acknowledged write is readable exactly once, on the restarted node too.

mod harness;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use harness::etcd::{bin, settled_balancer, KillNaming, Proc};
use harness::writers::{assert_rows_are, Writers};
use harness::{ensure_binaries, free_port, poll};
use shardline::{Client, InitRequest, Schema, ShardId, ShardSpec};

const WRITERS: i64 = 4;
const MAX_WRITES: i64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_run_by_someone_else_are_elected_followed_and_readopted() {
    ensure_binaries();
    let dir = tempfile::Builder::new().prefix("shardline-external-test").tempdir().expect("temporary directory");
    let _all = KillNaming(dir.path().to_path_buf());
    tokio::time::timeout(Duration::from_secs(120), scenario(dir.path()))
        .await
        .expect("the scenario finishes within 120 s");
}

/// The supervisor's `run`-th start of node `name` on `port`, data under `dir/nodes/name`.
fn node(dir: &Path, name: &str, port: u16, run: u32) -> Proc {
    let data = dir.join("nodes").join(name);
    let args: Vec<String> = vec![
        "--id".into(),
        name.into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        data.display().to_string(),
        "--metrics-addr".into(),
        "off".into(),
    ];
    Proc::start(name, &bin("shardline-node"), &args, dir.join(format!("{name}.{run}.log")))
}

async fn scenario(dir: &Path) {
    let names = ["Server0", "Server1", "Server2"];
    let ports: BTreeMap<&str, u16> = names.iter().map(|n| (*n, free_port())).collect();
    let mut nodes: BTreeMap<&str, Proc> = names.iter().map(|n| (*n, node(dir, n, ports[n], 1))).collect();

    let coordinator_port = free_port();
    let coordinator = format!("127.0.0.1:{coordinator_port}");
    let mut args: Vec<String> = vec![
        "--listen".into(),
        coordinator.clone(),
        "--data-dir".into(),
        dir.join("coordinator").display().to_string(),
        "--spawner".into(),
        "external".into(),
        "--metrics-addr".into(),
        "off".into(),
    ];
    for n in names {
        args.extend(["--node".into(), format!("{n}=127.0.0.1:{}", ports[n])]);
    }
    let _coordinator = Proc::start("coordinator", &bin("shardline-coordinator"), &args, dir.join("coordinator.log"));
    let admin = poll("the coordinator answers", Duration::from_secs(20), || async {
        Client::connect(coordinator.clone()).await.ok()
    })
    .await;
    let shards =
        vec![ShardSpec { id: ShardId(1), low: 0, size: 4096 }, ShardSpec { id: ShardId(2), low: 4096, size: 4096 }];
    let servers = names.iter().map(|n| (n.to_string(), vec![ShardId(1), ShardId(2)])).collect();
    admin.init(InitRequest { n: 3, schema: Schema::seed(), shards, servers }).await.unwrap();

    let (_balancer, c) = settled_balancer(dir, &coordinator).await;

    let t = c.status().await.unwrap();
    let victim = t.shards.iter().find(|s| s.spec.id == ShardId(1)).and_then(|s| s.primary.clone()).expect("a primary");
    let victim: &str = names.iter().find(|n| **n == victim).expect("a known server");

    let writers = Writers::start(&c, WRITERS, MAX_WRITES);
    poll("100 writes", Duration::from_secs(30), || async { (writers.acked() >= 100).then_some(()) }).await;
    nodes.get_mut(victim).expect("the victim").kill();
    let killed = Instant::now();
    let at_kill = writers.acked();
    poll("another primary for sh1", Duration::from_secs(20), || async {
        let t = c.status().await.ok()?;
        let sh1 = t.shards.iter().find(|s| s.spec.id == ShardId(1))?;
        sh1.primary.as_deref().is_some_and(|p| p != victim).then_some(())
    })
    .await;
    let failed_over = killed.elapsed();
    poll("200 writes after the kill", Duration::from_secs(30), || async {
        (writers.acked() >= at_kill + 200).then_some(())
    })
    .await;
    let down = c.status().await.unwrap();
    assert!(
        down.servers.iter().any(|s| s.name == victim && !s.healthy),
        "the killed node stays down: nobody but its supervisor starts it"
    );

    // The supervisor restarts it, on its data and port.
    nodes.insert(victim, node(dir, victim, ports[victim], 2));
    let restarted = Instant::now();
    poll("the restarted node adopted: every replica readable again", Duration::from_secs(30), || async {
        c.status().await.ok()?.is_settled().then_some(())
    })
    .await;
    let adopted = restarted.elapsed();
    let written = writers.stop("a node's death and restart by its supervisor").await;
    assert_rows_are(&c, &written).await;

    // Its own replica of sh1 holds every acknowledged write too.
    let on_victim = poll("the restarted node holds every write", Duration::from_secs(20), || async {
        let shards = c.read_server(victim).await.ok()?;
        let sh1 = shards.into_iter().find(|s| s.shard == ShardId(1))?;
        let keys: Vec<i64> = sh1.rows.iter().map(|r| r.key).collect();
        (keys == written).then_some(keys.len())
    })
    .await;
    let stats = admin.stats().await.unwrap();
    let respawns = stats.iter().find(|(k, _)| k == "respawns").map(|(_, v)| v.as_str());
    assert_eq!(respawns, Some("0"), "the coordinator restarted nothing itself");
    eprintln!(
        "external nodes: {victim} killed, sh1 failed over in {failed_over:?}; restarted by the test, \
         adopted (all replicas readable) {adopted:?} later, holding all {on_victim} writes; no respawn by the coordinator"
    );
}
