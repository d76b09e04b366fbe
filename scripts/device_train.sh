#!/usr/bin/env bash
# Runs scripts/train_demo_model.py on a GPU machine, writing everything to $OUT
# (model files, tokenizer.json, reference.json, metrics.json, log.txt).
# Usage: OUT=/some/dir scripts/device_train.sh [train_demo_model.py options]
set -euo pipefail
: "${OUT:?set OUT to the output directory}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
PYTHONUNBUFFERED=1 python3 scripts/train_demo_model.py --out "$OUT" "$@" 2>&1 | tee "$OUT/log.txt"
