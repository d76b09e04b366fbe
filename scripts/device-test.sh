#!/usr/bin/env bash
# Builds and runs everything GPU-side on a machine with an NVIDIA GPU (Hopper: sm_90a):
# the op harness (test_cuda_ops), the golden / refdims / sweep references through the
# CUDA backend (f32 held to the CPU tolerances; fast measured by test_cuda_fast), the
# serving stress test on CUDA, the torch emulation of fast's FP8 GEMM, compute-sanitizer
# memcheck + racecheck, benchmarks.
#   bash scripts/device-test.sh [STEP...]
#   STEP: info build ops refs cli fast stress emulate sanitize bench (default: all)
# Environment: RACECHECK_CASES (doctest -tc filter), SKIP_CEILINGS, BUILD_DIR (default build-cuda), LOG_DIR (default $BUILD_DIR/logs; the lent
# device writes to $OUT), DEPS_PREFIX (a prefix holding doctest / nlohmann-json / PCRE2
# when they are not installed system-wide), JOBS.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-cuda}
# On the lent device ($OUT set) the logs are packed into one archive under $OUT at the end.
LOG_DIR=${LOG_DIR:-${OUT:+/tmp/device-test-logs}}
LOG_DIR=${LOG_DIR:-$BUILD_DIR/logs}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$LOG_DIR"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(info build ops refs cli fast stress emulate sanitize bench)
status=0
run() {  # run NAME CMD...: logs to $LOG_DIR/NAME.log, records failure, continues
    local name=$1; shift
    echo "== $name: $*"
    local t0=$SECONDS
    "$@" >"$LOG_DIR/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$LOG_DIR/$name.log"
    echo "== $name: rc=$rc ($((SECONDS - t0)) s)"
    [ $rc -ne 0 ] && status=1
    return $rc
}
cmake_args=()
if [ -n "${DEPS_PREFIX:-}" ]; then
    cmake_args+=(-DCMAKE_PREFIX_PATH="$DEPS_PREFIX/usr")
    export PKG_CONFIG_PATH="$DEPS_PREFIX/usr/lib/x86_64-linux-gnu/pkgconfig:${PKG_CONFIG_PATH:-}"
    export LD_LIBRARY_PATH="$DEPS_PREFIX/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
fi
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
for step in "${steps[@]}"; do
    case $step in
    info)
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
        command -v compute-sanitizer || echo "compute-sanitizer: not found"
        ;;
    build)
        run configure cmake -S . -B "$BUILD_DIR" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DDSINFER_CUDA=ON \
            -DDSINFER_BUILD_SAMPLES=ON "${cmake_args[@]}"
        run build cmake --build "$BUILD_DIR" -j "$JOBS" --target ${BUILD_TARGETS:-all}
        ;;
    ops)
        run ops "$BUILD_DIR/test_cuda_ops"
        # Device selection (the last visible GPU, driven from a second thread) and one decode
        # step captured into a CUDA graph (no host sync; launch counts). DSI_BENCH_CKPT adds
        # the released dims (the bench step makes that checkpoint).
        run session "$BUILD_DIR/test_cuda_session"
        ;;
    refs)
        # The CPU engine's references through the CUDA backend's f32 precision, held to the
        # CPU tolerances (tests/reference_check.h).
        for t in test_golden test_refdims test_sweep; do
            DSI_TEST_BACKEND=cuda run "refs_$t" "$BUILD_DIR/tests/$t"
        done
        ;;
    cli)
        # `dsinfer generate --backend cuda` reproduces the golden greedy ids (both cases, both
        # checkpoints) in the f32 precision.
        for model in tiny-bf16 tiny-fp8; do
            for cs in case0 case1; do
                read -r prompt want < <(python3 - "$cs" <<'PY'
import sys
from safetensors.numpy import load_file
t = load_file("tests/data/golden/tiny-golden.safetensors")
c = sys.argv[1]
print(",".join(map(str, t[c + ".input_ids"].tolist())), " ".join(map(str, t[c + ".greedy_ids"].tolist())))
PY
)
                n=$(wc -w <<<"$want")
                got=$("$BUILD_DIR/samples/dsinfer" generate --model "tests/data/golden/$model" --backend cuda \
                      --gpu-precision f32 --greedy --ids "$prompt" --max-tokens "$n" 2>"$LOG_DIR/cli_${model}_${cs}.err" | tr ',' ' ' | xargs)
                if [ "$got" = "$(xargs <<<"$want")" ]; then verdict="greedy ids match ($n)"
                else verdict="MISMATCH got [$got] want [$want]"; status=1; fi
                echo "cli $model $cs: $verdict" | tee -a "$LOG_DIR/cli.log"
            done
        done
        ;;
    fast)
        # The fast precision against f32 on every reference case and the demo model
        # (stated tolerances inside); the FP8 layer-0 output of tiny-fp8 case0 is kept for
        # the emulate step.
        mkdir -p "$LOG_DIR/dump"
        DSI_FAST_DUMP="$LOG_DIR/dump" run fast "$BUILD_DIR/test_cuda_fast"
        ;;
    stress)
        # The batched serving stress test (8 threads x 50 contexts on one session) on the
        # CUDA backend, both precisions (what "equal" means there: its header).
        for p in f32 fast; do
            DSI_TEST_BACKEND=cuda DSI_TEST_PRECISION=$p run "stress_$p" "$BUILD_DIR/tests/test_serving_stress"
        done
        ;;
    emulate)
        # fast's FP8 GEMM on tiny-fp8 case0 re-done in torch float64, and every FP8 GEMM of
        # the demo model emulated in torch (docs/ACCURACY.md).
        run emulate python3 scripts/emulate_fast_fp8.py --data tests/data --dump "$LOG_DIR/dump" --demo
        ;;
    sanitize)
        command -v compute-sanitizer >/dev/null || { echo "compute-sanitizer not found"; status=1; continue; }
        # SANITIZE_TIMEOUT (s) bounds each instrumented run (default 900).
        cs=(timeout "${SANITIZE_TIMEOUT:-900}" compute-sanitizer --error-exitcode=1 --print-limit=20)
        # The harness without its largest shapes (DSI_TEST_SMALL): instrumented kernels are slow.
        DSI_TEST_SMALL=1 run memcheck_ops "${cs[@]}" --tool memcheck "$BUILD_DIR/test_cuda_ops"
        DSI_TEST_SMALL=1 run racecheck_ops "${cs[@]}" --tool racecheck "$BUILD_DIR/test_cuda_ops" \
            -tc="${RACECHECK_CASES:-top-k*,sparse and dense MLA*,indexer scores*,moe*}"
        DSI_TEST_BACKEND=cuda run memcheck_golden "${cs[@]}" --tool memcheck "$BUILD_DIR/tests/test_golden" \
            -tc='golden prefill*'
        ;;
    bench)
        [ -z "${SKIP_CEILINGS:-}" ] && run ceilings python3 scripts/bench_ceilings.py
        # The demo model (512 positions at most): CPU on all cores vs CUDA, both precisions;
        # one sequence (prefill 448, 64 decode steps) and 16 through dsi_session_eval_batch
        # (prefill 16 x 256 = 4096 tokens in one batch, 64 decode steps of 16 tokens).
        for e in "$(nproc) cpu f32" "1 cuda f32" "1 cuda fast"; do
            read -r threads backend precision <<<"$e"
            run "bench_demo_${backend}_${precision}_1" "$BUILD_DIR/samples/bench_engine" models/demo \
                "$threads" 448 64 "$backend" "$precision" 1
            run "bench_demo_${backend}_${precision}_16" "$BUILD_DIR/samples/bench_engine" models/demo \
                "$threads" 256 64 "$backend" "$precision" 16
        done
        # 1 dense + 1 MoE layer at the released dims, random FP8 weights: prefill 4096
        # tokens, then 16 decode steps at 4K context.
        BENCH_CKPT=${BENCH_CKPT:-/tmp/dsinfer-bench-2layer}
        [ -f "$BENCH_CKPT/model.safetensors" ] || run make_bench_ckpt python3 scripts/make_bench_checkpoint.py "$BENCH_CKPT"
        for p in fast f32; do
            run "bench_layers_$p" "$BUILD_DIR/samples/bench_engine" "$BENCH_CKPT" 1 4096 16 cuda $p
        done
        run bench_mla "$BUILD_DIR/bench_mla"
        DSI_BENCH_CKPT=$BENCH_CKPT run session_real_dims "$BUILD_DIR/test_cuda_session" -tc='one decode step*'
        ;;
    *) echo "unknown step $step"; status=1 ;;
    esac
done
# A short summary of every log: the op harness's error table, the reference and fast
# precision lines, the benchmark rows.
echo "== summary (logs: $LOG_DIR)"
for f in "$LOG_DIR"/*.log; do
    [ -f "$f" ] || continue
    grep -h -E "^cli |\[test_cuda_session\] |worst normalised|^  [a-z].*\(|test_cuda_fast\] |max\|diff\||greedy|^\||ERROR SUMMARY|RACECHECK SUMMARY|Status:|declines|TB/s|TFLOP|^emulated|CUDA fast vs|^demo text|cuda (f32|fast):" "$f" \
        | grep -v "layer [0-9] top-k" | sed "s|^|$(basename "$f" .log): |" | cut -c1-220
done
if [ -n "${OUT:-}" ]; then tar -czf "$OUT/device-test-logs.tar.gz" -C "$LOG_DIR" .; fi
exit $status
