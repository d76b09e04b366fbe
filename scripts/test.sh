#!/usr/bin/env bash
# The test command of README.md: installs what is missing, builds, fetches the
# DeepSeek-V3 tokenizer.json for the tokenizer tests, and runs every CTest test that
# needs no GPU (label gpu is for machines with one: ctest -L gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
BUILD_DIR=${BUILD_DIR:-build}
BUILD_DIR=$BUILD_DIR bash scripts/build.sh "$@"
bash scripts/fetch_tokenizer.sh "$BUILD_DIR/data"
ctest --test-dir "$BUILD_DIR" -LE gpu --output-on-failure -j "$(nproc)"
