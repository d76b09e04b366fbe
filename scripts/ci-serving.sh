#!/usr/bin/env bash
# CI for label `serving` (issue 11): the serving tests under ThreadSanitizer and under
# AddressSanitizer + LeakSanitizer (+ UBSan), with the stress test at a size the
# sanitizers finish in about a minute each on 2 cores (DSI_STRESS_JOBS per thread, 8 threads).
# libgomp is not instrumented, so every OpenMP team is capped at one thread
# (OMP_THREAD_LIMIT=1): its workers would otherwise be reported as races.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

# The API tests (test_serving, test_state) are single-threaded: .ci/run's ASan build runs
# them (label cpu). The threads meet in test_serving_stress, run here under both.
echo "== ThreadSanitizer: test_serving_stress"
# The same build directory and options as scripts/ci-tsan.sh, so the library is built once.
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDSINFER_TSAN=ON -DDSINFER_BUILD_SAMPLES=OFF >/dev/null
cmake --build build-tsan -j "$jobs" --target test_serving_stress
OMP_THREAD_LIMIT=1 TSAN_OPTIONS="halt_on_error=1 abort_on_error=1" DSI_STRESS_JOBS=${DSI_STRESS_JOBS:-25} \
  ctest --test-dir build-tsan -R test_serving_stress --output-on-failure

echo "== AddressSanitizer + LeakSanitizer + UBSan: test_serving_stress"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDSINFER_SANITIZE=ON >/dev/null
cmake --build build-asan -j "$jobs" --target test_serving_stress
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  DSI_STRESS_JOBS=${DSI_STRESS_JOBS:-12} ctest --test-dir build-asan -R test_serving_stress --output-on-failure
