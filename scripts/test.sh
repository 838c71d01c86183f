#!/usr/bin/env bash
# Runs the whole test suite (unit, property, storage crash, openraft conformance, CLI and
# multi-process cluster tests, the AWS SDK for Rust test, the boto3/cbor2 Kinesis suite, then
# the fault-injection matrix). Installs what it needs first. A cold run compiles RocksDB
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
cargo test --locked --workspace --no-fail-fast -- --test-threads="${RUNNEL_TEST_THREADS:-2}" 2>&1 | tee "$log" || status=$?
# Smoke run of the Criterion micro-benchmarks: each runs once in test mode (debug profile; no
# timing is measured or asserted, it only proves they still build and run).
cargo test --locked --workspace --bench '*' --no-fail-fast 2>&1 | tee -a "$log" || status=$?

# The Kinesis-compatibility suite: boto3 (and cbor2) against real clusters of the binary built
# above. Installs its Python packages if they are missing.
if ! python3 -c "import boto3, cbor2, pytest" >/dev/null 2>&1; then
  echo "==> installing the Python test packages (tests/kinesis/requirements.txt)" >&2
  python3 -m pip install -q -r tests/kinesis/requirements.txt 2>/dev/null \
    || python3 -m pip install -q --break-system-packages -r tests/kinesis/requirements.txt
fi
# Prometheus (and promtool) for the monitoring tests: Debian's package, installed if missing.
if ! command -v prometheus >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "==> installing prometheus (Debian package) for the monitoring tests" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; } \
    || echo "warning: could not install prometheus; its tests will be skipped" >&2
fi
RUNNEL_BIN="$CARGO_TARGET_DIR/debug/runnel" python3 -m pytest -q -p no:cacheprovider tests/kinesis 2>&1 | tee -a "$log" || status=$?

# The fault-injection matrix (jepsen/run.sh ci: leader-kill, pause, partition and power-loss
# runs that must pass, then the same scenarios with deliberate bugs that must be caught). It
# prints "jepsen matrix: N passed, M failed"; each run counts as one test.
bash jepsen/run.sh ci 2>&1 | tee -a "$log" || status=$?
passed=$( (grep -Eo '[0-9]+ passed' "$log" || true) | awk '{s+=$1} END {print s+0}')
failed=$( (grep -Eo '[0-9]+ failed' "$log" || true) | awk '{s+=$1} END {print s+0}')
echo "Tests: $passed passed, $failed failed"
exit "$status"
