//! The subcommands that talk to a running cluster through the balancer.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;
use shardline::rows::row_from_words;
use shardline::{layout, AddServersRequest, Client, ClientConfig, Schema, ShardId, ShardSpec};

use crate::output::{
    print_json, rows_json, rows_table, server_rows_json, table, topology_json, topology_text, write_json, write_text,
};

/// What every subcommand needs: where the balancer is and how to print.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    /// The balancer's address.
    pub addr: String,
    /// Print JSON.
    pub json: bool,
    timeout: Duration,
}

impl Ctx {
    /// A context from the global flags.
    pub(crate) fn new(addr: String, json: bool, timeout_s: u64) -> Ctx {
        Ctx { addr, json, timeout: Duration::from_secs(timeout_s.max(1)) }
    }

    /// Connects to the balancer.
    pub(crate) async fn client(&self) -> anyhow::Result<Client> {
        let config = ClientConfig { timeout: self.timeout, ..ClientConfig::default() };
        Client::connect_with(self.addr.clone(), config).await.with_context(|| {
            format!("cannot reach the balancer at {} (is `shardline up` running? --addr sets the address)", self.addr)
        })
    }

    /// The cluster's schema, for typing input and naming columns.
    pub(crate) async fn schema(&self, client: &Client) -> anyhow::Result<Schema> {
        let t = client.status().await.context("fetching the schema")?;
        t.schema.context("the cluster is not initialized: run `shardline init --config FILE`")
    }
}

pub(crate) async fn status(ctx: &Ctx) -> anyhow::Result<()> {
    let t = ctx.client().await?.status().await?;
    if ctx.json {
        print_json(&topology_json(&t));
    } else {
        print!("{}", topology_text(&t));
    }
    Ok(())
}

fn print_topology(ctx: &Ctx, what: &str, t: &shardline::Topology) {
    if ctx.json {
        print_json(&topology_json(t));
    } else {
        println!("{what}");
        print!("{}", topology_text(t));
    }
}

pub(crate) async fn init(ctx: &Ctx, config: &Path) -> anyhow::Result<()> {
    let request = layout::load_init(config).with_context(|| format!("init layout {}", config.display()))?;
    let t = ctx.client().await?.init(request).await?;
    print_topology(ctx, "initialized", &t);
    Ok(())
}

/// Parses `NAME:sh1,sh2`.
fn server_arg(arg: &str) -> anyhow::Result<(String, Vec<ShardId>)> {
    let (name, shards) =
        arg.split_once(':').with_context(|| format!("`{arg}`: want NAME:SHARD[,SHARD...], e.g. Server6:sh1,sh2"))?;
    if name.is_empty() {
        bail!("`{arg}`: the server name is empty");
    }
    let shards = shards
        .split(',')
        .map(|s| ShardId::parse(s.trim()).with_context(|| format!("`{arg}`: bad shard `{s}`")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((name.to_owned(), shards))
}

/// Parses `sh5:16384:4096`.
fn shard_arg(arg: &str) -> anyhow::Result<ShardSpec> {
    let parts: Vec<&str> = arg.split(':').collect();
    let [id, low, size] = parts.as_slice() else {
        bail!("--shard `{arg}`: want ID:LOW:SIZE, e.g. sh5:16384:4096");
    };
    Ok(ShardSpec {
        id: ShardId::parse(id).with_context(|| format!("--shard `{arg}`: bad shard id `{id}`"))?,
        low: low.parse().with_context(|| format!("--shard `{arg}`: bad low `{low}`"))?,
        size: size.parse().with_context(|| format!("--shard `{arg}`: bad size `{size}`"))?,
    })
}

pub(crate) async fn add(
    ctx: &Ctx,
    servers: Vec<String>,
    n: Option<usize>,
    shards: Vec<String>,
    config: Option<std::path::PathBuf>,
    wait: bool,
) -> anyhow::Result<()> {
    let request = match config {
        Some(path) => layout::load_add(&path).with_context(|| format!("add layout {}", path.display()))?,
        None => {
            let mut named = BTreeMap::new();
            for arg in &servers {
                let (name, held) = server_arg(arg)?;
                if named.insert(name.clone(), held).is_some() {
                    bail!("server `{name}` is named twice");
                }
            }
            let new_shards = shards.iter().map(|s| shard_arg(s)).collect::<anyhow::Result<Vec<_>>>()?;
            let n = n.unwrap_or(named.len());
            if n == 0 {
                bail!("nothing to add: name servers (Server6:sh1,sh2), give -n, or --config FILE");
            }
            AddServersRequest { n, new_shards, servers: named }
        }
    };
    let client = ctx.client().await?;
    let before = client.status().await?;
    let mut t = client.add_servers(request).await?;
    let fresh = crate::catch_up::new_replicas(&before, &t);
    if wait && !fresh.is_empty() {
        t = crate::catch_up::wait(&client, fresh).await?;
    }
    print_topology(ctx, "added", &t);
    Ok(())
}

pub(crate) async fn rm(ctx: &Ctx, n: Option<usize>, servers: Vec<String>) -> anyhow::Result<()> {
    let n = n.unwrap_or(servers.len());
    if n == 0 {
        bail!("nothing to remove: name servers or give -n");
    }
    if n < servers.len() {
        bail!("-n {n} is less than the {} servers named", servers.len());
    }
    let t = ctx.client().await?.remove_servers(n, &servers).await?;
    print_topology(ctx, "removed", &t);
    Ok(())
}

pub(crate) async fn failover(ctx: &Ctx, shard: &str, to: Option<&str>) -> anyhow::Result<()> {
    let Some(id) = ShardId::parse(shard) else { bail!("`{shard}` is not a shard id (e.g. sh1)") };
    let t = ctx.client().await?.failover(id, to).await?;
    print_topology(ctx, "switched over", &t);
    Ok(())
}

pub(crate) async fn read(
    ctx: &Ctx,
    low: i64,
    high: i64,
    level: &shardline_protocol::Consistency,
) -> anyhow::Result<()> {
    if low > high {
        bail!("LOW {low} is above HIGH {high}");
    }
    let client = ctx.client().await?;
    let schema = client.status().await?.schema;
    let (rows, at) = client.read_positioned(low..=high, level).await?;
    if ctx.json {
        print_json(&rows_json(schema.as_ref(), &rows));
    } else {
        print!("{}", rows_table(schema.as_ref(), &rows));
        let at: Vec<String> = at.iter().map(|p| format!("{}={}", p.shard, p.index)).collect();
        let plural = if rows.len() == 1 { "" } else { "s" };
        println!("({} row{plural}, {level}, at {})", rows.len(), at.join(","));
    }
    Ok(())
}

pub(crate) async fn read_server(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let schema = client.status().await?.schema;
    let shards = client.read_server(name).await?;
    if ctx.json {
        print_json(&server_rows_json(schema.as_ref(), name, &shards));
        return Ok(());
    }
    for s in &shards {
        println!("{} on {name}: {} rows", s.shard, s.rows.len());
        print!("{}", rows_table(schema.as_ref(), &s.rows));
        println!();
    }
    let total: usize = shards.iter().map(|s| s.rows.len()).sum();
    println!("({total} rows in {} shards)", shards.len());
    Ok(())
}

fn words(values: &[String]) -> Vec<&str> {
    values.iter().map(String::as_str).collect()
}

pub(crate) async fn write(ctx: &Ctx, values: &[String]) -> anyhow::Result<()> {
    if values.is_empty() {
        bail!("nothing to write: give a row (shardline write 42 alice 77) or --file FILE");
    }
    let client = ctx.client().await?;
    let schema = ctx.schema(&client).await?;
    let row = row_from_words(&schema, &words(values))?;
    let result = client.write(&[row]).await?;
    if ctx.json {
        print_json(&write_json(&result));
    } else {
        print!("{}", write_text("wrote", &result));
    }
    Ok(())
}

pub(crate) async fn update(ctx: &Ctx, values: &[String]) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let schema = ctx.schema(&client).await?;
    let row = row_from_words(&schema, &words(values))?;
    let result = client.update(row).await?;
    if ctx.json {
        print_json(&write_json(&result));
    } else {
        print!("{}", write_text("updated", &result));
    }
    Ok(())
}

pub(crate) async fn delete(ctx: &Ctx, key: i64) -> anyhow::Result<()> {
    let result = ctx.client().await?.delete(key).await?;
    if ctx.json {
        print_json(&write_json(&result));
    } else {
        print!("{}", write_text("deleted", &result));
    }
    Ok(())
}

pub(crate) async fn ping(ctx: &Ctx) -> anyhow::Result<()> {
    let rtt = ctx.client().await?.ping().await?;
    let us = rtt.as_micros() as u64;
    if ctx.json {
        print_json(&json!({"addr": ctx.addr, "pong": true, "rtt_us": us}));
    } else {
        println!("PONG from {} in {:.3} ms", ctx.addr, us as f64 / 1000.0);
    }
    Ok(())
}

pub(crate) async fn stats(ctx: &Ctx) -> anyhow::Result<()> {
    let pairs = ctx.client().await?.stats().await?;
    if ctx.json {
        let obj: serde_json::Map<String, serde_json::Value> =
            pairs.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
        print_json(&serde_json::Value::Object(obj));
    } else {
        let rows: Vec<Vec<String>> = pairs.into_iter().map(|(k, v)| vec![k, v]).collect();
        print!("{}", table(&["name".into(), "value".into()], &rows));
    }
    Ok(())
}
