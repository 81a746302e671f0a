//! `shardline write --file`: rows from CSV or JSON lines, checked in full against the
//! schema before anything is sent, then written in batches with several in flight and a
//! progress bar on a terminal.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context};
use futures::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use shardline::rows::{csv_rows, jsonl_rows};
use shardline::Row;

use crate::commands::Ctx;
use crate::output::print_json;

/// Reads every row of `path`, typed by the schema; the first bad row is an error.
fn read_rows(path: &Path, schema: &shardline::Schema) -> anyhow::Result<Vec<Row>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader = BufReader::new(file);
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let rows: Result<Vec<Row>, _> = match ext.as_str() {
        "csv" => csv_rows(schema, reader)?.collect(),
        "jsonl" | "ndjson" | "json" => jsonl_rows(schema, reader).collect(),
        _ => bail!("{}: unknown file type; use a .csv (header row of column names) or .jsonl file", path.display()),
    };
    rows.with_context(|| path.display().to_string())
}

/// Writes the rows of `path` in batches of `batch`, `parallel` batches in flight.
pub(crate) async fn run(ctx: &Ctx, path: &Path, batch: usize, parallel: usize) -> anyhow::Result<()> {
    if batch == 0 || parallel == 0 {
        bail!("--batch and --parallel must be at least 1");
    }
    let client = ctx.client().await?;
    let schema = ctx.schema(&client).await?;
    let rows = read_rows(path, &schema)?;
    if rows.is_empty() {
        bail!("{}: no rows", path.display());
    }
    let mut keys: Vec<i64> = rows.iter().map(|r| r.key).collect();
    keys.sort_unstable();
    if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
        bail!("{}: key {} appears more than once", path.display(), w[0]);
    }
    let bar = if rows.len() > batch && !ctx.json {
        let bar = ProgressBar::new(rows.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} rows ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let mut written = 0u64;
    let mut batches = 0u64;
    // After a failure no new batch starts, but those in flight are waited for, so the
    // count of rows written is exact.
    let failed = AtomicBool::new(false);
    let mut first_error = None;
    let mut writes = stream::iter(rows.chunks(batch))
        .map(|chunk| {
            let client = client.clone();
            let failed = &failed;
            async move {
                if failed.load(Ordering::Relaxed) {
                    return (chunk.len(), None);
                }
                (chunk.len(), Some(client.write(chunk).await))
            }
        })
        .buffer_unordered(parallel);
    while let Some((len, result)) = writes.next().await {
        match result {
            Some(Ok(done)) => {
                written += done.rows();
                batches += 1;
                bar.inc(len as u64);
            }
            Some(Err(e)) => {
                failed.store(true, Ordering::Relaxed);
                first_error.get_or_insert(e);
            }
            None => {}
        }
    }
    if let Some(e) = first_error {
        bar.abandon();
        return Err(e)
            .with_context(|| format!("{written} rows in {batches} batches were written, then a batch failed"));
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    if ctx.json {
        print_json(&json!({
            "rows": written,
            "batches": batches,
            "seconds": secs,
            "rows_per_s": written as f64 / secs.max(1e-9),
        }));
    } else {
        println!(
            "wrote {written} rows in {batches} batches in {secs:.2} s ({:.0} rows/s)",
            written as f64 / secs.max(1e-9)
        );
    }
    Ok(())
}
