#!/usr/bin/env bash
# Adding a replica to a shard of ROWS rows (default 1,000,000): how much memory the sending
# node takes, whether the copy holds --snapshot-rate, and what progress the user sees.
#
#   benches/snapshot-copy.sh [RATE]      RATE: bytes/s for --snapshot-rate (default: the
#                                        node's own default, 64 MiB/s; 0: unlimited)
#   ROWS=1000000 WIDTH=100 BIN=target/release benches/snapshot-copy.sh 16777216
#
# It starts `shardline up` (free ports, a temporary data directory) with one shard of ROWS
# keys on Server0, loads ROWS rows (names of WIDTH bytes) with `shardline write --file`,
# (batches of 100 rows, so the log has dropped the first entries and only a snapshot can
# catch a new replica up), then runs `shardline add Server1:sh1`, which waits until the new replica serves reads and
# prints its progress once a second (its bar when run on a terminal). Meanwhile it samples
# Server0's RSS every 100 ms and its STATUS (text mode) every second. At the end it prints
# Server0's peak memory (VmHWM) before and after the copy, the peak RSS sampled during it,
# and the copy's bytes, duration and rate from Server0's log. Every process `shardline up`
# started is stopped (SIGINT to it, which stops the rest) when the script ends, however.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
ROWS=${ROWS:-1000000}
WIDTH=${WIDTH:-100}
RATE=${1:-}
for b in shardline shardline-node shardline-coordinator shardline-balancer; do
    [ -x "$BIN/$b" ] || { echo "$BIN/$b not found: cargo build --release --workspace" >&2; exit 1; }
done

work=$(mktemp -d /tmp/shardline-copy.XXXXXX)
up_pid=""
sampler=""
cleanup() {
    [ -n "$sampler" ] && kill "$sampler" 2>/dev/null || true
    if [ -n "$up_pid" ] && kill -0 "$up_pid" 2>/dev/null; then
        kill -INT "$up_pid"
        for _ in $(seq 100); do kill -0 "$up_pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$up_pid" 2>/dev/null || true
    fi
    [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

# A node's STATUS in the text mode, as `nc` shows it.
text_status() {
    python3 -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
s.sendall(b"STATUS\n")
for line in s.makefile():
    sys.stdout.write(line)
    if line.startswith(("OK", "ERR")):
        break
' "$1" 2>/dev/null
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
bal=$(free_port); coord=$(free_port); base=$((20000 + RANDOM % 20000))
addr=127.0.0.1:$bal
cat > "$work/layout.json" <<EOF
{"N": 1,
 "schema": {"columns": ["Stud_id", "Stud_name", "Stud_marks"], "dtypes": ["Number", "String", "Number"]},
 "shards": [{"Stud_id_low": 0, "Shard_id": "sh1", "Shard_size": $ROWS}],
 "servers": {"Server0": ["sh1"]}}
EOF
rate_flag=()
[ -n "$RATE" ] && rate_flag=(--snapshot-rate "$RATE")
"$BIN/shardline" up --data-dir "$work/data" --config "$work/layout.json" --balancer-port "$bal" \
    --coordinator-port "$coord" --node-base-port "$base" "${rate_flag[@]}" >"$work/up.log" 2>&1 &
up_pid=$!
for i in $(seq 150); do
    "$BIN/shardline" --addr "$addr" read 0 0 >/dev/null 2>&1 && break
    [ "$i" = 150 ] && { echo "the cluster did not start; its log:" >&2; cat "$work/up.log" >&2; exit 1; }
    sleep 0.2
done

python3 - "$ROWS" "$WIDTH" > "$work/rows.csv" <<'EOF'
import sys
rows, width = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout
out.write("Stud_id,Stud_name,Stud_marks\n")
for k in range(rows):
    name = ("n%d-" % k).ljust(width, "x")
    out.write("%d,%s,%d\n" % (k, name, k % 100))
EOF
start=$(date +%s.%N)
"$BIN/shardline" --addr "$addr" --timeout 60 write --file "$work/rows.csv" --batch 100 --parallel 8 >/dev/null
echo "loaded $ROWS rows of ${WIDTH}-byte names in $(echo "$(date +%s.%N) - $start" | bc) s"

pidfile=$(find "$work/data" -name Server0.pid | head -1)
logfile=$(find "$work/data" -name Server0.log | head -1)
pid=$(cat "$pidfile")
port=$(tr '\0' '\n' < "/proc/$pid/cmdline" | grep -A1 -- '--listen' | tail -1 | cut -d: -f2)
mem() { grep -E "^$1:" "/proc/$pid/status" | awk '{print $2}'; }
echo "Server0 (pid $pid): before the copy VmHWM $(mem VmHWM) kB, VmRSS $(mem VmRSS) kB"
: > "$work/rss"
: > "$work/status"
(
    n=0
    while kill -0 "$pid" 2>/dev/null; do
        grep -E '^VmRSS:' "/proc/$pid/status" | awk '{print $2}' >> "$work/rss"
        if [ $((n % 10)) = 0 ]; then
            text_status "$port" | grep -E '^ *copy' >> "$work/status" || true
        fi
        n=$((n + 1))
        sleep 0.1
    done
) &
sampler=$!
start=$(date +%s.%N)
"$BIN/shardline" --addr "$addr" add Server1:sh1 2>"$work/add.err" >"$work/add.out"
echo "shardline add returned after $(echo "$(date +%s.%N) - $start" | bc) s; its progress lines:"
sed 's/^/    /' "$work/add.err"
kill "$sampler" 2>/dev/null || true
sampler=""
echo "Server0's STATUS copy lines, one a second:"
sed 's/^/    /' "$work/status"
echo "Server0 after the copy: VmHWM $(mem VmHWM) kB, VmRSS $(mem VmRSS) kB, peak RSS sampled during it $(sort -n "$work/rss" | tail -1) kB"
sent=$(grep -E 'sending a snapshot' "$logfile" | tail -1)
done_=$(grep -E 'snapshot sent' "$logfile" | tail -1)
python3 - "$sent" "$done_" "${RATE:-67108864}" <<'EOF'
import sys, re, datetime
def when(line):
    t = re.search(r'(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z', line).group(1)
    return datetime.datetime.fromisoformat(t[:26])
plain = lambda s: re.sub(r'\x1b\[[0-9;]*m', '', s)
sent, done, rate = plain(sys.argv[1]), plain(sys.argv[2]), int(sys.argv[3])
if not sent or not done:
    sys.exit("no snapshot in Server0's log: the replica caught up some other way")
secs = (when(done) - when(sent)).total_seconds()
bytes_ = int(re.search(r'bytes=(\d+)', done).group(1))
rows = int(re.search(r'rows=(\d+)', done).group(1))
print("copy: %d rows, %.1f MiB in %.2f s = %.1f MiB/s (limit %s)" % (
    rows, bytes_ / 2**20, secs, bytes_ / 2**20 / secs, "%.1f MiB/s" % (rate / 2**20) if rate else "none"))
EOF
