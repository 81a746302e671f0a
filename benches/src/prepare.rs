//! Before a run: connect, learn the schema and the shards, build the bench's key set from
//! the shards' ranges (which keys hold rows already), and preload rows if asked.

use std::time::Duration;

use futures::stream::{self, TryStreamExt};
use shardline::{Client, ClientConfig, ColumnType, Row, Schema, Topology, Value};

use crate::error::BenchError;
use crate::keys::KeySpace;
use crate::spec::{BenchSpec, Op};

/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Keys scanned per read while looking for existing rows.
const SCAN_CHUNK: u64 = 20_000;

/// Rows per preload write.
const PRELOAD_BATCH: usize = 500;

/// The client settings a run uses: the spec's timeout, a short connect timeout, and no
/// retries (a retry would hide a failure inside one latency).
pub fn client_config(spec: &BenchSpec) -> ClientConfig {
    ClientConfig { timeout: spec.timeout, connect_timeout: CONNECT_TIMEOUT, retries: 0, ..ClientConfig::default() }
}

/// Connects to `addr`, bounded by [`CONNECT_TIMEOUT`] even if the name does not resolve.
pub async fn connect(addr: &str, config: ClientConfig) -> Result<Client, BenchError> {
    let what = format!("cannot reach the balancer at {addr}");
    match tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(1), Client::connect_with(addr, config)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(BenchError::client(what, e)),
        Err(_) => Err(BenchError::Cluster(format!("{what}: no connection within {CONNECT_TIMEOUT:?}"))),
    }
}

/// Node connections per node of a routing client (the balancer's default pool).
pub const DIRECT_POOL: usize = 2;

/// A client that routes by itself on the topology of the coordinator at `coordinator`.
pub async fn connect_direct(coordinator: &str, config: ClientConfig) -> Result<Client, BenchError> {
    let limit = CONNECT_TIMEOUT + Duration::from_secs(5);
    match tokio::time::timeout(limit, Client::connect_direct(coordinator, config, DIRECT_POOL)).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(BenchError::client(format!("routing client on the coordinator at {coordinator}"), e)),
        Err(_) => Err(BenchError::Cluster(format!("no topology from the coordinator at {coordinator} in {limit:?}"))),
    }
}

/// The cluster's topology, which must have a schema and shards.
pub async fn topology(client: &Client) -> Result<(Topology, Schema), BenchError> {
    let t = client.status().await.map_err(|e| BenchError::client(format!("STATUS from {}", client.addr()), e))?;
    let Some(schema) = t.schema.clone() else {
        return Err(BenchError::Cluster(format!(
            "the cluster at {} is not initialized (start one with `shardline up`, or `shardline init`)",
            client.addr()
        )));
    };
    if t.shards.iter().all(|s| s.spec.size == 0) {
        return Err(BenchError::Cluster(format!("the cluster at {} has no shards", client.addr())));
    }
    Ok((t, schema))
}

/// Makes rows of the schema: each string column `row_size` bytes long.
#[derive(Debug, Clone)]
pub struct RowMaker {
    columns: Vec<ColumnType>,
    text: String,
}

impl RowMaker {
    /// A row maker for `schema` (its columns after the key) and `row_size`.
    pub fn new(schema: &Schema, row_size: usize) -> RowMaker {
        let columns = schema.columns.iter().skip(1).map(|c| c.ty).collect();
        let text: String = (0..row_size).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        RowMaker { columns, text }
    }

    /// The row for `key`.
    pub fn row(&self, key: i64) -> Row {
        let values = self
            .columns
            .iter()
            .map(|ty| match ty {
                ColumnType::Int => Value::Int(key.rem_euclid(100)),
                ColumnType::Float => Value::Float(key as f64 / 2.0),
                ColumnType::Str => Value::Str(self.text.clone()),
            })
            .collect();
        Row::new(key, values)
    }
}

/// The keys of the bench's key set: up to `key_space / shards` keys from the low end of
/// each shard's range, as (low, high) inclusive ranges.
pub fn key_ranges(topology: &Topology, key_space: u64) -> Vec<(i64, i64)> {
    let shards: Vec<_> = topology.shards.iter().filter(|s| s.spec.size > 0).collect();
    let quota = (key_space / shards.len().max(1) as u64).max(1);
    let mut ranges: Vec<(i64, i64)> = shards
        .iter()
        .map(|s| {
            let take = s.spec.size.min(quota);
            let high = (i128::from(s.spec.low) + i128::from(take) - 1).min(i128::from(i64::MAX)) as i64;
            (s.spec.low, high)
        })
        .collect();
    ranges.sort_unstable();
    ranges
}

/// Builds the key set from the cluster: which keys hold rows now, which are free.
pub async fn key_space(client: &Client, topology: &Topology, spec: &BenchSpec) -> Result<KeySpace, BenchError> {
    let mut existing = Vec::new();
    let mut free = Vec::new();
    for (low, high) in key_ranges(topology, spec.key_space) {
        let mut at = low;
        loop {
            let end = at.saturating_add(SCAN_CHUNK as i64 - 1).min(high);
            let rows = client
                .read(at..=end)
                .await
                .map_err(|e| BenchError::client(format!("scanning keys {at}..={end} for existing rows"), e))?;
            let mut have = rows.iter().map(|r| r.key).peekable();
            for k in at..=end {
                if have.next_if_eq(&k).is_some() {
                    existing.push(k);
                } else {
                    free.push(k);
                }
            }
            if end >= high {
                break;
            }
            at = end + 1;
        }
    }
    let slack = spec.workers() as u64;
    Ok(KeySpace::new(existing, free, spec.keys, slack, spec.seed))
}

/// Rows to have before the run: the spec's `preload`, or by default enough for reads,
/// updates and deletes to find rows when the mix has them.
pub fn preload_target(spec: &BenchSpec, keys: &KeySpace) -> u64 {
    let wants_rows = spec.mix.ops().any(|op| op != Op::Write);
    let default = if wants_rows { 10_000.min(keys.len() / 2) } else { 0 };
    spec.preload.unwrap_or(default).min(keys.len())
}

/// Inserts fresh rows until `target` keys hold rows; returns how many were inserted.
pub async fn preload(client: &Client, keys: &KeySpace, rows: &RowMaker, target: u64) -> Result<u64, BenchError> {
    let missing = target.saturating_sub(keys.present());
    let claimed: Vec<i64> = (0..missing).map_while(|_| keys.claim_insert()).collect();
    let batches: Vec<Vec<Row>> =
        claimed.chunks(PRELOAD_BATCH).map(|c| c.iter().map(|k| rows.row(*k)).collect()).collect();
    stream::iter(batches.into_iter().map(Ok))
        .try_for_each_concurrent(8, |batch| async move {
            client.write(&batch).await.map(drop).map_err(|e| BenchError::client("preloading rows", e))
        })
        .await?;
    Ok(claimed.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline::{ShardId, ShardSpec, ShardTopology};

    fn shard(id: u32, low: i64, size: u64) -> ShardTopology {
        ShardTopology {
            spec: ShardSpec { id: ShardId(id), low, size },
            term: 1,
            primary: None,
            replicas: vec![],
            readable: vec![],
        }
    }

    #[test]
    fn the_key_set_is_spread_over_shards() {
        let t = Topology { shards: vec![shard(2, 4096, 4096), shard(1, 0, 4096)], ..Topology::default() };
        assert_eq!(key_ranges(&t, 1_000_000), vec![(0, 4095), (4096, 8191)]);
        assert_eq!(key_ranges(&t, 100), vec![(0, 49), (4096, 4145)]);
        let huge = Topology { shards: vec![shard(1, i64::MAX - 10, 1 << 40)], ..Topology::default() };
        assert_eq!(key_ranges(&huge, 1000), vec![(i64::MAX - 10, i64::MAX)]);
    }

    #[test]
    fn rows_follow_the_schema() {
        let maker = RowMaker::new(&Schema::seed(), 5);
        assert_eq!(maker.row(142).values, vec![Value::Str("abcde".into()), Value::Int(42)]);
    }
}
