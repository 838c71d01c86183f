#!/usr/bin/env bash
# Fault-injection runs against a fresh local cluster (debug build, the same build as the tests).
#   jepsen/run.sh SCENARIO [--nodes N] [--time-limit SECS] [--bug NAME] [...]   one run
#   jepsen/run.sh ci                                   the CI matrix, then the same scenarios
#                                                      with bug flags (each must fail rightly)
#   jepsen/run.sh everything --time-limit 1200         the long randomized run
# Scenarios: none kill leader-kill kill-majority kill-all pause partition partition-one
#   partition-majority partition-bridge partition-one-way partition-client-leader delay clock
#   power-loss everything.   Bugs: drop-applied-records reuse-sequence-numbers ack-before-fsync
#   restore-leader.
# Each run writes jepsen/runs/<time>-<scenario>/ (history.jsonl, verdict.json, report.svg, node
# configs and logs; node data only with JEPSEN_KEEP_DATA=1) and exits 0 only when every safety
# invariant holds (1: an anomaly, 2: the harness failed).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo test --locked --workspace --no-run >/dev/null 2>&1 || cargo test --locked --workspace --no-run
BIN="$CARGO_TARGET_DIR/debug"
scenario="${1:?usage: jepsen/run.sh SCENARIO|ci [--nodes N] [--time-limit SECS] [--bug NAME]}"
shift

one() {
  local s="$1"; shift
  local dir
  dir="jepsen/runs/$(date -u +%Y%m%dT%H%M%SZ)-$s"
  echo "==> $s $* ($dir)"
  local rc=0
  "$BIN/runnel-jepsen" run "$s" --bin "$BIN/runnel" --dir "$dir" "$@" || rc=$?
  # Keep the history, verdict, picture, configs and logs; drop the nodes' data (~200 MB a run)
  # unless JEPSEN_KEEP_DATA=1.
  if [ -z "${JEPSEN_KEEP_DATA:-}" ]; then
    find "$dir" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
  fi
  return "$rc"
}

# A run with a deliberate bug must fail (exit 1) and name the expected anomaly.
must_fail() {
  local s="$1" bug="$2" expected="$3"; shift 3
  local out rc=0
  out="$(one "$s" --time-limit 20 --bug "$bug" "$@")" || rc=$?
  echo "$out"
  if [ "$rc" = 1 ] && grep -q "\"$expected\"" <<<"$out"; then
    echo "==> $s with bug $bug failed as it must ($expected found)"
  else
    echo "==> $s with bug $bug did NOT report $expected (exit $rc)"
    return 1
  fi
}

if [ "$scenario" = ci ]; then
  status=0
  passed=0
  failed=0
  # Partitions with network namespaces and nftables when running as root (installing nftables
  # if it is missing), else through the harness's proxies.
  pnet=proxy
  if [ "$(id -u)" = 0 ]; then
    command -v nft >/dev/null || apt-get install -y -qq nftables >/dev/null 2>&1 || true
    command -v nft >/dev/null && command -v ip >/dev/null && pnet=netns
  fi
  for s in leader-kill pause partition-majority power-loss; do
    net=proxy; [ "$s" = partition-majority ] && net=$pnet
    if one "$s" --time-limit 30 --net "$net" "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); status=1; fi
  done
  # Writes in bursts: shard groups go quiet between them, so leaders of quiet groups get killed.
  if one leader-kill --time-limit 30 --bursts "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); status=1; fi
  # Snapshots every 100 entries: power cuts also hit snapshot builds, log purges and installs.
  if one power-loss --time-limit 30 --snapshot-logs 100 "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); status=1; fi
  for spec in "leader-kill drop-applied-records divergence" \
              "pause reuse-sequence-numbers inconsistent-offsets" \
              "partition-majority drop-applied-records divergence" \
              "power-loss ack-before-fsync lost-write"; do
    # shellcheck disable=SC2086
    if must_fail $spec "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); status=1; fi
  done
  echo "jepsen matrix: $passed passed, $failed failed"
  exit "$status"
fi
one "$scenario" "$@"
