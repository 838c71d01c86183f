#!/usr/bin/env bash
# Runs the whole test suite (unit, property, storage crash, openraft conformance, multi-process
# cluster tests). Installs what it needs first. A cold run compiles RocksDB (~15-30 minutes).
cd "$(dirname "$0")/.."
source scripts/env.sh
# Bound the size of incremental state kept between runs.
du -sm "$CARGO_TARGET_DIR/debug/incremental" 2>/dev/null | awk '$1 > 4000 {exit 1}' || rm -rf "$CARGO_TARGET_DIR/debug/incremental"
cargo test --locked --workspace --no-run
cargo test --locked --workspace -- --test-threads="${RUNNEL_TEST_THREADS:-2}"
