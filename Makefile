# Shardline: the commands a newcomer needs. `make help` lists them.
CARGO ?= cargo

.PHONY: help run test sim fuzz-smoke bench bench-write bench-seed bench-peer bench-copy bench-failover bench-failover-docker fmt lint images all up clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s '	'

run: ## build in release and start a local cluster (shardline up; ARGS="--data-dir DIR ...")
	$(CARGO) build --release --workspace
	./target/release/shardline up $(ARGS)

# What CI runs (.ci/run): lint, every test, and a short smoke of each fuzz target where a
# nightly toolchain is present (cargo fuzz needs one; without it the smoke says skipped).
TEST_FUZZ_SECONDS ?= 30
test: ## lint, build and run every test (unit, property, integration), then fuzz each decoder 30 s (nightly)
	$(MAKE) --no-print-directory lint
	$(CARGO) test --workspace --locked
	@if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then \
		FUZZ_SECONDS=$(TEST_FUZZ_SECONDS) bash fuzz/smoke.sh; \
	else \
		echo "fuzz smoke skipped: no nightly toolchain (rustup toolchain install nightly)"; \
	fi

SEEDS ?= 2000
FAULTS ?= all
sim: ## deterministic cluster simulation: SEEDS seeds (default 2000) of FAULTS (all|none|crashes,pauses,partitions,disk,membership); SCENARIO=name for a scripted one
	$(CARGO) build --release -p shardline-sim
	$(or $(CARGO_TARGET_DIR),target)/release/shardline-sim --seeds $(SEEDS) --faults $(FAULTS) $(if $(SCENARIO),--scenario $(SCENARIO)) $(SIM_ARGS)

fuzz-smoke: ## run each cargo-fuzz target for FUZZ_SECONDS (default 60) on nightly
	bash fuzz/smoke.sh

bench: ## criterion micro-benchmarks of the codec
	$(CARGO) bench -p shardline-benches --bench codec

fmt: ## format the code
	$(CARGO) fmt --all

lint: ## formatting and clippy, as CI would want them
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench-write: ## one shard's write path on loopback (1/16/64 writers × 1/3/5 replicas): writes/s, p50/p99, fsyncs, appends in flight and table applies per ack
	$(CARGO) run --release -p shardline-benches --bin write-path -- $(BENCH_ARGS)

bench-seed: ## the course system's table (its 3 layouts, 10,000 reads and writes, 20 workers) beside Shardline's
	$(CARGO) build --release --workspace
	./target/release/shardline-bench seed $(BENCH_ARGS)

bench-peer: ## Redis Cluster vs Shardline, same shape and load (installs redis-server and redis-tools if missing)
	$(CARGO) build --release --workspace
	bash benches/peer.sh $(BENCH_ARGS)

bench-failover: ## kill, pause and cut off primaries under load (own local cluster; partition needs root): failover p50/p99/max, nothing lost
	$(CARGO) build --release -p shardline -p shardline-coordinator -p shardline-balancer -p shardline-storage-node -p shardline-benches
	$(or $(CARGO_TARGET_DIR),target)/release/shardline-bench failover --out bench-out/failover $(BENCH_ARGS)

bench-copy: ## add a replica to a shard of 1,000,000 rows: sender's memory, copy rate, progress (RATE=bytes/s)
	$(CARGO) build --release --workspace
	bash benches/snapshot-copy.sh $(RATE)

# --- Docker -------------------------------------------------------------------------------
# One stack per SHARDLINE_PREFIX (compose project, network <prefix>-net, containers and
# volumes <prefix>-...), its balancer on 127.0.0.1:SHARDLINE_PORT. Tests use their own.
SHARDLINE_PREFIX ?= shardline
SHARDLINE_PORT ?= 7000
SHARDLINE_IMAGE ?= shardline:latest
# The stack's credentials (users file, cluster secret, admin and app credentials), made by
# `make up` if missing and mounted read-only into the containers at this same host path.
SHARDLINE_AUTH ?= $(CURDIR)/docker/auth/$(SHARDLINE_PREFIX)
export SHARDLINE_PREFIX SHARDLINE_PORT SHARDLINE_IMAGE SHARDLINE_AUTH
# What `make clean` removes: everything Shardline made (CLEAN_SCOPE=all, the default), or
# with CLEAN_SCOPE=prefix only the stack SHARDLINE_PREFIX names (its images are kept).
CLEAN_SCOPE ?= all
ifeq ($(CLEAN_SCOPE),all)
CLEAN_LABEL := shardline.managed=true
else
CLEAN_LABEL := shardline.prefix=$(SHARDLINE_PREFIX)
endif
STATIC_TARGET := x86_64-unknown-linux-gnu
STATIC_DIR := $(or $(CARGO_TARGET_DIR),target)/$(STATIC_TARGET)/release
STATIC_BINS := shardline-coordinator shardline-balancer shardline-node shardline
# The CLI: the static one `make images` built, else the image's own (host network, so
# 127.0.0.1:SHARDLINE_PORT is the same address; docker/ mounted for the layout file).
CLI_BIN := $(if $(wildcard $(STATIC_DIR)/shardline),$(STATIC_DIR)/shardline,docker run --rm --network host \
	--label shardline.prefix=$(SHARDLINE_PREFIX) -v $(CURDIR)/docker:/docker:ro -v $(SHARDLINE_AUTH):$(SHARDLINE_AUTH) \
	-w / $(SHARDLINE_IMAGE) shardline)
# Every CLI call presents the stack's admin credential.
CLI := $(CLI_BIN) --credentials $(SHARDLINE_AUTH)/admin.credentials
ADDR := 127.0.0.1:$(SHARDLINE_PORT)
COMPOSE := docker-compose -p $(SHARDLINE_PREFIX) -f docker/docker-compose.yml
WAIT_SECONDS ?= 60

images: ## static binaries in one FROM-scratch image, shardline:latest (no registry needed)
	RUSTFLAGS='-C target-feature=+crt-static' $(CARGO) build --release --target $(STATIC_TARGET) \
		-p shardline-storage-node -p shardline-coordinator -p shardline-balancer -p shardline
	@for b in $(STATIC_BINS); do \
		ldd $(STATIC_DIR)/$$b 2>&1 | grep -Eq 'statically linked|not a dynamic executable' \
			|| { echo "$$b is not statically linked" >&2; exit 1; }; \
	done
	rm -rf docker/build && mkdir -p docker/build
	@for b in $(STATIC_BINS); do strip -o docker/build/$$b $(STATIC_DIR)/$$b; done
	docker build -q -t $(SHARDLINE_IMAGE) --label shardline.managed=true -f docker/Dockerfile docker/build
	@docker images --filter label=shardline.managed=true

all: images ## build the images, start coordinator + balancer on Docker, init the seed's layout
	@$(MAKE) --no-print-directory up

up: ## start the Docker stack from existing images and init it (once; safe to run twice)
	@mkdir -p $(SHARDLINE_AUTH)
	@$(CLI_BIN) auth init $(SHARDLINE_AUTH) >/dev/null && echo "credentials: $(SHARDLINE_AUTH)"
	$(COMPOSE) up -d
	@deadline=$$(( $$(date +%s) + $(WAIT_SECONDS) )); \
	until $(CLI) --addr $(ADDR) --timeout 2 ping >/dev/null 2>&1 \
		&& status=$$($(CLI) --addr $(ADDR) --timeout 5 --json status 2>/dev/null); do \
		if [ $$(date +%s) -ge $$deadline ]; then \
			echo "the balancer at $(ADDR) did not answer within $(WAIT_SECONDS) s" >&2; \
			$(COMPOSE) logs --tail 20 >&2; exit 1; \
		fi; \
		sleep 0.2; \
	done; \
	if echo "$$status" | grep -Eq '"schema": *null'; then \
		$(CLI) --addr $(ADDR) init --config docker/seed-init.json >/dev/null && echo "initialized: docker/seed-init.json"; \
	else \
		echo "already initialized: keeping the cluster's schema and data"; \
	fi
	@echo
	@echo "Shardline is up on Docker; its balancer is at $(ADDR)."
	@echo "  $(CLI) --addr $(ADDR) status"
	@echo "  $(CLI) --addr $(ADDR) write 42 alice 77 && $(CLI) --addr $(ADDR) read 0 100"
	@echo "  nc 127.0.0.1 $(SHARDLINE_PORT)      (then HELP, AUTH admin <secret in $(SHARDLINE_AUTH)/admin.credentials>, STATUS, ...)"
	@echo "  docker ps --filter label=shardline.prefix=$(SHARDLINE_PREFIX)"
	@echo "  make clean      removes every container, volume, network and image Shardline made"

bench-failover-docker: images ## the failover bench against the Docker stack SHARDLINE_PREFIX (started if needed, initialized by the bench if new)
	$(CARGO) build --release -p shardline-benches
	@mkdir -p $(SHARDLINE_AUTH)
	@$(CLI_BIN) auth init $(SHARDLINE_AUTH) >/dev/null
	$(COMPOSE) up -d
	SHARDLINE_CREDENTIALS=$(SHARDLINE_AUTH)/admin.credentials \
	$(or $(CARGO_TARGET_DIR),target)/release/shardline-bench failover --docker --prefix $(SHARDLINE_PREFIX) \
		--addr $(ADDR) --out bench-out/failover-docker $(BENCH_ARGS)

clean: ## remove every container, volume, network and image labelled shardline.managed=true
	@# The coordinator first, or it would restart the nodes being removed.
	-@$(COMPOSE) stop -t 5 2>/dev/null
	@docker ps -aq --filter label=shardline.managed=true --filter label=$(CLEAN_LABEL) \
		--filter label=shardline.component=coordinator | xargs -r docker rm -f >/dev/null
	@docker ps -aq --filter label=shardline.managed=true --filter label=$(CLEAN_LABEL) | xargs -r docker rm -f >/dev/null
	-@$(COMPOSE) down -v --remove-orphans 2>/dev/null
	@docker network ls -q --filter label=shardline.managed=true --filter label=$(CLEAN_LABEL) | xargs -r docker network rm >/dev/null
	@docker volume ls -q --filter label=shardline.managed=true --filter label=$(CLEAN_LABEL) | xargs -r docker volume rm -f >/dev/null
	@if [ "$(CLEAN_SCOPE)" = all ]; then \
		docker images -q --filter label=shardline.managed=true | sort -u | xargs -r docker rmi -f >/dev/null; \
	fi
	@if [ "$(CLEAN_SCOPE)" = all ]; then rm -rf docker/build docker/auth; else rm -rf $(SHARDLINE_AUTH); fi
	@echo "removed what Shardline made in Docker ($(CLEAN_LABEL))"
