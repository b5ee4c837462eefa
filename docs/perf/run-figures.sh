#!/usr/bin/env bash
# Reproduces the figures of docs/PERFORMANCE.md ("## Cluster"): starts a release 3-node
# dev-cluster with four groups, runs `paxsql bench` for every goal ROUNDS times, writes one JSON
# document per run into docs/perf/results/, then times a failover on a fresh cluster.
# Usage: docs/perf/run-figures.sh [ROUNDS]   (from the repository root; about 4 min per round)
set -euo pipefail
ROUNDS=${1:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
PAXSQL=${PAXSQL:-${CARGO_TARGET_DIR:-target}/release/paxsql}
WORK=${WORK:-/tmp/paxsql-figures}       # on the same disk as the baseline (ext4 /dev/vda here)
OUT=docs/perf/results
PORT=6433
HOSTS=127.0.0.1:$PORT,127.0.0.1:$((PORT+1)),127.0.0.1:$((PORT+2))
HTTP=127.0.0.1:$((PORT+200)),127.0.0.1:$((PORT+201)),127.0.0.1:$((PORT+202))
GROUP_LIST=main,g2,g3,g4
mkdir -p "$OUT" "$WORK"

start_cluster() {
  rm -rf "$WORK/data"
  "$PAXSQL" dev-cluster --data-dir "$WORK/data" --base-port $PORT -- --groups $GROUP_LIST \
    > "$WORK/cluster.log" 2>&1 &
  CLUSTER=$!
  sleep 5
  # Table and 1,000 seeded rows in every group.
  "$PAXSQL" bench --hosts $HOSTS --http $HTTP --to-master --groups $GROUP_LIST --clients 4 \
    --setup --duration 1 --quiet > /dev/null
}
stop_cluster() { kill -INT $CLUSTER; wait $CLUSTER || true; }
bench() { # NAME ARGS...
  local name=$1; shift
  "$PAXSQL" bench --hosts $HOSTS --http $HTTP --to-master --duration $SECONDS_PER_RUN \
    --quiet --json "$@" > "$OUT/$name.r$round.json"
  echo "$name r$round: $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["paxsql"]; print(round(r["ops_per_second"]), "ops/s p50", r["latency_us"]["p50"], "us")' "$OUT/$name.r$round.json")"
}

start_cluster
for round in $(seq 1 "$ROUNDS"); do
  bench insert-c1 --clients 1 --baseline sqlite --baseline-dir "$WORK"
  bench insert-c64 --clients 64 --baseline sqlite --baseline-dir "$WORK"
  bench insert-c4 --clients 4
  bench insert-c16 --clients 16
  bench insert-c64-g4 --clients 64 --groups $GROUP_LIST
  bench read-local-c1 --clients 1 --workload point-read --consistency local --baseline sqlite --baseline-dir "$WORK"
  bench read-local-c4 --clients 4 --workload point-read --consistency local --baseline sqlite --baseline-dir "$WORK"
done
stop_cluster

for round in $(seq 1 "$ROUNDS"); do
  start_cluster
  "$PAXSQL" bench --failover --hosts $HOSTS --http $HTTP --json > "$OUT/failover.r$round.json"
  echo "failover r$round: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["failover_ms"], "ms")' "$OUT/failover.r$round.json")"
  stop_cluster
done
python3 docs/perf/figures.py "$OUT"
