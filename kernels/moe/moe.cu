#include "moe/moe.h"

#include "common/device.cuh"

namespace dsi::cuda {
namespace {

// One thread per token: at most 256 experts and 8 groups, a few thousand comparisons.
__global__ void moe_route_kernel(MoeRouteParams p) {
    const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (t >= p.T) return;
    const float *logits = p.logits + t * p.n_experts;
    const int64_t E = p.n_experts, per_group = E / p.n_group;
    float choice[kMaxExperts];
    for (int64_t e = 0; e < E; ++e) choice[e] = 1.0f / (1.0f + expf(-logits[e])) + p.bias[e];
    // Group scores: the sum of the two best biased scores (fewer if the group is smaller).
    float gscore[kMaxExperts];
    for (int64_t g = 0; g < p.n_group; ++g) {
        float b1 = -INFINITY, b2 = -INFINITY;
        for (int64_t e = g * per_group; e < (g + 1) * per_group; ++e) {
            const float v = choice[e];
            if (v > b1) { b2 = b1; b1 = v; } else if (v > b2) { b2 = v; }
        }
        gscore[g] = per_group >= 2 ? b1 + b2 : b1;
    }
    uint32_t group_mask[kMaxExperts / 32] = {};
    for (int64_t i = 0; i < p.topk_group; ++i) {
        int64_t best = -1;
        for (int64_t g = 0; g < p.n_group; ++g)
            if (!(group_mask[g / 32] >> (g % 32) & 1u) && (best < 0 || gscore[g] > gscore[best])) best = g;
        group_mask[best / 32] |= 1u << (best % 32);
    }
    uint32_t taken[kMaxExperts / 32] = {};
    int32_t *ids = p.expert_ids + t * p.top_k;
    float *wts = p.expert_weights + t * p.top_k;
    float sum = 0.0f;
    for (int64_t j = 0; j < p.top_k; ++j) {
        int64_t best = -1;
        for (int64_t e = 0; e < E; ++e) {
            const int64_t g = e / per_group;
            if (!(group_mask[g / 32] >> (g % 32) & 1u) || (taken[e / 32] >> (e % 32) & 1u)) continue;
            if (best < 0 || choice[e] > choice[best]) best = e;
        }
        taken[best / 32] |= 1u << (best % 32);
        ids[j] = static_cast<int32_t>(best);
        wts[j] = 1.0f / (1.0f + expf(-logits[best]));
        sum += wts[j];
    }
    const float norm = p.norm_topk_prob ? 1.0f / (sum + 1e-20f) : 1.0f;
    for (int64_t j = 0; j < p.top_k; ++j) wts[j] = wts[j] * norm * p.routed_scaling_factor;
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
    moe_route_kernel<<<ceil_div(p.T, 64), 64, 0, stream>>>(p);
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
