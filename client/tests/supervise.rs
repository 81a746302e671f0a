//! `shardline up` supervises its processes: under a steady load, the coordinator and then the
//! balancer are SIGKILLed; each is started again, the clients recover on their own, no
//! acknowledged write is lost, and after Ctrl-C no process of the cluster is left (the nodes
//! the restarted coordinator adopted included).

mod harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::{poll, row, signal, Up};
use shardline::Client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_coordinator_and_balancer_come_back_and_nothing_is_left_behind() {
    let mut up = Up::start().await;
    tokio::time::timeout(Duration::from_secs(240), scenario(&mut up))
        .await
        .expect("the scenario finishes within 240 s");
}

/// The pid of the running process whose command line has `binary` and `needle`.
fn pid_of(binary: &str, needle: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_string_lossy().parse().ok()?;
        let cmdline = String::from_utf8_lossy(&std::fs::read(entry.path().join("cmdline")).ok()?).into_owned();
        let state = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = state.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        (cmdline.contains(binary) && cmdline.contains(needle) && !zombie).then_some(pid)
    })
}

/// Writes one row at a time until told to stop, recording the keys acknowledged.
async fn load(addr: String, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<i64>>>) {
    let client = Client::connect(addr).await.expect("connect to the balancer");
    let mut key = 0;
    while !stop.load(Ordering::Relaxed) && key < 16_000 {
        if client.write(&[row(key)]).await.is_ok() {
            acked.lock().unwrap().push(key);
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        key += 1;
    }
}

/// Waits until `more` writes beyond those acknowledged now are acknowledged.
async fn progress(acked: &Arc<Mutex<Vec<i64>>>, more: usize, what: &str) {
    let from = acked.lock().unwrap().len();
    poll(what, Duration::from_secs(60), || async { (acked.lock().unwrap().len() >= from + more).then_some(()) }).await;
}

/// SIGKILLs the process of `binary` matching `needle` and waits until another one runs.
async fn kill_and_wait_back(binary: &str, needle: &str) {
    let old = pid_of(binary, needle).unwrap_or_else(|| panic!("{binary} is running"));
    signal(old, libc::SIGKILL);
    poll(&format!("{binary} started again"), Duration::from_secs(30), || async {
        pid_of(binary, needle).filter(|&pid| pid != old)
    })
    .await;
}

async fn scenario(up: &mut Up) {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let load = tokio::spawn(load(up.addr(), stop.clone(), acked.clone()));
    progress(&acked, 20, "writes acknowledged before any kill").await;

    let data_dir = up.data_dir().display().to_string();
    kill_and_wait_back("shardline-coordinator", &data_dir).await;
    progress(&acked, 20, "writes acknowledged after the coordinator came back").await;
    let balancer = format!("127.0.0.1:{}", up.balancer_port);
    kill_and_wait_back("shardline-balancer", &balancer).await;
    progress(&acked, 20, "writes acknowledged after the balancer came back").await;

    stop.store(true, Ordering::Relaxed);
    load.await.expect("the load task");
    let acked = acked.lock().unwrap().clone();
    let client = up.client().await;
    let rows = client.read_primary(0..=16_383).await.expect("read everything back");
    let present: Vec<i64> = rows.iter().map(|r| r.key).collect();
    let lost: Vec<&i64> = acked.iter().filter(|k| !present.contains(k)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    drop(client);

    let log = std::fs::read_to_string(up.dir.path().join("up.log")).unwrap();
    assert!(log.contains("shardline-coordinator exited"), "the restart is reported:\n{log}");
    assert!(log.contains("shardline-balancer exited"), "the restart is reported:\n{log}");
    let status = up.interrupt().await;
    assert!(status.success(), "shardline up exited with {status}:\n{}", up.log_tail());
    poll("every process of the cluster gone", Duration::from_secs(15), || async {
        (up.spawned_pids().is_empty() && pid_of("shardline-balancer", &balancer).is_none()).then_some(())
    })
    .await;
}
