#!/usr/bin/env bash
# Context switches per operation, by node and thread name, while `paxsql bench` runs against a
# local cluster started with `docs/perf/run-figures.sh`'s ports (or `paxsql dev-cluster
# --base-port 6433`). Context switches move far less with a shared host's neighbours than
# throughput does.
# Usage: docs/perf/context-switches.sh [BENCH ARGS...]   e.g. --clients 1 --duration 4
set -euo pipefail
PAXSQL=${PAXSQL:-${CARGO_TARGET_DIR:-target}/release/paxsql}
PORT=${PORT:-6433}
HOSTS=127.0.0.1:$PORT,127.0.0.1:$((PORT+1)),127.0.0.1:$((PORT+2))
HTTP=127.0.0.1:$((PORT+200)),127.0.0.1:$((PORT+201)),127.0.0.1:$((PORT+202))
pids=$(pgrep -f "node --id . .*--sql 127.0.0.1:($PORT|$((PORT+1))|$((PORT+2)))" | tr '\n' ' ')
[ -n "$pids" ] || { echo "no paxsql node listens on $HOSTS; start a dev-cluster first" >&2; exit 1; }
snapshot() {
  for pid in $pids; do for task in /proc/$pid/task/*; do
    echo "$pid $(cat "$task/comm") ${task##*/} $(awk '/ctxt_switches/{s+=$2} END{print s}' "$task/status")"
  done; done
}
before=$(mktemp); after=$(mktemp); trap 'rm -f "$before" "$after"' EXIT
snapshot > "$before"
report=$("$PAXSQL" bench --hosts "$HOSTS" --http "$HTTP" --to-master --quiet --json "$@")
snapshot > "$after"
python3 - "$report" "$before" "$after" <<'PY'
import collections, json, sys
ops = max(json.loads(sys.argv[1])["paxsql"]["ops"], 1)
read = lambda path: {tuple(line.split()[:3]): int(line.split()[3]) for line in open(path)}
before, after = read(sys.argv[2]), read(sys.argv[3])
per_thread = collections.Counter()
for (pid, name, task), count in after.items():
    per_thread[(pid, name)] += count - before.get((pid, name, task), 0)
print(f"{ops} operations; context switches per operation:")
for (pid, name), count in sorted(per_thread.items()):
    if count / ops >= 0.05:
        print(f"  node pid {pid:>7}  {name:<16} {count / ops:6.2f}")
print(f"  all nodes                         {sum(per_thread.values()) / ops:6.2f}")
PY
