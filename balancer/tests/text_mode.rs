//! The nc text mode on the balancer's port: a plain `TcpStream` sends lines and reads the
//! answers; every answer ends with a line starting `OK` or `ERR`.

mod harness;

use std::time::Duration;

use harness::{within, Budget, Cluster, Layout};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

struct Nc {
    lines: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
}

impl Nc {
    async fn connect(addr: &str) -> Nc {
        let (read, write) = TcpStream::connect(addr).await.expect("connect").into_split();
        Nc { lines: BufReader::new(read), write }
    }

    /// Sends one line and returns the answer's lines, through the closing OK/ERR line.
    async fn send(&mut self, line: &str) -> Vec<String> {
        self.write.write_all(format!("{line}\n").as_bytes()).await.expect("send");
        let mut answer = Vec::new();
        for _ in 0..10_000 {
            let mut l = String::new();
            let n = self.lines.read_line(&mut l).await.expect("receive");
            assert!(n > 0, "connection closed after {answer:?}");
            let l = l.trim_end().to_owned();
            let last = l.starts_with("OK") || l.starts_with("ERR");
            answer.push(l);
            if last {
                return answer;
            }
        }
        panic!("no OK/ERR line in {answer:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nc_lines_get_readable_answers() {
    let cluster = Cluster::start(Layout::three_by_three(), |_| {}).await;
    within(Duration::from_secs(60), "text mode", scenario(&cluster)).await;
}

async fn scenario(cluster: &Cluster) {
    let mut nc = Nc::connect(&cluster.balancer_addr).await;
    assert_eq!(nc.send("PING").await, ["OK PONG"]);

    let wrote = nc.send("WRITE 42 alice 77").await;
    assert_eq!(wrote.len(), 1, "{wrote:?}");
    assert!(wrote[0].starts_with("OK committed sh1: 1 row"), "{wrote:?}");

    // A ring replica may answer before it has applied the write: poll, within bounds.
    let mut budget = Budget::new("READ 0 100 showing key 42", Duration::from_secs(10));
    loop {
        let read = nc.send("READ 0 100").await;
        if read.last().is_some_and(|l| count_of(l) == "OK 1 row") {
            assert!(read[0].contains("42") && read[0].contains("alice"), "{read:?}");
            assert!(read[0].contains("77"), "{read:?}");
            break;
        }
        assert!(budget.retry().await, "{}: {read:?}", budget.spent());
    }
    let primary = nc.send("READ 0 100 PRIMARY").await;
    assert_eq!(primary.last().map(|l| count_of(l)), Some("OK 1 row"), "{primary:?}");

    let help = nc.send("HELP").await;
    assert!(help.len() > 5, "{help:?}");
    assert!(help.iter().any(|l| l.contains("READ <low> <high>")), "{help:?}");
    assert_eq!(help.last().map(String::as_str), Some("OK"));

    let garbage = nc.send("FROBNICATE 1 2").await;
    assert_eq!(garbage.len(), 1);
    assert!(garbage[0].starts_with("ERR BadRequest"), "{garbage:?}");
    let bad_args = nc.send("READ ten twenty").await;
    assert!(bad_args[0].starts_with("ERR BadRequest"), "{bad_args:?}");

    let dup = nc.send("WRITE 42 alice 77").await;
    assert_eq!(dup, ["ERR DuplicateKey: duplicate key 42"]);
    let outside = nc.send("WRITE 4200 zed 1").await;
    assert!(outside[0].starts_with("ERR KeyOutOfRange"), "{outside:?}");
    let wrong = nc.send("WRITE 43 44 45").await;
    assert!(wrong[0].starts_with("ERR SchemaViolation"), "{wrong:?}");

    let update = nc.send("UPDATE 42 alice 80").await;
    assert!(update[0].starts_with("OK committed sh1"), "{update:?}");
    let deleted = nc.send("DEL 42").await;
    assert!(deleted[0].starts_with("OK committed sh1"), "{deleted:?}");
    let gone = nc.send("READ 0 299 PRIMARY").await;
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert_eq!(count_of(&gone[0]), "OK 0 rows", "{gone:?}");

    let stats = nc.send("STATS").await;
    assert!(stats.iter().any(|l| l.starts_with("requests: ")), "{stats:?}");
    assert_eq!(stats.last().map(String::as_str), Some("OK"));
    let status = nc.send("STATUS").await;
    assert!(status[0].starts_with("topology version"), "{status:?}");
    assert!(status.last().is_some_and(|l| l.starts_with("OK")), "{status:?}");

    // Still usable after all that.
    assert_eq!(nc.send("PING").await, ["OK PONG"]);
}

/// A read's last line without the positions it was read at (`OK 1 row at sh1=2,sh2=1`).
fn count_of(line: &str) -> &str {
    line.split(" at ").next().unwrap_or(line)
}
