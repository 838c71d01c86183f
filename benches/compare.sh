#!/usr/bin/env bash
# Side-by-side benchmark: Runnel (3 nodes, RF 3, acknowledged after majority fsync) versus NATS
# JetStream (Debian nats-server, 3-node cluster, file storage, R3) on this machine, in one run,
# driven by the same generator (runnel-load) with the same producers, window and record sizes.
# A benchmark: it measures and prints, it asserts nothing.
#
#   benches/compare.sh            full run (3 saturation runs per system and size; ~12 minutes)
#   benches/compare.sh --quick    reduced run (1 short run per system and size; under 3 minutes
#                                 once the release build exists)
# Options: --runs N --secs S --warmup S --producers P --in-flight W --shards N --sizes "1024 100"
#          --low-rate R (records/s of the fixed low-rate run, default 1000; 0 skips it;
#          --quick skips it unless given)
#          --out DIR (results; default bench-results/<timestamp>)
#          --random-data (incompressible record data instead of `x` bytes after a 16-byte header)
#          --threads T (threads each server node may run its work on, the same for both systems:
#          Runnel's `worker_threads`, NATS's GOMAXPROCS; default: the machine's cores divided
#          among the 3 nodes, at least 1; 0 leaves both at their defaults, one per core)
#
# Per record size and system: throughput at saturation (closed loop, P producers x W records in
# flight each), then latency at half of that system's own saturation rate (open loop, consumers
# on: ack and end-to-end propagation), and once more at one fixed low rate (1 KiB, --low-rate,
# consumers on) for the CPU each system spends per record when records come one at a time.
# Systems: `runnel` (one PutRecord call per record),
# `runnel-stream` (runnel-client's leader-aware Producer in streaming mode: every record on its
# own, pipelined on a PutRecordStream to its shard's leader, acknowledged on its own),
# `runnel-producer` (the same Producer batching: the records in flight go out as PutRecords
# calls per shard leader) and `nats` (one JetStream publish per record, pipelined on the
# publisher's connection). Each run writes to fresh streams (Runnel: one stream
# of N shards; NATS: N streams, a record goes to stream hash(key) % N) and deletes them after.
# It installs nats-server if missing (root), starts both clusters under a temporary directory
# and stops everything it started on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

quick=0 runs=3 secs=15 warmup=3 producers=4 inflight=64 shards=4 sizes="1024 100" low="" out=""
threads=$(( $(nproc) / 3 > 0 ? $(nproc) / 3 : 1 ))
data_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --runs) runs="$2"; shift ;;
    --secs) secs="$2"; shift ;;
    --warmup) warmup="$2"; shift ;;
    --producers) producers="$2"; shift ;;
    --in-flight) inflight="$2"; shift ;;
    --shards) shards="$2"; shift ;;
    --sizes) sizes="$2"; shift ;;
    --low-rate) low="$2"; shift ;;
    --out) out="$2"; shift ;;
    --random-data) data_args=(--random-data) ;;
    --threads) threads="$2"; shift ;;
    -h|--help) sed -n 2,31p "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$quick" = 1 ]; then runs=1 secs=5 warmup=1; fi
# The low-rate run is part of the full run; --quick leaves it out unless --low-rate is given.
if [ -z "$low" ]; then low=$((quick ? 0 : 1000)); fi
out="${out:-$PWD/bench-results/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"

if ! command -v nats-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing nats-server (Debian package)" >&2
    apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends nats-server >/dev/null
  else
    echo "nats-server is missing: apt-get install nats-server (as root)" >&2; exit 1
  fi
fi

echo "building the release binaries (the first build compiles RocksDB, ~20-30 minutes)" >&2
cargo build --release --locked --workspace --bins >&2
BIN="$CARGO_TARGET_DIR/release"

# The clusters use fixed loopback ports: refuse to measure whatever else listens there.
for port in 4601 4602 4603 4567 4568 4569 4222 4223 4224 6222 6223 6224 8222 8223 8224; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use (another cluster running?); stop it first" >&2; exit 1
  fi
done
DIR="$(mktemp -d /tmp/runnel-compare-XXXXXX)"
nats_pids=()
cleanup() {
  RUNNEL_CLUSTER_DIR="$DIR/runnel" cluster/local-cluster.sh stop >/dev/null 2>&1 || true
  for p in "${nats_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${nats_pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  # The servers' logs stay with the results (a slow second can then be looked up).
  mkdir -p "$out/server-logs"
  cp "$DIR"/runnel/node*.log "$DIR"/nats*.log "$out/server-logs/" 2>/dev/null || true
  for i in 1 2 3; do  # RocksDB's event log: flushes, compactions, stalls, with times
    cp "$DIR/runnel/node$i/LOG" "$out/server-logs/node$i.rocksdb.LOG" 2>/dev/null || true
  done
  rm -rf "$DIR"
}
trap cleanup EXIT

# --- Runnel: 3 nodes on loopback, per-shard limits off (the generator must not measure them).
export RUNNEL_CLUSTER_DIR="$DIR/runnel" RUNNEL_BIN="$BIN/runnel"
# Three nodes share this machine: each gets the same thread budget as a NATS node (below).
export RUNNEL_WORKER_THREADS="$threads"
export RUNNEL_NODE_EXTRA_TOML=$'[limits]\nshard_write_bytes_per_sec = 0\nshard_write_records_per_sec = 0\nshard_reads_per_sec = 0\nshard_read_bytes_per_sec = 0'
cluster/local-cluster.sh start 3 >/dev/null
for port in 4567 4568 4569; do
  for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
done
runnel_pids="$(cat "$DIR"/runnel/node*.pid | tr '\n' ' ')"
runnel_eps="http://127.0.0.1:4601,http://127.0.0.1:4602,http://127.0.0.1:4603"

# --- NATS JetStream: 3 nodes on loopback (client 4222-4224, routes 6222-6224, monitor 8222-8224).
for i in 1 2 3; do
  mkdir -p "$DIR/nats$i"
  cat > "$DIR/nats$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:$((4221 + i))
http: 127.0.0.1:$((8221 + i))
jetstream { store_dir: "$DIR/nats$i", max_file_store: 50G }
cluster {
  name: bench
  listen: 127.0.0.1:$((6221 + i))
  routes: [ nats-route://127.0.0.1:6222, nats-route://127.0.0.1:6223, nats-route://127.0.0.1:6224 ]
}
CONF
  if [ "$threads" -gt 0 ]; then
    GOMAXPROCS="$threads" nohup nats-server -c "$DIR/nats$i.conf" > "$DIR/nats$i.log" 2>&1 &
  else
    nohup nats-server -c "$DIR/nats$i.conf" > "$DIR/nats$i.log" 2>&1 &
  fi
  nats_pids+=($!)
done
for port in 8222 8223 8224; do
  for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
done
nats_eps="nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224"

# CPU seconds used so far by a set of pids (utime + stime).
cpu_secs() {
  local t=0 p
  for p in $1; do
    [ -r "/proc/$p/stat" ] || continue
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  awk -v t="$t" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'
}

# run_load SYSTEM NAME [runnel-load args...]: one measured run; results in $out/NAME.json
# (with the server processes' CPU use added as "server_cores").
n=0
run_load() {
  local system="$1" name="$2"; shift 2
  local eps pids mode=()
  case "$system" in
    runnel) eps="$runnel_eps" pids="$runnel_pids" ;;
    runnel-producer) eps="$runnel_eps" pids="$runnel_pids" mode=(--client-batching) ;;
    runnel-stream) eps="$runnel_eps" pids="$runnel_pids" mode=(--client-streaming) ;;
    nats) eps="$nats_eps" pids="${nats_pids[*]}" ;;
  esac
  n=$((n + 1))
  local before start
  before="$(cpu_secs "$pids")"; start="$(date +%s.%N)"
  "$BIN/runnel-load" --system "${system%%-*}" "${mode[@]}" --endpoints "$eps" --stream "b${n}x" \
    --create-shards "$shards" --producers "$producers" --duration "$secs" --warmup "$warmup" \
    --delete-after --label "$name" --json "$out/$name.json" "${data_args[@]}" "$@" > "$out/$name.out" 2> "$out/$name.log" \
    || { echo "run $name failed: see $out/$name.log" >&2; tail -5 "$out/$name.log" >&2; return 0; }
  local cores
  cores="$(awk -v a="$before" -v b="$(cpu_secs "$pids")" -v s="$start" -v e="$(date +%s.%N)" \
    'BEGIN { printf "%.2f", (b - a) / (e - s) }')"
  python3 - "$out/$name.json" "$cores" <<'PY'
import json, sys
p, cores = sys.argv[1], float(sys.argv[2])
r = json.load(open(p)); r["server_cores"] = cores; json.dump(r, open(p, "w"), indent=1)
PY
  tail -1 "$out/$name.out" >&2
}

median_rate() {  # median records/s over $out/PREFIX-*.json
  python3 - "$out" "$1" <<'PY'
import glob, json, statistics, sys
rates = [json.load(open(f))["records_per_sec"] for f in glob.glob(f"{sys.argv[1]}/{sys.argv[2]}-*.json")]
print(int(statistics.median(rates)) if rates else 0)
PY
}

{
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "nats-server $(nats-server --version | awk '{print $2}'); runnel $(git rev-parse --short HEAD)$(git diff --quiet HEAD 2>/dev/null || echo +changes)"
  echo "producers $producers x in-flight $inflight, shards/streams $shards, runs $runs x ${secs}s (+${warmup}s warm-up)"
  echo "threads per server node: $([ "$threads" -gt 0 ] && echo "$threads (Runnel worker_threads, NATS GOMAXPROCS)" || echo "each system's default (one per core)")"
} | tee "$out/setup.txt" >&2

systems="runnel runnel-stream runnel-producer nats"
for size in $sizes; do
  for r in $(seq 1 "$runs"); do
    for system in $systems; do
      run_load "$system" "$system-sat-$size-$r" --record-size "$size" --in-flight "$inflight"
    done
  done
  for system in $systems; do
    rate="$(median_rate "$system-sat-$size")"
    half=$((rate / 2))
    [ "$half" -gt 0 ] || continue
    run_load "$system" "$system-half-$size" --record-size "$size" --in-flight "$inflight" --rate "$half" --consumers
  done
done
if [ "$low" -gt 0 ]; then
  for system in $systems; do
    run_load "$system" "$system-low" --record-size 1024 --in-flight "$inflight" --rate "$low" --consumers
  done
fi

python3 - "$out" "$sizes" <<'PY' | tee "$out/table.md"
import glob, json, os, statistics, sys
out, sizes = sys.argv[1], sys.argv[2].split()
def load(name):
    p = f"{out}/{name}.json"
    return json.load(open(p)) if os.path.exists(p) else None
def runs(prefix):
    return [json.load(open(f)) for f in sorted(glob.glob(f"{out}/{prefix}-*.json"))]
def ms(r, k, q):
    v = (r or {}).get(k) or {}
    return f"{v[q]:.2f}" if q in v else "-"
SYSTEMS = ("runnel", "runnel-stream", "runnel-producer", "nats")
print(open(f"{out}/setup.txt").read().strip().replace("\n", "  \n"))
print()
print("| size | system | saturation rec/s (median; runs) | MB/s | ack p50/p99 ms at saturation | server CPU cores | half-rate rec/s | ack p50 / p99 ms | propagation p50 / p99 ms |")
print("|---|---|---|---|---|---|---|---|---|")
ratios = []
for size in sizes:
    med = {}
    for system in SYSTEMS:
        rs = runs(f"{system}-sat-{size}")
        if not rs:
            continue
        rates = [r["records_per_sec"] for r in rs]
        m = statistics.median(rates)
        med[system] = m
        mid = min(rs, key=lambda r: abs(r["records_per_sec"] - m))
        half = load(f"{system}-half-{size}")
        print(f"| {size} B | {system} | {m:,.0f} ({', '.join(f'{x:,.0f}' for x in rates)}) | {m*int(size)/1e6:.1f} "
              f"| {ms(mid,'ack_latency','p50_ms')} / {ms(mid,'ack_latency','p99_ms')} | {statistics.median(r.get('server_cores',0) for r in rs):.2f} "
              f"| {half['records_per_sec']:,.0f} | {ms(half,'ack_latency','p50_ms')} / {ms(half,'ack_latency','p99_ms')} "
              f"| {ms(half,'propagation','p50_ms')} / {ms(half,'propagation','p99_ms')} |" if half else
              f"| {size} B | {system} | {m:,.0f} | {m*int(size)/1e6:.1f} | {ms(mid,'ack_latency','p50_ms')} / {ms(mid,'ack_latency','p99_ms')} | - | - | - | - |")
    if med.get("nats"):
        ratios.append(f"{size} B: " + ", ".join(
            f"{s}/nats = {med.get(s, 0) / med['nats']:.2f}"
            for s in ("runnel", "runnel-stream", "runnel-producer")))
print()
print("Saturation throughput ratios (same producers, same records in flight per producer): " + "; ".join(ratios))
lows = [(s, load(f"{s}-low")) for s in SYSTEMS]
lows = [(s, r) for s, r in lows if r and r.get("records_per_sec")]
if lows:
    print()
    print("At a fixed low rate (1 KiB, open loop, consumers on): what one record costs when records come one at a time.")
    print()
    print("| system | rec/s | server CPU cores | server CPU per record | ack p50 / p99 ms | propagation p50 / p99 ms |")
    print("|---|---|---|---|---|---|")
    for s, r in lows:
        cores = r.get("server_cores", 0)
        print(f"| {s} | {r['records_per_sec']:,.0f} | {cores:.2f} | {cores / r['records_per_sec'] * 1e6:,.0f} µs "
              f"| {ms(r,'ack_latency','p50_ms')} / {ms(r,'ack_latency','p99_ms')} "
              f"| {ms(r,'propagation','p50_ms')} / {ms(r,'propagation','p99_ms')} |")
print()
print("runnel: one PutRecord call per record (any node; a node that does not lead the shard forwards). "
      "runnel-stream: the client's leader-aware Producer in streaming mode (each record on its own, "
      "pipelined on a PutRecordStream to its shard's leader, acknowledged on its own). "
      "runnel-producer: the same Producer batching (records in flight travel in PutRecords calls to "
      "each shard's leader). nats: one JetStream publish per record, pipelined on the publisher's "
      "connection, acknowledgements awaited asynchronously.")
print()
print("Durability: Runnel acknowledges after a majority of replicas fsynced the record; NATS 2.9 "
      "acknowledges after the record reached a majority's memory and syncs its files every 2 minutes "
      "(2.9 has no sync-always option).")
PY
echo "results: $out" >&2
