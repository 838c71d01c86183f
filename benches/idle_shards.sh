#!/usr/bin/env bash
# CPU of a node hosting many idle shard replicas: starts a 3-node release cluster on loopback,
# creates streams totalling --shards shards (RF 3, so every node hosts a replica of each), waits
# until every group has a leader, lets it settle, then samples each node's CPU time from
# /proc/<pid>/stat over --secs seconds and prints it as % of one core. A benchmark: it measures
# and prints, it asserts nothing. Stops everything it started on exit.
#   benches/idle_shards.sh [--shards 1000] [--secs 60] [--per-stream 250]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
total=1000 secs=60 per=250
while [ $# -gt 0 ]; do
  case "$1" in
    --shards) total="$2"; shift ;;
    --secs) secs="$2"; shift ;;
    --per-stream) per="$2"; shift ;;
    -h|--help) sed -n 2,7p "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
cargo build --release --locked --workspace --bins >&2
BIN="$CARGO_TARGET_DIR/release"
# The clusters use fixed loopback ports: refuse to measure whatever else listens there.
for port in 4601 4602 4603 4567 4568 4569; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use (another cluster running?); stop it first" >&2; exit 1
  fi
done
DIR="$(mktemp -d /tmp/runnel-idle-XXXXXX)"
export RUNNEL_CLUSTER_DIR="$DIR" RUNNEL_BIN="$BIN/runnel"
cleanup() { cluster/local-cluster.sh stop >/dev/null 2>&1 || true; rm -rf "$DIR"; }
trap cleanup EXIT
cluster/local-cluster.sh start 3 >/dev/null
for port in 4567 4568 4569; do
  for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
done
metric() {  # metric NAME PORT: the value of an unlabelled series on a node
  curl -sf "http://127.0.0.1:$2/metrics" | awk -v m="$1" '$1 == m { print $2 }'
}
made=0 i=0
while [ "$made" -lt "$total" ]; do
  n=$((total - made < per ? total - made : per))
  "$BIN/runnel" --endpoint http://127.0.0.1:4601 stream create "idle$i" --shards "$n" >/dev/null
  made=$((made + n)) i=$((i + 1))
done
echo "created $made shards in $i streams; waiting for every group to have a leader" >&2
start=$(date +%s)
while :; do
  hosted="$(metric runnel_raft_groups_hosted 4567 || echo 0)"
  leaderless="$(metric runnel_raft_groups_without_leader 4567 || echo 1)"
  [ "${hosted%.*}" -ge "$made" ] && [ "${leaderless%.*}" = 0 ] && break
  [ $(($(date +%s) - start)) -gt 600 ] && { echo "gave up: hosted $hosted, leaderless $leaderless" >&2; break; }
  sleep 2
done
echo "all groups led after $(($(date +%s) - start)) s (node 1 hosts $hosted groups); settling 15 s" >&2
sleep 15
hz="$(getconf CLK_TCK)"
declare -A before
for f in "$DIR"/node*.pid; do p="$(cat "$f")"; before[$p]="$(awk '{print $14 + $15}' "/proc/$p/stat")"; done
sleep "$secs"
echo "| node | groups hosted | groups led | groups quiet | CPU over ${secs} s (% of one core) | RSS MiB |"
echo "|---|---|---|---|---|---|"
for k in 1 2 3; do
  p="$(cat "$DIR/node$k.pid")"; port=$((4566 + k))
  after="$(awk '{print $14 + $15}' "/proc/$p/stat")"
  rss="$(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$p/status")"
  pct="$(awk -v a="${before[$p]}" -v b="$after" -v hz="$hz" -v s="$secs" 'BEGIN { printf "%.1f", 100 * (b - a) / hz / s }')"
  echo "| $k | $(metric runnel_raft_groups_hosted "$port") | $(metric runnel_raft_groups_led "$port") | $(metric runnel_raft_groups_quiet "$port") | $pct | $rss |"
done
