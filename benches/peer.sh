#!/usr/bin/env bash
# `make bench-peer`: Redis Cluster and Shardline side by side on this machine.
# Installs Debian's redis-server and redis-tools if they are missing (without letting the
# package start its own service), then runs `shardline-bench peer`, which starts a Redis
# Cluster and a Shardline cluster on free 127.0.0.1 ports and stops every server it started
# by pid, also on failure. Arguments are passed on (see `shardline-bench peer --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SHARDLINE_BENCH:-target/release/shardline-bench}

install_redis() {
    local sudo="" policy=/usr/sbin/policy-rc.d added=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "installing Debian's redis-server and redis-tools..." >&2
    if [ ! -e "$policy" ]; then
        # Deny service starts during the install: the bench starts its own servers.
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
        $sudo chmod +x "$policy"
        added=1
    fi
    local status=0
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server redis-tools >/dev/null; } || status=$?
    if [ -n "$added" ]; then $sudo rm -f "$policy"; fi
    return $status
}

for tool in redis-server redis-cli redis-benchmark; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        install_redis
        break
    fi
done
if [ ! -x "$bin" ]; then
    echo "$bin not found: build it first (cargo build --release --workspace)" >&2
    exit 1
fi
exec "$bin" peer "$@"
