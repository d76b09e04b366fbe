#include "moe/moe.h"

#include "common/device.cuh"

#include <climits>

namespace dsi::cuda {
namespace {

// One block per token, one thread per expert (at most 256): scores in shared memory;
// the group and expert selections are block-wide argmax rounds (ties to the lower index).
constexpr int kRouteThreads = 256;

// Block-wide argmax of (v, i) with ties to the lower i; every thread gets the winner.
__device__ void block_argmax(float v, int i, float *sv, int *si, float &best_v, int &best_i) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const int oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (ov > v || (ov == v && oi < i)) { v = ov; i = oi; }
    }
    __syncthreads();
    if (lane == 0) { sv[warp] = v; si[warp] = i; }
    __syncthreads();
    best_v = sv[0];
    best_i = si[0];
    for (int w = 1; w < kRouteThreads / 32; ++w)
        if (sv[w] > best_v || (sv[w] == best_v && si[w] < best_i)) { best_v = sv[w]; best_i = si[w]; }
}

__global__ void __launch_bounds__(kRouteThreads) moe_route_kernel(MoeRouteParams p) {
    __shared__ float choice[kMaxExperts], gscore[kMaxExperts], sv[kRouteThreads / 32];
    __shared__ int si[kRouteThreads / 32];
    __shared__ float weight[kMaxExperts];
    const int64_t t = blockIdx.x;
    const int e = threadIdx.x;
    const int64_t E = p.n_experts, per_group = E / p.n_group;
    const float *logits = p.logits + t * E;
    const float sig = e < E ? 1.0f / (1.0f + expf(-logits[e])) : 0.0f;
    if (e < E) {
        choice[e] = sig + p.bias[e];
        weight[e] = sig;
    }
    __syncthreads();
    // Group scores: the sum of the two best biased scores (fewer if the group is smaller).
    if (e < p.n_group) {
        float b1 = -INFINITY, b2 = -INFINITY;
        for (int64_t x = e * per_group; x < (e + 1) * per_group; ++x) {
            const float v = choice[x];
            if (v > b1) { b2 = b1; b1 = v; } else if (v > b2) { b2 = v; }
        }
        gscore[e] = per_group >= 2 ? b1 + b2 : b1;
    }
    __syncthreads();
    bool group_kept = false;  // thread e's group: is it among the top groups
    const int my_group = static_cast<int>(e / per_group);
    for (int64_t r = 0; r < p.topk_group; ++r) {
        float bv;
        int bi;
        block_argmax(e < p.n_group ? gscore[e] : -INFINITY, e < p.n_group ? e : INT_MAX, sv, si, bv, bi);
        if (bi == my_group) group_kept = true;
        __syncthreads();
        if (e == bi) gscore[e] = -INFINITY;
        __syncthreads();
    }
    float mine = e < E && group_kept ? choice[e] : -INFINITY;
    int32_t *ids = p.expert_ids + t * p.top_k;
    float *wts = p.expert_weights + t * p.top_k;
    float sum = 0.0f;
    for (int64_t j = 0; j < p.top_k; ++j) {
        float bv;
        int bi;
        block_argmax(mine, e < E ? e : INT_MAX, sv, si, bv, bi);
        if (bi >= E) bi = 0;  // fewer allowed experts than top_k: config validation prevents it
        if (e == bi) mine = -INFINITY;
        sum += weight[bi];
        if (e == 0) {
            ids[j] = bi;
            wts[j] = weight[bi];
        }
    }
    __syncthreads();
    if (e == 0) {
        const float norm = p.norm_topk_prob ? 1.0f / (sum + 1e-20f) : 1.0f;
        for (int64_t j = 0; j < p.top_k; ++j) wts[j] = wts[j] * norm * p.routed_scaling_factor;
    }
}

// One block: counts, prefix sums, then placement (order inside an expert's range is
// free: each sorted row is computed independently and combined in j order).
constexpr int kSortThreads = 1024;
__global__ void __launch_bounds__(kSortThreads) moe_sort_kernel(MoeSortParams p) {
    __shared__ int32_t count[kMaxExperts], cursor[kMaxExperts];
    for (int64_t e = threadIdx.x; e < p.n_experts; e += kSortThreads) count[e] = 0;
    __syncthreads();
    const int64_t n = p.T * p.top_k;
    for (int64_t i = threadIdx.x; i < n; i += kSortThreads) atomicAdd(&count[p.expert_ids[i]], 1);
    __syncthreads();
    if (threadIdx.x == 0) {
        int32_t rows = 0, tiles = 0;
        for (int64_t e = 0; e < p.n_experts; ++e) {
            p.group_rows[e] = rows;
            p.group_tiles[e] = tiles;
            cursor[e] = rows;
            rows += count[e];
            tiles += static_cast<int32_t>((count[e] + p.tile_rows - 1) / p.tile_rows);
        }
        p.group_rows[p.n_experts] = rows;
        p.group_tiles[p.n_experts] = tiles;
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < n; i += kSortThreads) {
        const int32_t r = atomicAdd(&cursor[p.expert_ids[i]], 1);
        p.sorted_pos[i] = r;
        p.sorted_token[r] = static_cast<int32_t>(i / p.top_k);
    }
}

__global__ void moe_combine_kernel(MoeCombineParams p) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= p.T * p.hidden) return;
    const int64_t t = i / p.hidden, c = i % p.hidden;
    float v = 0.0f;
    for (int64_t j = 0; j < p.top_k; ++j)
        v = fmaf(p.expert_weights[t * p.top_k + j], p.expert_out[p.sorted_pos[t * p.top_k + j] * p.hidden + c], v);
    p.y[i] = v;
}

}  // namespace

cudaError_t launch_moe_route(const MoeRouteParams &p, cudaStream_t stream) {
    if (p.T == 0) return cudaSuccess;
    if (p.n_experts > kMaxExperts || p.n_group > kMaxExperts) return cudaErrorInvalidValue;
    moe_route_kernel<<<static_cast<unsigned>(p.T), kRouteThreads, 0, stream>>>(p);
    return cudaGetLastError();
}

cudaError_t launch_moe_sort(const MoeSortParams &p, cudaStream_t stream) {
    if (p.n_experts > kMaxExperts) return cudaErrorInvalidValue;
    moe_sort_kernel<<<1, kSortThreads, 0, stream>>>(p);
    return cudaGetLastError();
}

cudaError_t launch_moe_combine(const MoeCombineParams &p, cudaStream_t stream) {
    const int64_t n = p.T * p.hidden;
    if (n == 0) return cudaSuccess;
    moe_combine_kernel<<<ceil_div(n, 256), 256, 0, stream>>>(p);
    return cudaGetLastError();
}

}  // namespace dsi::cuda
