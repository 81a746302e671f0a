//! `shardline`: the command-line client of a Shardline cluster, and `shardline up`, which
//! starts a local one. Flags are parsed here; each subcommand lives in its own module.

mod auth;
mod catch_up;
mod certs;
mod commands;
mod output;
mod up;
mod write_file;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Shardline's command-line client: status, admin (init, add, rm), reads and writes,
/// through the balancer. Every subcommand prints a readable table, or JSON with --json.
/// `shardline up` starts a local cluster.
#[derive(Debug, Parser)]
#[command(name = "shardline", version, about, long_about = None)]
struct Cli {
    /// The balancer's address; several, comma-separated, to move to another when one fails.
    #[arg(long, global = true, env = "SHARDLINE_ADDR", default_value = "127.0.0.1:7000")]
    addr: String,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds a call may wait for its answer.
    #[arg(long, global = true, default_value_t = 10)]
    timeout: u64,
    /// Credentials file (`user = "..."`, `secret = "..."`) to authenticate with; default
    /// ./shardline-data/auth/admin.credentials (what `shardline up` makes) if it exists.
    #[arg(long, global = true, env = "SHARDLINE_CREDENTIALS")]
    credentials: Option<PathBuf>,
    /// CA certificate (PEM) to verify the server against: with it, the CLI speaks TLS
    /// (`shardline up --tls` prints where its CA is).
    #[arg(long, global = true, env = "SHARDLINE_TLS_CA")]
    tls_ca: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The cluster: schema, shards with primaries and replicas, servers and their health.
    Status,
    /// Create the cluster from a layout file: the seed's /init JSON, or TOML.
    Init {
        /// The layout (`.json`: the seed's payload; `.toml`: see `shardline init --help`).
        ///
        /// TOML shape: `n = 6`, `columns = [{ name = "Stud_id", type = "int" }, ...]`,
        /// `[[shards]] id = "sh1" low = 0 size = 4096`, `[servers] Server0 = ["sh1", "sh2"]`.
        #[arg(long)]
        config: PathBuf,
    },
    /// Add servers (and shards): `shardline add Server6:sh1,sh2`, or --config with the
    /// seed's /add JSON (or TOML).
    Add(AddArgs),
    /// Remove n servers, the named ones first: `shardline rm -n 2 Server1 Server2`.
    Rm {
        /// How many servers to remove (default: as many as named).
        #[arg(short)]
        n: Option<usize>,
        /// Servers to remove first.
        servers: Vec<String>,
    },
    /// Move a shard's primary on purpose (a planned switchover, e.g. before maintenance):
    /// the target catches up, the old primary stops taking writes, the target leads at a
    /// new term. Clients ride through it: writes meanwhile are retried, none lost or doubled.
    Failover {
        /// The shard, e.g. sh1.
        shard: String,
        /// The new primary (default: the most caught-up other replica).
        #[arg(long)]
        to: Option<String>,
    },
    /// Rows with LOW <= key <= HIGH, in key order.
    Read {
        /// Lowest key.
        #[arg(allow_negative_numbers = true)]
        low: i64,
        /// Highest key.
        #[arg(allow_negative_numbers = true)]
        high: i64,
        /// Read from each shard's primary (linearizable): `--consistency primary`.
        #[arg(long, conflicts_with = "consistency")]
        primary: bool,
        /// How fresh the rows must be: any (default), primary, session, bounded:100ms
        /// (every write acknowledged 100 ms ago or earlier is seen), bounded:50e (at most
        /// 50 entries behind the primary's commit index).
        #[arg(long, default_value = "any")]
        consistency: shardline_protocol::Consistency,
    },
    /// Every row a server holds, by shard.
    ReadServer {
        /// The server's name, e.g. Server0.
        name: String,
    },
    /// Insert one row (`shardline write 42 alice 77`) or rows from a file (--file).
    Write(WriteArgs),
    /// Replace the row with KEY: `shardline update 42 alice 80`.
    Update {
        /// The key, then the other columns in schema order.
        #[arg(required = true, num_args = 2.., allow_negative_numbers = true)]
        values: Vec<String>,
    },
    /// Delete the row with KEY.
    Del {
        /// The key.
        #[arg(allow_negative_numbers = true)]
        key: i64,
    },
    /// Check the balancer answers.
    Ping,
    /// The balancer's counters.
    Stats,
    /// Start a local cluster (coordinator, balancer, storage nodes) and keep it running
    /// until Ctrl-C.
    Up(up::UpArgs),
    /// Credentials: create a local set (`auth init DIR`), or hash a secret for a users file.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Load-test the cluster with HdrHistogram reports: runs `shardline-bench` (next to this
    /// binary) against --addr; `shardline bench --help` lists its options.
    #[command(disable_help_flag = true)]
    Bench {
        /// Options for shardline-bench.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Args)]
struct AddArgs {
    /// Servers to add, each NAME:SHARD[,SHARD...] (e.g. Server6:sh1,sh2; `Server[7]:sh3`
    /// asks for a generated name).
    servers: Vec<String>,
    /// How many servers to add (default: as many as named).
    #[arg(short)]
    n: Option<usize>,
    /// A new shard, ID:LOW:SIZE (e.g. sh5:16384:4096); repeatable.
    #[arg(long = "shard")]
    shards: Vec<String>,
    /// A layout file instead: the seed's /add JSON or TOML (n, new_shards, servers).
    #[arg(long, conflicts_with_all = ["servers", "shards", "n"])]
    config: Option<PathBuf>,
    /// Return once the new replicas are configured, without waiting (and showing the
    /// copy's progress) until they serve reads.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Debug, Args)]
struct WriteArgs {
    /// The row: key, then the other columns in schema order.
    #[arg(conflicts_with = "file", allow_negative_numbers = true)]
    values: Vec<String>,
    /// Rows from a file: `.csv` (header row of column names) or `.jsonl` (one JSON object
    /// a line, keyed by column name).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Rows per write batch (with --file).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Batches in flight at once (with --file).
    #[arg(long, default_value_t = 8)]
    parallel: usize,
}

fn main() -> ExitCode {
    // Printing into a closed pipe (`shardline read 0 9999 | head`) ends quietly.
    // SAFETY: restoring the default SIGPIPE action before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli: Cli = match shardline::cli::parse_or_exit("shardline") {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = format!("{e:#}");
            eprintln!("error: {}", text.replace('\n', " "));
            if text.contains("TLS with") || text.contains("this port speaks TLS") {
                eprintln!(
                    "hint: give --tls-ca FILE (or SHARDLINE_TLS_CA) with the CA that signed the server's certificate; \
                     `shardline up --tls` writes DATA_DIR/auth/tls/ca.pem"
                );
            } else if text.contains("Unauthenticated") || text.contains("refused the credential") {
                eprintln!(
                    "hint: give --credentials FILE (or SHARDLINE_CREDENTIALS); `shardline up` writes \
                     DATA_DIR/auth/admin.credentials"
                );
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if !matches!(cli.command, Command::Up(_) | Command::Auth(_)) {
        shardline_protocol::net::auth::set_outgoing(auth::resolve(cli.credentials.as_deref())?);
        let tls = cli.tls_ca.as_deref().map(shardline::ClientTls::load).transpose()?;
        shardline_protocol::net::tls::set_outgoing(tls);
    }
    let ctx = commands::Ctx::new(cli.addr.clone(), cli.json, cli.timeout);
    match cli.command {
        Command::Status => commands::status(&ctx).await,
        Command::Init { config } => commands::init(&ctx, &config).await,
        Command::Add(a) => commands::add(&ctx, a.servers, a.n, a.shards, a.config, !a.no_wait).await,
        Command::Rm { n, servers } => commands::rm(&ctx, n, servers).await,
        Command::Failover { shard, to } => commands::failover(&ctx, &shard, to.as_deref()).await,
        Command::Read { low, high, primary, consistency } => {
            let level = if primary { shardline_protocol::Consistency::Primary } else { consistency };
            commands::read(&ctx, low, high, &level).await
        }
        Command::ReadServer { name } => commands::read_server(&ctx, &name).await,
        Command::Write(w) => match w.file {
            Some(file) => write_file::run(&ctx, &file, w.batch, w.parallel).await,
            None => commands::write(&ctx, &w.values).await,
        },
        Command::Update { values } => commands::update(&ctx, &values).await,
        Command::Del { key } => commands::delete(&ctx, key).await,
        Command::Ping => commands::ping(&ctx).await,
        Command::Stats => commands::stats(&ctx).await,
        Command::Up(args) => up::run(args, cli.json).await,
        Command::Auth(command) => auth::run(command),
        Command::Bench { args } => up::exec_bench(&cli.addr, cli.json, cli.tls_ca.as_deref(), args),
    }
}
