#!/usr/bin/env bash
# Builds (release) and runs a single-node Runnel server with embedded storage in ./runnel-data:
# the Kinesis endpoint (development mode: any access key) plus /healthz and /metrics on
# http://127.0.0.1:4567, the gRPC API on 127.0.0.1:4600. Extra arguments go to `runnel serve`.
# The first build compiles RocksDB and takes about 20 minutes. The build command is the same as
# the benchmarks' (--workspace --bins), so both share one release build.
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release --locked --workspace --bins
exec "$CARGO_TARGET_DIR/release/runnel" serve "$@"
