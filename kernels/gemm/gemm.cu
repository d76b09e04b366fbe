#include "gemm/gemm.h"

#include "common/device.cuh"

namespace dsi::cuda {
namespace {

constexpr int kBM = 64, kBN = 64, kBK = 32, kThreads = 256;

// Finds the group owning row tile `tile` (group_tiles ascending); -1 past the end.
__device__ int find_group(const int32_t *group_tiles, int groups, int64_t tile) {
    if (tile >= group_tiles[groups]) return -1;
    int lo = 0, hi = groups - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (group_tiles[mid] <= tile) lo = mid; else hi = mid - 1;
    }
    return lo;
}

template <bool kGated>
__global__ void __launch_bounds__(kThreads) gemm_kernel(GemmParams p) {
    __shared__ float xs[kBK][kBM + 4];
    __shared__ float ws[kBK][kBN + 4];
    __shared__ float us[kGated ? kBK : 1][kGated ? kBN + 4 : 1];

    int64_t row0, row_end;
    WeightRef w, wu;
    if (p.group_w) {
        const int g = find_group(p.group_tiles, p.groups, blockIdx.x);
        if (g < 0) return;
        row0 = p.group_rows[g] + (static_cast<int64_t>(blockIdx.x) - p.group_tiles[g]) * kBM;
        row_end = p.group_rows[g + 1];
        w = p.group_w[g];
        if (kGated) wu = p.group_w_up[g];
    } else {
        row0 = static_cast<int64_t>(blockIdx.x) * kBM;
        row_end = p.M;
        w = p.w;
        if (kGated) wu = p.w_up;
    }
    const int64_t col0 = static_cast<int64_t>(blockIdx.y) * kBN;
    const float *x = p.x + blockIdx.z * p.x_batch_stride;
    float *y = p.y + blockIdx.z * p.y_batch_stride;
    const int64_t w_off = p.w_row_offset + blockIdx.z * p.w_row_batch_stride;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    float acc[4][4] = {}, acc_u[kGated ? 4 : 1][kGated ? 4 : 1] = {};

    for (int64_t k0 = 0; k0 < p.K; k0 += kBK) {
        for (int e = threadIdx.x; e < kBM * kBK; e += kThreads) {
            const int r = e / kBK, k = e % kBK;
            const int64_t row = row0 + r, kk = k0 + k;
            float v = 0.0f;
            if (row < row_end && kk < p.K) {
                const int64_t src = p.x_rows ? p.x_rows[row] : row;
                v = x[src * p.ldx + kk];
            }
            xs[k][r] = v;
        }
        for (int e = threadIdx.x; e < kBN * kBK; e += kThreads) {
            const int n = e / kBK, k = e % kBK;
            const int64_t col = col0 + n, kk = k0 + k;
            const bool in = col < p.N && kk < p.K;
            const int64_t wr = p.w_transposed ? w_off + kk : w_off + col, wc = p.w_transposed ? col : kk;
            ws[k][n] = in ? load_weight(w, wr, wc) : 0.0f;
            if (kGated) us[k][n] = in ? load_weight(wu, wr, wc) : 0.0f;
        }
        __syncthreads();
#pragma unroll 8
        for (int k = 0; k < kBK; ++k) {
            float a[4], b[4], u[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                a[i] = xs[k][ty * 4 + i];
                b[i] = ws[k][tx * 4 + i];
                if (kGated) u[i] = us[k][tx * 4 + i];
            }
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
                    if (kGated) acc_u[i][j] = fmaf(a[i], u[j], acc_u[i][j]);
                }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int64_t row = row0 + ty * 4 + i;
        if (row >= row_end) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int64_t col = col0 + tx * 4 + j;
            if (col >= p.N) continue;
            float v = acc[i][j];
            if (kGated) v = v / (1.0f + expf(-v)) * acc_u[i][j];
            y[row * p.ldy + col] = v;
        }
    }
}

// Few rows (decode): one warp per output column, its lanes striding along K, so every
// column's weight row streams once with all warps of the chip busy, instead of a 64-row
// tile looping over K in a handful of blocks. Same products, summed per lane then
// across the warp (float32).
constexpr int kGemvRows = 8, kGemvWarps = 8;

template <bool kGated>
__global__ void __launch_bounds__(kGemvWarps * 32) gemv_kernel(GemmParams p) {
    const int lane = threadIdx.x & 31;
    const int64_t n = static_cast<int64_t>(blockIdx.x) * kGemvWarps + threadIdx.x / 32;
    if (n >= p.N) return;
    const float *x = p.x + blockIdx.y * p.x_batch_stride;
    float *y = p.y + blockIdx.y * p.y_batch_stride;
    const int64_t wr = p.w_row_offset + blockIdx.y * p.w_row_batch_stride + n;
    float acc[kGemvRows] = {}, acc_u[kGated ? kGemvRows : 1] = {};
    for (int64_t k = lane; k < p.K; k += 32) {
        const float w = load_weight(p.w, wr, k);
        const float u = kGated ? load_weight(p.w_up, wr, k) : 0.0f;
#pragma unroll
        for (int m = 0; m < kGemvRows; ++m) {
            if (m >= p.M) break;
            const float xv = x[m * p.ldx + k];
            acc[m] = fmaf(xv, w, acc[m]);
            if (kGated) acc_u[m] = fmaf(xv, u, acc_u[m]);
        }
    }
#pragma unroll
    for (int m = 0; m < kGemvRows; ++m) {
        if (m >= p.M) break;
        float v = warp_sum(acc[m]);
        if (kGated) {
            const float u = warp_sum(acc_u[m]);
            v = v / (1.0f + expf(-v)) * u;
        }
        if (lane == 0) y[m * p.ldy + n] = v;
    }
}

}  // namespace

cudaError_t launch_gemm(const GemmParams &p, cudaStream_t stream) {
    if (!p.group_w && !p.x_rows && !p.w_transposed && p.M > 0 && p.M <= kGemvRows && p.N > 0) {
        const dim3 grid(ceil_div(p.N, kGemvWarps), static_cast<unsigned>(p.batches));
        if (p.gated)
            gemv_kernel<true><<<grid, kGemvWarps * 32, 0, stream>>>(p);
        else
            gemv_kernel<false><<<grid, kGemvWarps * 32, 0, stream>>>(p);
        return cudaGetLastError();
    }
    const int64_t tiles = p.group_w ? p.max_tiles : (p.M + kBM - 1) / kBM;
    if (tiles == 0 || p.N == 0) return cudaSuccess;
    const dim3 grid(static_cast<unsigned>(tiles), ceil_div(p.N, kBN), static_cast<unsigned>(p.batches));
    if (p.gated)
        gemm_kernel<true><<<grid, kThreads, 0, stream>>>(p);
    else
        gemm_kernel<false><<<grid, kThreads, 0, stream>>>(p);
    return cudaGetLastError();
}

}  // namespace dsi::cuda
