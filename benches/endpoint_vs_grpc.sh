#!/usr/bin/env bash
# PutRecords throughput through the Kinesis HTTP endpoint (AWS SDK for Rust) versus the native
# gRPC API on a 3-node local cluster, release build, write limits off. A benchmark: it measures
# and prints, it asserts nothing. Extra arguments go to the benchmark binary
# (e.g. --clients 8 --batch 500 --size 1024 --secs 10 --rounds 3).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release --locked --workspace --bins
BIN="$CARGO_TARGET_DIR/release"
DIR="$(mktemp -d /tmp/runnel-bench-XXXXXX)"
export RUNNEL_CLUSTER_DIR="$DIR" RUNNEL_BIN="$BIN/runnel"
export RUNNEL_NODE_EXTRA_TOML=$'[limits]\nshard_write_bytes_per_sec = 0\nshard_write_records_per_sec = 0'
cleanup() { cluster/local-cluster.sh stop >/dev/null 2>&1 || true; rm -rf "$DIR"; }
trap cleanup EXIT
cluster/local-cluster.sh start 3 >/dev/null
for port in 4567 4568 4569; do
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.2
  done
done
"$BIN/endpoint-vs-grpc" \
  --grpc-all http://127.0.0.1:4601,http://127.0.0.1:4602,http://127.0.0.1:4603 \
  --grpc http://127.0.0.1:4601 \
  --http http://127.0.0.1:4567,http://127.0.0.1:4568,http://127.0.0.1:4569 "$@"
