#!/usr/bin/env bash
# The least work a replicated, fsynced log needs on this machine (benches/src/bin/replication_floor.rs):
# three `replication-floor node` processes on loopback (a fixed leader and two followers, each
# appending to its own file with fdatasync; a record is acknowledged once the leader and one
# follower synced it), driven by `replication-floor load` with runnel-load's default shape
# (4 connections x 64 records in flight, 1 KiB). One run per rate given (0 = closed loop), each
# on fresh files, printing throughput, ack p50 / p99 / p99.9 and the nodes' CPU. A benchmark:
# it measures and prints, it asserts nothing. Stops everything it started on exit.
#   benches/replication_floor.sh [--rates "0 16000 1000"] [--secs 10] [--size 1024]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
rates="0 16000 1000" secs=10 size=1024
while [ $# -gt 0 ]; do
  case "$1" in
    --rates) rates="$2"; shift ;;
    --secs) secs="$2"; shift ;;
    --size) size="$2"; shift ;;
    -h|--help) sed -n 2,9p "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
cargo build --release --locked --workspace --bins >&2
F="$CARGO_TARGET_DIR/release/replication-floor"
for port in 4710 4711 4712; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use; stop what listens there first" >&2; exit 1
  fi
done
DIR="$(mktemp -d /tmp/runnel-floor-XXXXXX)"
pids=()
stop_nodes() { [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null || true; pids=(); }
cleanup() { stop_nodes; rm -rf "$DIR"; }
trap cleanup EXIT
cpu() { local t=0 p; for p in "${pids[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
hz="$(getconf CLK_TCK)"
echo "| rate asked | records/s | ack p50 / p99 / p99.9 ms | nodes' CPU cores |"
echo "|---|---|---|---|"
for rate in $rates; do
  rm -f "$DIR"/*.log
  "$F" node --listen 127.0.0.1:4711 --file "$DIR/f1.log" & pids+=($!)
  "$F" node --listen 127.0.0.1:4712 --file "$DIR/f2.log" & pids+=($!)
  sleep 0.3
  "$F" node --listen 127.0.0.1:4710 --followers 127.0.0.1:4711,127.0.0.1:4712 --file "$DIR/l.log" & pids+=($!)
  sleep 0.3
  before="$(cpu)" t0="$(date +%s.%N)"
  out="$("$F" load --leader 127.0.0.1:4710 --rate "$rate" --size "$size" --duration "$secs")"
  after="$(cpu)" t1="$(date +%s.%N)"
  stop_nodes
  python3 - "$rate" "$out" "$before" "$after" "$t0" "$t1" "$hz" <<'PY'
import json, sys
rate, out = sys.argv[1], json.loads(sys.argv[2])
b, a, t0, t1, hz = map(float, sys.argv[3:])
cores = (a - b) / hz / (t1 - t0)
asked = "closed loop" if rate == "0" else f"{int(rate):,}"
print(f"| {asked} | {out['records_per_sec']:,.0f} | {out['ack_p50_ms']:.2f} / {out['ack_p99_ms']:.2f} / {out['ack_p999_ms']:.2f} | {cores:.2f} |")
PY
done
