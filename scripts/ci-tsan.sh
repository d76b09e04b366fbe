#!/usr/bin/env bash
# ThreadSanitizer: builds only tests/test_threads.cpp and the library with
# -fsanitize=thread and runs it: many threads, each with its own context on one session
# and one OpenMP thread per context (libgomp is not instrumented, so OpenMP worker
# threads would give false reports), must match a sequential run with no race reported.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-tsan}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDSINFER_TSAN=ON -DDSINFER_BUILD_SAMPLES=OFF >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" --target test_threads
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" OMP_NUM_THREADS=1 "$BUILD_DIR/tests/test_threads"
