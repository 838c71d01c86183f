#!/usr/bin/env bash
# Runs N Runnel nodes on loopback. Node i: gRPC 127.0.0.1:(4600+i), HTTP 127.0.0.1:(4566+i).
#   cluster/local-cluster.sh start N   start the nodes that are not running (idempotent: restarts a
#                                      killed node with its data)
#   cluster/local-cluster.sh stop      stop the nodes this script started
#   cluster/local-cluster.sh status    show which nodes run and the cluster status
# Data, configs, logs and pids live under $RUNNEL_CLUSTER_DIR (default ./runnel-cluster).
# RUNNEL_BIN picks the binary; RUNNEL_NODE_EXTRA_TOML is appended to every node's config.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${RUNNEL_CLUSTER_DIR:-$PWD/runnel-cluster}"
cmd="${1:-}"

bin() {
  source scripts/env.sh
  if [ -n "${RUNNEL_BIN:-}" ]; then echo "$RUNNEL_BIN"; return; fi
  # The same build as the test suite (same feature set, so RocksDB is compiled once for both).
  cargo test --locked --workspace --no-run >&2 2>/dev/null || cargo test --locked --workspace --no-run >&2
  echo "$CARGO_TARGET_DIR/debug/runnel"
}

running() {
  [ -f "$DIR/node$1.pid" ] || return 1
  local pid; pid="$(cat "$DIR/node$1.pid")"
  kill -0 "$pid" 2>/dev/null || return 1
  # A killed process can linger as a zombie for a moment; it is not running.
  ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}

case "$cmd" in
  start)
    n="${2:?usage: local-cluster.sh start N}"
    [ -f "$DIR/size" ] && [ "$(cat "$DIR/size")" != "$n" ] && { echo "cluster in $DIR has $(cat "$DIR/size") nodes; stop it and remove $DIR first" >&2; exit 1; }
    mkdir -p "$DIR"; echo "$n" > "$DIR/size"
    exe="$(bin)"
    peers=""
    for i in $(seq 1 "$n"); do peers+="{ id = $i, addr = \"127.0.0.1:$((4600 + i))\" }, "; done
    for i in $(seq 1 "$n"); do
      if running "$i"; then echo "node $i already running (pid $(cat "$DIR/node$i.pid"))"; continue; fi
      cat > "$DIR/node$i.toml" <<TOML
node_id = $i
data_dir = "$DIR/node$i"
grpc_listen = "127.0.0.1:$((4600 + i))"
http_listen = "127.0.0.1:$((4566 + i))"
peers = [ ${peers%, } ]
${RUNNEL_NODE_EXTRA_TOML:-}
TOML
      nohup "$exe" serve --config "$DIR/node$i.toml" >> "$DIR/node$i.log" 2>&1 &
      echo $! > "$DIR/node$i.pid"
      echo "node $i started (pid $!): gRPC 127.0.0.1:$((4600 + i)) HTTP 127.0.0.1:$((4566 + i))"
    done
    echo "data, configs and logs in $DIR"
    ;;
  stop)
    # Ask every node to stop, then wait until each has exited (a node closing RocksDB still
    # writes files: removing the data directory before it is gone fails). SIGKILL after 10 s.
    pids=()
    for f in "$DIR"/node*.pid; do
      [ -e "$f" ] || continue
      pid="$(cat "$f")"
      if kill -0 "$pid" 2>/dev/null; then kill "$pid"; pids+=("$pid"); fi
      rm -f "$f"
    done
    for pid in "${pids[@]}"; do
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
      echo "stopped pid $pid"
    done
    ;;
  status)
    n="$(cat "$DIR/size" 2>/dev/null || echo 0)"
    for i in $(seq 1 "$n"); do
      if running "$i"; then echo "node $i running (pid $(cat "$DIR/node$i.pid"))"; else echo "node $i stopped"; fi
    done
    for i in $(seq 1 "$n"); do
      if running "$i"; then "$(bin)" --endpoint "http://127.0.0.1:$((4600 + i))" cluster status && break; fi
    done
    ;;
  *) echo "usage: $0 start N | stop | status" >&2; exit 2 ;;
esac
