#!/usr/bin/env bash
# Runs one server test file (tests/server/*.mjs) against build/samples/dsinfer serving
# the demo model on loopback:  run.sh BUILD_DIR SOURCE_DIR TEST.mjs
# The pinned npm packages of package-lock.json are installed once into BUILD_DIR
# (npm ci; needs the npm registry), reinstalled when the lock file changes.
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
test_file=$3
command -v node >/dev/null || { echo "run.sh: node is missing (scripts/install_deps.sh installs npm)" >&2; exit 1; }
deps="$build/server-tests"
mkdir -p "$deps"
stamp="$deps/lock.sha256"
want=$(sha256sum "$src/tests/server/package-lock.json" | cut -d' ' -f1)
if [ ! -d "$deps/node_modules" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # Several tests may start at once (ctest -j): one installs, the others wait.
  exec 9>"$deps/install.lock"
  flock 9
  if [ ! -d "$deps/node_modules" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    cp "$src/tests/server/package.json" "$src/tests/server/package-lock.json" "$deps/"
    (cd "$deps" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" > "$stamp"
  fi
  flock -u 9
fi
export DSINFER_BIN="$build/samples/dsinfer"
export DSINFER_MODEL="$src/models/demo"
export DSINFER_NODE_MODULES="$deps/node_modules"
export DSINFER_TEST_OUT="$deps"
exec node "$src/tests/server/$test_file"
