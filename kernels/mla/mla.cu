#include "mla/mla.h"

#include "common/device.cuh"

#include <cuda_bf16.h>

namespace dsi::cuda {
namespace {

constexpr int kHeads = 8, kKeys = 32, kThreads = 256, kMaxRank = 512;

template <class T>
__device__ __forceinline__ float to_f32(T v);
template <>
__device__ __forceinline__ float to_f32(float v) { return v; }
template <>
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T>
__global__ void __launch_bounds__(kThreads) mla_kernel(MlaParams p) {
    extern __shared__ float smem[];
    const int64_t t = blockIdx.x, h0 = static_cast<int64_t>(blockIdx.y) * kHeads;
    const int64_t R = p.rank, W = p.rank + p.rope_dim, kld = W + 1;
    float *qs = smem;                   // [kHeads, W]
    float *ks = qs + kHeads * W;        // [kKeys, W + 1]
    float *probs = ks + kKeys * kld;    // [kHeads, kKeys]
    float *corr = probs + kHeads * kKeys;  // [kHeads]
    __shared__ int64_t slots[kKeys];
    const int nh = p.heads - h0 < kHeads ? static_cast<int>(p.heads - h0) : kHeads;

    for (int64_t i = threadIdx.x; i < kHeads * W; i += kThreads) {
        const int64_t h = i / W, d = i % W;
        float v = 0.0f;
        if (h < nh)
            v = d < R ? p.q_latent[(t * p.heads + h0 + h) * R + d]
                      : p.q_rope[(t * p.heads + h0 + h) * p.rope_dim + (d - R)];
        qs[i] = v;
    }
    const int64_t pos = p.rows.pos[t];
    const int32_t seq = p.rows.seq[t];
    const int64_t n = p.select ? p.select_stride : pos + 1;
    const T *cache = static_cast<const T *>(p.cache);

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;  // warp = head in the softmax
    float m = -INFINITY, l = 0.0f;                                // running max/sum of head `warp`
    float acc[kHeads][kMaxRank / kThreads] = {};

    for (int64_t j0 = 0; j0 < n; j0 += kKeys) {
        __syncthreads();
        if (threadIdx.x < kKeys) {
            const int64_t j = j0 + threadIdx.x;
            int64_t slot = -1;
            if (j < n) slot = p.select ? p.select[t * p.select_stride + j] : slot_of(p.pages, seq, j);
            slots[threadIdx.x] = slot;
        }
        __syncthreads();
        for (int64_t i = threadIdx.x; i < kKeys * W; i += kThreads) {
            const int64_t j = i / W, d = i % W, slot = slots[j];
            ks[j * kld + d] = slot >= 0 ? to_f32(cache[slot * W + d]) : 0.0f;
        }
        __syncthreads();
        // Scores: warp = head, lane = key.
        float sc = -INFINITY;
        if (warp < nh && slots[lane] >= 0) {
            float d = 0.0f;
            for (int64_t i = 0; i < W; ++i) d = fmaf(qs[warp * W + i], ks[lane * kld + i], d);
            sc = d * p.scale;
        }
        const float m_new = fmaxf(m, warp_max(sc));
        const float pr = m_new == -INFINITY ? 0.0f : expf(sc - m_new);
        const float c = m_new == -INFINITY ? 1.0f : expf(m - m_new);
        l = l * c + warp_sum(pr);
        m = m_new;
        probs[warp * kKeys + lane] = pr;
        if (lane == 0) corr[warp] = c;
        __syncthreads();
#pragma unroll
        for (int h = 0; h < kHeads; ++h) {
            const float ch = corr[h];
#pragma unroll
            for (int i = 0; i < kMaxRank / kThreads; ++i) {
                const int64_t col = threadIdx.x + i * kThreads;
                if (col >= R) continue;
                float a = acc[h][i] * ch;
                for (int j = 0; j < kKeys; ++j) a = fmaf(probs[h * kKeys + j], ks[j * kld + col], a);
                acc[h][i] = a;
            }
        }
    }
    __syncthreads();
    if (lane == 0) corr[warp] = l > 0.0f ? 1.0f / l : 0.0f;
    __syncthreads();
#pragma unroll
    for (int h = 0; h < kHeads; ++h) {
        if (h >= nh) continue;
#pragma unroll
        for (int i = 0; i < kMaxRank / kThreads; ++i) {
            const int64_t col = threadIdx.x + i * kThreads;
            if (col < R) p.out[(t * p.heads + h0 + h) * R + col] = acc[h][i] * corr[h];
        }
    }
}

template <class T>
__global__ void mla_store_kernel(MlaStoreParams p) {
    const int64_t W = p.rank + p.rope_dim;
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= p.T * W) return;
    const int64_t t = i / W, d = i % W;
    const int64_t slot = p.slots[t];
    if (slot < 0) return;
    const float v = d < p.rank ? p.latent[t * p.latent_stride + d] : p.k_rope[t * p.k_rope_stride + d - p.rank];
    if constexpr (sizeof(T) == 4)
        static_cast<float *>(p.cache)[slot * W + d] = v;
    else
        static_cast<__nv_bfloat16 *>(p.cache)[slot * W + d] = __float2bfloat16(v);
}

template <class T>
__global__ void mla_gather_kernel(MlaGatherParams p) {
    const int64_t W = p.rank + p.rope_dim;
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= p.T * W) return;
    const int64_t t = i / W, d = i % W;
    const float v = to_f32(static_cast<const T *>(p.cache)[static_cast<int64_t>(p.slots[t]) * W + d]);
    if (d < p.rank) p.latent[t * p.rank + d] = v;
    else p.k_rope[t * p.rope_dim + d - p.rank] = v;
}

template <class T>
cudaError_t launch_mla_t(const MlaParams &p, cudaStream_t stream) {
    const int64_t W = p.rank + p.rope_dim;
    const size_t smem = sizeof(float) * (kHeads * W + kKeys * (W + 1) + kHeads * kKeys + kHeads);
    cudaError_t e = cudaFuncSetAttribute(mla_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
    if (e != cudaSuccess) return e;
    const dim3 grid(static_cast<unsigned>(p.T), ceil_div(p.heads, kHeads));
    mla_kernel<T><<<grid, kThreads, smem, stream>>>(p);
    return cudaGetLastError();
}

}  // namespace

cudaError_t launch_mla(const MlaParams &p, cudaStream_t stream) {
    if (p.T == 0 || p.heads == 0) return cudaSuccess;
    if (p.rank > kMaxRank) return cudaErrorInvalidValue;
    return p.cache_bf16 ? launch_mla_t<__nv_bfloat16>(p, stream) : launch_mla_t<float>(p, stream);
}

cudaError_t launch_mla_store(const MlaStoreParams &p, cudaStream_t stream) {
    const int64_t n = p.T * (p.rank + p.rope_dim);
    if (n == 0) return cudaSuccess;
    if (p.cache_bf16)
        mla_store_kernel<__nv_bfloat16><<<ceil_div(n, 256), 256, 0, stream>>>(p);
    else
        mla_store_kernel<float><<<ceil_div(n, 256), 256, 0, stream>>>(p);
    return cudaGetLastError();
}

cudaError_t launch_mla_gather(const MlaGatherParams &p, cudaStream_t stream) {
    const int64_t n = p.T * (p.rank + p.rope_dim);
    if (n == 0) return cudaSuccess;
    if (p.cache_bf16)
        mla_gather_kernel<__nv_bfloat16><<<ceil_div(n, 256), 256, 0, stream>>>(p);
    else
        mla_gather_kernel<float><<<ceil_div(n, 256), 256, 0, stream>>>(p);
    return cudaGetLastError();
}

}  // namespace dsi::cuda
