#!/usr/bin/env bash
# Builds (release) and runs a single-node Runnel server with embedded storage in ./runnel-data:
# gRPC on 127.0.0.1:4600, HTTP (/healthz, /metrics) on 127.0.0.1:4567. Extra arguments go to
# `runnel serve`. The first build compiles RocksDB and takes about 20 minutes.
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release --locked -p runnel
exec "$CARGO_TARGET_DIR/release/runnel" serve "$@"
