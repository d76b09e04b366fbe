#include "norm_rope/norm_rope.h"

#include "common/device.cuh"

namespace dsi::cuda {
namespace {

constexpr int kNormThreads = 256;

__global__ void __launch_bounds__(kNormThreads) norm_kernel(NormParams p) {
    __shared__ float red[32];
    const float *x = p.x + blockIdx.x * p.ldx;
    float *y = p.y + blockIdx.x * p.ldy;
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < p.dim; i += blockDim.x) s += p.layer_norm ? x[i] : x[i] * x[i];
    s = block_sum(s, red);
    if (!p.layer_norm) {
        const float inv = rsqrtf(s / static_cast<float>(p.dim) + p.eps);
        for (int64_t i = threadIdx.x; i < p.dim; i += blockDim.x) y[i] = x[i] * inv * p.w[i];
        return;
    }
    const float mean = s / static_cast<float>(p.dim);
    float v = 0.0f;
    for (int64_t i = threadIdx.x; i < p.dim; i += blockDim.x) v += (x[i] - mean) * (x[i] - mean);
    v = block_sum(v, red);
    const float inv = rsqrtf(v / static_cast<float>(p.dim) + p.eps);
    for (int64_t i = threadIdx.x; i < p.dim; i += blockDim.x) y[i] = (x[i] - mean) * inv * p.w[i] + p.b[i];
}

// One thread per rotated pair.
__global__ void rope_kernel(RopeParams p) {
    const int64_t half = p.rope_dim / 2;
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= p.rows * p.heads * half) return;
    const int64_t k = i % half, h = (i / half) % p.heads, r = i / (half * p.heads);
    float *x = p.x + r * p.row_stride + h * p.head_stride + p.offset;
    const int64_t pos = p.positions[r];
    const float c = p.cos[pos * half + k], s = p.sin[pos * half + k];
    const int64_t ia = p.interleaved ? 2 * k : k, ib = p.interleaved ? 2 * k + 1 : k + half;
    const float a = x[ia], b = x[ib];
    x[ia] = a * c - b * s;
    x[ib] = b * c + a * s;
}

__global__ void embed_kernel(WeightRef table, const int32_t *ids, int64_t n, float *out) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n * table.cols) return;
    const int64_t t = i / table.cols, c = i % table.cols;
    out[i] = load_weight(table, ids[t], c);
}

__global__ void add_kernel(float *y, const float *x, int64_t n) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) y[i] += x[i];
}

__global__ void silu_mul_kernel(float *g, const float *u, int64_t n) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

__global__ void gather_rows_kernel(const float *src, const int32_t *index, int64_t n, int64_t cols, float *dst) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n * cols) return;
    dst[i] = src[static_cast<int64_t>(index[i / cols]) * cols + i % cols];
}

}  // namespace

cudaError_t launch_silu_mul(float *gate, const float *up, int64_t n, cudaStream_t stream) {
    if (n == 0) return cudaSuccess;
    silu_mul_kernel<<<ceil_div(n, 256), 256, 0, stream>>>(gate, up, n);
    return cudaGetLastError();
}

cudaError_t launch_gather_rows(const float *src, const int32_t *index, int64_t n, int64_t cols, float *dst,
                               cudaStream_t stream) {
    if (n * cols == 0) return cudaSuccess;
    gather_rows_kernel<<<ceil_div(n * cols, 256), 256, 0, stream>>>(src, index, n, cols, dst);
    return cudaGetLastError();
}

cudaError_t launch_norm(const NormParams &p, cudaStream_t stream) {
    if (p.rows == 0) return cudaSuccess;
    norm_kernel<<<static_cast<unsigned>(p.rows), kNormThreads, 0, stream>>>(p);
    return cudaGetLastError();
}

cudaError_t launch_rope(const RopeParams &p, cudaStream_t stream) {
    const int64_t n = p.rows * p.heads * (p.rope_dim / 2);
    if (n == 0) return cudaSuccess;
    rope_kernel<<<ceil_div(n, 256), 256, 0, stream>>>(p);
    return cudaGetLastError();
}

cudaError_t launch_embed(const WeightRef &table, const int32_t *ids, int64_t n, float *out, cudaStream_t stream) {
    const int64_t total = n * table.cols;
    if (total == 0) return cudaSuccess;
    embed_kernel<<<ceil_div(total, 256), 256, 0, stream>>>(table, ids, n, out);
    return cudaGetLastError();
}

cudaError_t launch_add(float *y, const float *x, int64_t n, cudaStream_t stream) {
    if (n == 0) return cudaSuccess;
    add_kernel<<<ceil_div(n, 256), 256, 0, stream>>>(y, x, n);
    return cudaGetLastError();
}

}  // namespace dsi::cuda
