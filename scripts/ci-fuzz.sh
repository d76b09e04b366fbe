#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz with clang (ASan + UBSan) and runs each for
# FUZZ_SECONDS (default 45) over a scratch copy of its seed corpus. Any crash, leak,
# UBSan report, timeout (a hang) or out-of-memory fails the step; libFuzzer leaves the
# input that caused it in $BUILD_DIR/findings.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-fuzz}
FUZZ_SECONDS=${FUZZ_SECONDS:-45}
CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDSINFER_FUZZ=ON \
  -DDSINFER_BUILD_TESTS=OFF -DDSINFER_BUILD_SAMPLES=OFF >/dev/null
targets=()
for src in tests/fuzz/fuzz_*.cpp; do targets+=("$(basename "$src" .cpp)"); done
cmake --build "$BUILD_DIR" -j "$(nproc)" --target "${targets[@]}"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
mkdir -p "$BUILD_DIR/findings"
for t in "${targets[@]}"; do
  work="$BUILD_DIR/corpus/$t"
  rm -rf "$work" && mkdir -p "$work"
  echo "== fuzz $t for ${FUZZ_SECONDS}s"
  # -timeout: one input taking longer is a hang; -rss_limit_mb: runaway memory.
  log="$BUILD_DIR/findings/$t.log"
  status=0
  "$BUILD_DIR/tests/fuzz/$t" "$work" "tests/fuzz/corpus/$t" -max_total_time="$FUZZ_SECONDS" -timeout=10 \
    -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 -artifact_prefix="$BUILD_DIR/findings/$t-" \
    >"$log" 2>&1 || status=$?
  grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb)" "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log" >&2
    echo "fuzz $t failed (exit $status); the input is in $BUILD_DIR/findings" >&2
    exit 1
  fi
done
