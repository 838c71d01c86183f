#!/usr/bin/env bash
# Fault-injection runs against a fresh local cluster (debug build, the same build as the tests).
#   jepsen/run.sh SCENARIO [--nodes N] [--time-limit SECS] [...]   one run (none|kill|leader-kill|pause)
#   jepsen/run.sh ci                                               the CI matrix (+ a bug run that must fail)
#   ... --bug drop-applied-records                                 switch on a deliberate server bug
# Each run writes jepsen/runs/<time>-<scenario>/ (history.jsonl, verdict.json, node configs and
# logs; node data only with JEPSEN_KEEP_DATA=1) and exits 0 only when every safety invariant holds.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo test --locked --workspace --no-run >/dev/null 2>&1 || cargo test --locked --workspace --no-run
BIN="$CARGO_TARGET_DIR/debug"
scenario="${1:?usage: jepsen/run.sh SCENARIO|ci [--nodes N] [--time-limit SECS]}"
shift

one() {
  local s="$1"; shift
  local dir="jepsen/runs/$(date -u +%Y%m%dT%H%M%SZ)-$s"
  echo "==> $s ($dir)"
  local rc=0
  "$BIN/runnel-jepsen" run "$s" --bin "$BIN/runnel" --dir "$dir" "$@" || rc=$?
  # Keep the history, verdict, configs and logs; drop the nodes' data (~200 MB a run) unless
  # JEPSEN_KEEP_DATA=1.
  if [ -z "${JEPSEN_KEEP_DATA:-}" ]; then
    find "$dir" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
  fi
  return "$rc"
}

if [ "$scenario" = ci ]; then
  status=0
  for s in leader-kill pause kill; do
    one "$s" --time-limit 30 "$@" || status=1
  done
  # The harness must be able to fail: with a deliberate bug the run must report the anomaly.
  set +e
  out="$(one none --time-limit 20 --bug drop-applied-records "$@")"
  rc=$?
  set -e
  echo "$out"
  if [ "$rc" = 1 ] && grep -q '"divergence"' <<<"$out"; then
    echo "==> bug run failed as it must (divergence found)"
  else
    echo "==> bug run did NOT report divergence (exit $rc)"; status=1
  fi
  exit "$status"
fi
one "$scenario" "$@"
