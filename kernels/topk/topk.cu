#include "topk/topk.h"

#include <cub/block/block_scan.cuh>

namespace dsi::cuda {
namespace {

constexpr int kThreads = 512;

// Larger float -> larger unsigned key.
__device__ __forceinline__ uint32_t order_key(float f) {
    const uint32_t b = __float_as_uint(f);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__global__ void __launch_bounds__(kThreads) topk_kernel(TopkParams p) {
    using Scan = cub::BlockScan<unsigned long long, kThreads>;
    __shared__ typename Scan::TempStorage scan_tmp;
    __shared__ uint32_t hist[256];
    __shared__ uint32_t s_prefix, s_remaining;

    const int64_t t = blockIdx.x;
    const int64_t n = static_cast<int64_t>(p.rows.pos[t]) + 1;
    const float *row = p.scores + t * p.score_stride;
    int32_t *out = p.select + t * p.k;
    int32_t *out_slots = p.select_slots ? p.select_slots + t * p.k : nullptr;
    const int32_t seq = out_slots ? p.rows.seq[t] : 0;
    auto put = [&](int64_t at, int64_t pos) {
        out[at] = static_cast<int32_t>(pos);
        if (out_slots) out_slots[at] = pos < 0 ? -1 : static_cast<int32_t>(slot_of(p.pages, seq, pos));
    };
    if (n <= p.k) {
        for (int64_t i = threadIdx.x; i < p.k; i += kThreads) put(i, i < n ? i : -1);
        return;
    }
    // Radix select: after the passes, `prefix` is the k-th largest key and `remaining`
    // the number of keys equal to it that belong to the top k.
    uint32_t prefix = 0, mask = 0, remaining = static_cast<uint32_t>(p.k);
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += kThreads) hist[i] = 0;
        __syncthreads();
        for (int64_t i = threadIdx.x; i < n; i += kThreads) {
            const uint32_t key = order_key(row[i]);
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 0xFF], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            uint32_t above = 0;
            int b = 255;
            for (; b > 0; --b) {
                if (above + hist[b] >= remaining) break;
                above += hist[b];
            }
            s_prefix = prefix | (static_cast<uint32_t>(b) << shift);
            s_remaining = remaining - above;
        }
        __syncthreads();
        prefix = s_prefix;
        remaining = s_remaining;
        mask |= 0xFFu << shift;
        __syncthreads();
    }
    // Ordered pass: running counts of keys above the threshold (high 32 bits) and equal
    // to it (low 32 bits) give each survivor its output slot.
    unsigned long long carry = 0;
    for (int64_t base = 0; base < n; base += kThreads) {
        const int64_t i = base + threadIdx.x;
        unsigned long long flag = 0;
        if (i < n) {
            const uint32_t key = order_key(row[i]);
            flag = key > prefix ? (1ull << 32) : (key == prefix ? 1ull : 0ull);
        }
        unsigned long long before, total;
        Scan(scan_tmp).ExclusiveSum(flag, before, total);
        before += carry;
        const uint32_t gt = static_cast<uint32_t>(before >> 32), eq = static_cast<uint32_t>(before);
        const bool take = (flag >> 32) || (flag && eq < remaining);
        if (take) put(gt + min(eq, remaining), i);
        carry += total;
        __syncthreads();
    }
}

}  // namespace

cudaError_t launch_topk(const TopkParams &p, cudaStream_t stream) {
    if (p.T == 0 || p.k == 0) return cudaSuccess;
    topk_kernel<<<static_cast<unsigned>(p.T), kThreads, 0, stream>>>(p);
    return cudaGetLastError();
}

}  // namespace dsi::cuda
