// Device helpers shared by the kernel families: dtype conversion and reductions.
#pragma once

#include "common/weights.h"

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace dsi::cuda {

__device__ __forceinline__ float fp8_to_float(uint8_t v) {
    __nv_fp8_e4m3 f;
    f.__x = v;
    return static_cast<float>(f);
}

__device__ __forceinline__ uint8_t float_to_fp8(float v) {
    return __nv_fp8_e4m3(v).__x;  // saturating round-to-nearest
}

// Element (r, c) of a weight matrix as float32 (dequantised with its block scale).
__device__ __forceinline__ float load_weight(const WeightRef &w, int64_t r, int64_t c) {
    switch (w.type) {
    case WeightType::F32: return static_cast<const float *>(w.data)[r * w.cols + c];
    case WeightType::BF16:
        return __bfloat162float(static_cast<const __nv_bfloat16 *>(w.data)[r * w.cols + c]);
    default:
        return fp8_to_float(static_cast<const uint8_t *>(w.data)[r * w.cols + c]) *
               w.scale[(r / kFp8Block) * w.scale_stride + c / kFp8Block];
    }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block; every thread gets the result. `shared` holds 32 floats.
__device__ __forceinline__ float block_sum(float v, float *shared) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < warps ? shared[lane] : 0.0f;
    return warp_sum(v);
}

inline unsigned ceil_div(int64_t a, int64_t b) { return static_cast<unsigned>((a + b - 1) / b); }

}  // namespace dsi::cuda
