# Sourced by the other scripts: installs what the build needs and points cargo at a target
# directory outside the clone (shared by every build on this machine, CI included).
set -euo pipefail

if ! dpkg -s libclang-dev >/dev/null 2>&1; then
  echo "==> installing libclang-dev (needed to build RocksDB's bindings)" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends libclang-dev >/dev/null
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/runnel/target}"
mkdir -p "$CARGO_TARGET_DIR"
