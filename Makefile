# Shardline: the commands a newcomer needs. `make help` lists them.
CARGO ?= cargo

.PHONY: help run test fuzz-smoke bench bench-write fmt lint

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s '	'

run: ## build in release and start a local cluster (shardline up; ARGS="--data-dir DIR ...")
	$(CARGO) build --release --workspace
	./target/release/shardline up $(ARGS)

test: ## build everything and run every test (unit, property, integration)
	$(CARGO) test --workspace --locked

fuzz-smoke: ## run each cargo-fuzz target for FUZZ_SECONDS (default 60) on nightly
	bash fuzz/smoke.sh

bench: ## criterion micro-benchmarks of the codec
	$(CARGO) bench -p shardline-benches --bench codec

fmt: ## format the code
	$(CARGO) fmt --all

lint: ## formatting and clippy, as CI would want them
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench-write: ## one shard's write path on loopback: writes/s, p50/p99, fsyncs per ack
	$(CARGO) run --release -p shardline-benches --bin write-path -- $(BENCH_ARGS)
