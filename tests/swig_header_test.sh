#!/usr/bin/env bash
# SWIG reads include/dsinfer.h as it is (the bindings wrap it without a hand-edited copy):
# every function of the header must come out as a wrapper.
set -euo pipefail
SRC=$1
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
swig -java -module dsinfer -outdir "$TMP" -o "$TMP/wrap.c" "$SRC/include/dsinfer.h"
declared=$(grep -oE '^DSI_API [^(]*\b(dsi_[a-z0-9_]+)\(' "$SRC/include/dsinfer.h" | grep -oE 'dsi_[a-z0-9_]+\($' | tr -d '(' | sort -u)
missing=0
for fn in $declared; do
  grep -q "$fn(" "$TMP/wrap.c" || { echo "no wrapper calls $fn"; missing=1; }
done
[ "$missing" -eq 0 ]
echo "swig wraps $(echo "$declared" | wc -l) functions"
