#!/usr/bin/env bash
# The demo command of README.md: installs what is missing, builds, and streams a
# Python completion from the bundled demo model (models/demo) on the CPU engine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
PROMPT=${1:-'def fibonacci(n):'}
echo "$ build/samples/dsinfer generate --model models/demo --prompt '$PROMPT' --max-tokens 96" >&2
printf '%s' "$PROMPT"
build/samples/dsinfer generate --model models/demo --prompt "$PROMPT" --max-tokens 96 --temp 0.6 --top-k 20 --seed 1
echo
