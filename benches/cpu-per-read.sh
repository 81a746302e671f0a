#!/usr/bin/env bash
# benches/cpu-per-read.sh BINDIR LABEL: a 6-node cluster (3 shards x 2 replicas, as in
# make bench-peer) from BINDIR's binaries under shardline-bench single-key reads, 50
# connections, pipelines 1 and 16, DUR (default 5s) after a 1 s warm-up. Prints reads/s, CPU
# microseconds per read of each process (utime+stime from /proc/<pid>/stat over the run,
# divided by the reads the balancer counted, or with DIRECT=1 the nodes counted) and
# syscalls per read (perf stat -e raw_syscalls:sys_enter; needs perf).
#   DIRECT=1  the bench routes by itself (--direct) instead of through the balancer
#   PERF=1    also record a 3 s system-wide perf profile of each run into /tmp
# It uses ports 17000 (balancer), 17100 (coordinator) and 17200-17205 (nodes), and stops the
# cluster (shardline up, by its pid) when it ends.
set -euo pipefail
BIN=$1; LABEL=$2; DUR=${DUR:-5s}
D=$(mktemp -d /tmp/slcpu.XXXX)
cat > $D/layout.json <<J
{"N":6,"schema":{"columns":["Stud_id","Stud_name","Stud_marks"],"dtypes":["Number","String","Number"]},
 "shards":[{"Stud_id_low":0,"Shard_id":"sh1","Shard_size":4294967296},
           {"Stud_id_low":4294967296,"Shard_id":"sh2","Shard_size":4294967296},
           {"Stud_id_low":8589934592,"Shard_id":"sh3","Shard_size":4294967296}],
 "servers":{"Server0":["sh1"],"Server1":["sh1"],"Server2":["sh2"],"Server3":["sh2"],"Server4":["sh3"],"Server5":["sh3"]}}
J
ADDR=127.0.0.1:17000
$BIN/shardline up --data-dir $D/data --balancer-port 17000 --coordinator-port 17100 --node-base-port 17200 --config $D/layout.json > $D/up.log 2>&1 &
UP=$!
trap 'kill -INT $UP 2>/dev/null; wait $UP 2>/dev/null; rm -rf $D' EXIT
deadline=$((SECONDS+120))
until $BIN/shardline --addr $ADDR read 0 0 >/dev/null 2>&1; do
  [ $SECONDS -lt $deadline ] || { echo "cluster did not come up" >&2; cat $D/up.log >&2; exit 1; }
  sleep 0.2
done
pids() { # name pid pairs of the balancer, coordinator and nodes (children of $UP and of the coordinator)
  for p in $(pgrep -P $UP); do
    echo "$(tr '\0' ' ' < /proc/$p/cmdline | awk '{print $1}' | xargs basename) $p"
    for c in $(pgrep -P $p || true); do echo "$(tr '\0' ' ' < /proc/$c/cmdline | awk '{print $1}' | xargs basename) $c"; done
  done
}
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
nodereads() { local sum=0; for port in 17200 17201 17202 17203 17204 17205; do
  v=$($BIN/shardline --addr 127.0.0.1:$port stats --json | python3 -c 'import json,sys; d=json.load(sys.stdin); it=d.items() if isinstance(d,dict) else d; print(sum(int(v) for k,v in it if str(k).endswith(".reads")))'); sum=$((sum+v)); done; echo $sum; }
reqs() { $BIN/shardline --addr $ADDR stats --json | python3 -c 'import json,sys; d=json.load(sys.stdin); d=dict(d) if isinstance(d,list) else d; print(d.get("requests") or [v for k,v in (d.items() if isinstance(d,dict) else []) if k=="requests"][0])' 2>/dev/null || echo 0; }
# preload once
$BIN/shardline-bench --addr $ADDR --mix read=1 --connections 50 --requests 1000 --warmup 0s --key-space 3000000 --preload 100000 --json --out $D/pre >/dev/null
TCK=$(getconf CLK_TCK)
for p in 1 16; do
  declare -A before=()
  while read -r n pid; do before[$pid]=$(ticks $pid); done < <(pids)
  if [ -n "${DIRECT:-}" ]; then r0=$(nodereads); else r0=$(reqs); fi
  if [ -n "${PERF:-}" ]; then (sleep 2; perf record -q -F 499 -g -a -o /tmp/perf-$LABEL-p$p.data -- sleep 3 >/dev/null 2>&1) & fi
  bal_pid=$(pids | awk '$1=="shardline-balancer"{print $2}')
  node_pids=$(pids | awk '$1=="shardline-node"{print $2}' | paste -sd,)
  perf stat -e raw_syscalls:sys_enter -p $bal_pid -o $D/sys-bal 2>/dev/null & PB=$!
  perf stat -e raw_syscalls:sys_enter -p $node_pids -o $D/sys-nodes 2>/dev/null & PN=$!
  /usr/bin/time -f "%U %S" -o $D/time perf stat -e raw_syscalls:sys_enter -o $D/sys-bench $BIN/shardline-bench --addr $ADDR --mix read=1 --connections 50 --pipeline $p \
     --duration $DUR --warmup 1s ${DIRECT:+--direct 127.0.0.1:17100} --key-space 3000000 --preload 100000 --json --out $D/p$p > $D/p$p.json
  if [ -n "${DIRECT:-}" ]; then r1=$(nodereads); else r1=$(reqs); fi
  kill -INT $PB $PN; wait $PB $PN 2>/dev/null || true
  sc() { awk '/raw_syscalls/{gsub(",","",$1); print $1}' $1; }
  sys_bal=$(sc $D/sys-bal); sys_nodes=$(sc $D/sys-nodes); sys_bench=$(sc $D/sys-bench)
  n=$((r1-r0))
  ops=$(python3 -c "import json; print(round(json.load(open('$D/p$p.json'))['throughput']))")
  bal=0; nodes=0; coord=0
  while read -r name pid; do
    d=$(( $(ticks $pid) - ${before[$pid]:-0} ))
    case $name in shardline-balancer) bal=$((bal+d));; shardline-node) nodes=$((nodes+d));; *) coord=$((coord+d));; esac
  done < <(pids)
  bench=$(awk '{print $1+$2}' $D/time)
  python3 - <<P
n=$n; t=$TCK
print(f"$LABEL pipeline $p: {$ops} reads/s; {n} reads counted; CPU us/read: balancer {1e6*$bal/t/n:.1f}, nodes (6) {1e6*$nodes/t/n:.1f}, coordinator {1e6*$coord/t/n:.1f}, bench {1e6*$bench/n:.1f}; syscalls/read: balancer {$sys_bal/n:.2f}, nodes {$sys_nodes/n:.2f}, bench {$sys_bench/n:.2f}")
P
  unset before
done
