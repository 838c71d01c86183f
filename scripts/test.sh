#!/usr/bin/env bash
# Runs the whole test suite (unit, property, storage crash, openraft conformance, CLI and
# multi-process cluster tests). Installs what it needs first. A cold run compiles RocksDB
# (~25 minutes on 2 cores). Always --workspace: building single packages resolves features
# differently and recompiles RocksDB.
cd "$(dirname "$0")/.."
source scripts/env.sh
# Bound the size of incremental state kept between runs.
du -sm "$CARGO_TARGET_DIR/debug/incremental" 2>/dev/null | awk '$1 > 4000 {exit 1}' || rm -rf "$CARGO_TARGET_DIR/debug/incremental"
cargo test --locked --workspace --no-run
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked --workspace -- --test-threads="${RUNNEL_TEST_THREADS:-2}" 2>&1 | tee "$log" || status=$?
passed=$( (grep -Eo '[0-9]+ passed' "$log" || true) | awk '{s+=$1} END {print s+0}')
failed=$( (grep -Eo '[0-9]+ failed' "$log" || true) | awk '{s+=$1} END {print s+0}')
echo "Tests: $passed passed, $failed failed"
exit "$status"
