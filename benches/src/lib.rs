//! Shared helpers for Shardline benchmarks live in the bench targets under `benches/`.
