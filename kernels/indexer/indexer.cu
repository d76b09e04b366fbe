#include "indexer/indexer.h"

#include "common/device.cuh"

namespace dsi::cuda {
namespace {

constexpr int kKeys = 64, kThreads = 256, kHeadGroups = kThreads / kKeys;

__device__ __forceinline__ float load_key(const IndexerScoreParams &p, int64_t slot, int64_t d) {
    if (p.format == KeyFormat::F32) return static_cast<const float *>(p.keys)[slot * p.dim + d];
    const uint8_t *page = static_cast<const uint8_t *>(p.keys) + (slot / kPageTokens) * kPageTokens * (p.dim + 4);
    const int64_t o = slot % kPageTokens;
    float s;
    memcpy(&s, page + kPageTokens * p.dim + o * 4, 4);
    return fp8_to_float(page[o * p.dim + d]) * s;
}

// Block: 64 keys of one query row. Thread (key j, head group g) sums heads g, g+4, ...
__global__ void __launch_bounds__(kThreads) indexer_scores_kernel(IndexerScoreParams p) {
    extern __shared__ float smem[];
    const int64_t t = blockIdx.x, s0 = static_cast<int64_t>(blockIdx.y) * kKeys;
    const int64_t pos = p.rows.pos[t];
    if (s0 > pos) return;
    const int32_t seq = p.rows.seq[t];
    const int64_t H = p.heads, D = p.dim, kld = D + 1;
    float *qs = smem;                 // [H, D], pre-scaled
    float *ks = qs + H * D;           // [64, D+1]
    float *ws = ks + kKeys * kld;     // [H]
    float *part = ws + H;             // [groups, 64]
    for (int64_t i = threadIdx.x; i < H * D; i += kThreads) qs[i] = p.q[t * H * D + i] * p.scale;
    for (int64_t i = threadIdx.x; i < H; i += kThreads) ws[i] = p.w[t * H + i] * p.weight_scale;
    for (int64_t i = threadIdx.x; i < kKeys * D; i += kThreads) {
        const int64_t j = i / D, d = i % D, s = s0 + j;
        ks[j * kld + d] = s <= pos ? load_key(p, slot_of(p.pages, seq, s), d) : 0.0f;
    }
    __syncthreads();
    const int j = threadIdx.x % kKeys, g = threadIdx.x / kKeys;
    float acc = 0.0f;
    for (int64_t h = g; h < H; h += kHeadGroups) {
        float d = 0.0f;
        for (int64_t i = 0; i < D; ++i) d = fmaf(qs[h * D + i], ks[j * kld + i], d);
        if (d > 0.0f) acc = fmaf(ws[h], d, acc);  // ReLU per head before the weighted sum
    }
    part[g * kKeys + j] = acc;
    __syncthreads();
    if (g == 0 && s0 + j <= pos) {
        float v = part[j];
        for (int k = 1; k < kHeadGroups; ++k) v += part[k * kKeys + j];
        p.scores[t * p.score_stride + s0 + j] = v;
    }
}

__global__ void indexer_gather_kernel(IndexerScoreParams p, const int32_t *slots, float *out) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= p.T * p.dim) return;
    out[i] = load_key(p, slots[i / p.dim], i % p.dim);
}

// One warp per row.
__global__ void indexer_store_kernel(IndexerStoreParams p) {
    const int64_t t = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x & 31;
    if (t >= p.T) return;
    const int64_t slot = p.slots[t];
    if (slot < 0) return;
    const float *k = p.k + t * p.dim;
    if (p.format == KeyFormat::F32) {
        for (int64_t d = lane; d < p.dim; d += 32) static_cast<float *>(p.keys)[slot * p.dim + d] = k[d];
        return;
    }
    float amax = 0.0f;
    for (int64_t d = lane; d < p.dim; d += 32) amax = fmaxf(amax, fabsf(k[d]));
    amax = fmaxf(warp_max(amax), 1e-4f);
    const float s = exp2f(ceilf(log2f(amax / 448.0f)));
    uint8_t *page = static_cast<uint8_t *>(p.keys) + (slot / kPageTokens) * kPageTokens * (p.dim + 4);
    const int64_t o = slot % kPageTokens;
    for (int64_t d = lane; d < p.dim; d += 32) page[o * p.dim + d] = float_to_fp8(k[d] / s);
    if (lane == 0) memcpy(page + kPageTokens * p.dim + o * 4, &s, 4);
}

// One block per vector, dim threads: log2(dim) butterfly stages in shared memory.
__global__ void hadamard_kernel(float *x, int64_t dim) {
    extern __shared__ float v[];
    float *row = x + blockIdx.x * dim;
    const int i = threadIdx.x;
    v[i] = row[i];
    __syncthreads();
    for (int h = 1; h < dim; h <<= 1) {
        float a = 0.0f;
        const bool lo = (i & h) == 0;
        a = lo ? v[i] + v[i + h] : v[i - h] - v[i];
        __syncthreads();
        v[i] = a;
        __syncthreads();
    }
    row[i] = v[i] * rsqrtf(static_cast<float>(dim));
}

}  // namespace

cudaError_t launch_indexer_scores(const IndexerScoreParams &p, cudaStream_t stream) {
    if (p.T == 0 || p.max_len == 0) return cudaSuccess;
    const size_t smem = sizeof(float) * (p.heads * p.dim + kKeys * (p.dim + 1) + p.heads + kHeadGroups * kKeys);
    cudaError_t e = cudaFuncSetAttribute(indexer_scores_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
    if (e != cudaSuccess) return e;
    const dim3 grid(static_cast<unsigned>(p.T), ceil_div(p.max_len, kKeys));
    indexer_scores_kernel<<<grid, kThreads, smem, stream>>>(p);
    return cudaGetLastError();
}

cudaError_t launch_indexer_store(const IndexerStoreParams &p, cudaStream_t stream) {
    if (p.T == 0) return cudaSuccess;
    indexer_store_kernel<<<ceil_div(p.T * 32, 256), 256, 0, stream>>>(p);
    return cudaGetLastError();
}

cudaError_t launch_indexer_gather(const void *keys, KeyFormat format, const int32_t *slots, int64_t T, int64_t dim,
                                  float *out, cudaStream_t stream) {
    if (T * dim == 0) return cudaSuccess;
    IndexerScoreParams p;
    p.keys = keys; p.format = format; p.T = T; p.dim = dim;
    indexer_gather_kernel<<<ceil_div(T * dim, 256), 256, 0, stream>>>(p, slots, out);
    return cudaGetLastError();
}

cudaError_t launch_hadamard(float *x, int64_t rows, int64_t dim, cudaStream_t stream) {
    if (rows == 0) return cudaSuccess;
    if (dim > 1024 || (dim & (dim - 1)) != 0) return cudaErrorInvalidValue;
    hadamard_kernel<<<static_cast<unsigned>(rows), static_cast<unsigned>(dim), dim * sizeof(float), stream>>>(x, dim);
    return cudaGetLastError();
}

}  // namespace dsi::cuda
