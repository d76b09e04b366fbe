#!/usr/bin/env python3
"""The two ceilings docs/PERF.md compares against, measured on the GPU at hand (PyTorch):
device-to-device copy bandwidth (bytes read + written) and dense matrix rates (bf16, and
FP8 e4m3 through torch._scaled_mm), on random data, median of CUDA-event timings."""
import statistics

import torch

dev = "cuda"


def bench(fn, reps=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times)


print("device:", torch.cuda.get_device_name())
n = 1 << 30
src = torch.randn(n // 4, device=dev)
dst = torch.empty_like(src)
t = bench(lambda: dst.copy_(src))
print(f"copy: {2 * n / t / 1e12:.2f} TB/s (read + write, {n / 1e9:.1f} GB each way)")
m = 8192
x = torch.randn(m, m, device=dev, dtype=torch.bfloat16)
y = torch.randn(m, m, device=dev, dtype=torch.bfloat16)
t = bench(lambda: x @ y)
print(f"bf16 matmul {m}^3: {2 * m ** 3 / t / 1e12:.0f} TFLOP/s")
xf = x.to(torch.float8_e4m3fn)
yf = y.to(torch.float8_e4m3fn).t().contiguous().t()
one = torch.ones((), device=dev)
try:
    t = bench(lambda: torch._scaled_mm(xf, yf, scale_a=one, scale_b=one, out_dtype=torch.bfloat16))
    print(f"fp8 matmul {m}^3 (per-tensor scales): {2 * m ** 3 / t / 1e12:.0f} TFLOP/s")
except Exception as e:  # noqa: BLE001 - report and go on
    print("fp8 matmul: not measured:", e)
