// DeepSeekMoE on the GPU: routing, then the routed experts grouped so that each
// projection is one launch over all experts (tokens sorted by expert), then a combine.
//   route:   sigmoid(logits) + e_score_correction_bias; a group's score is the sum of
//            its two best biased scores; keep topk_group groups, then top_k experts
//            (ties to the lower index, as the CPU engine); weights are the unbiased
//            sigmoid scores, normalised when norm_topk_prob, times the scaling factor.
//   sort:    slot i = t*top_k + j goes to row sorted_pos[i] of its expert's range;
//            group_rows / group_tiles give each expert's rows and 64-row GEMM tiles.
//   combine: y[t] = sum_j w[t,j] * expert_out[sorted_pos[t*top_k + j]]   (j order).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace dsi::cuda {

struct MoeRouteParams {
    const float *logits = nullptr;     // [T, n_experts] (router in float32)
    const float *bias = nullptr;       // [n_experts]
    int64_t T = 0, n_experts = 0, n_group = 1, topk_group = 1, top_k = 0;
    bool norm_topk_prob = true;
    float routed_scaling_factor = 1.0f;
    int32_t *expert_ids = nullptr;     // [T, top_k]
    float *expert_weights = nullptr;   // [T, top_k]
};
constexpr int64_t kMaxExperts = 256;
cudaError_t launch_moe_route(const MoeRouteParams &p, cudaStream_t stream);

struct MoeSortParams {
    const int32_t *expert_ids = nullptr;  // [T, top_k]
    int64_t T = 0, top_k = 0, n_experts = 0;
    int64_t tile_rows = 64;               // the grouped GEMM's row tile
    int32_t *sorted_pos = nullptr;        // [T * top_k]: row of slot i in sorted order
    int32_t *sorted_token = nullptr;      // [T * top_k]: token of sorted row r
    int32_t *group_rows = nullptr;        // [n_experts + 1]
    int32_t *group_tiles = nullptr;       // [n_experts + 1]
};
cudaError_t launch_moe_sort(const MoeSortParams &p, cudaStream_t stream);

struct MoeCombineParams {
    const float *expert_out = nullptr;    // [T * top_k, hidden] sorted rows
    const int32_t *sorted_pos = nullptr;
    const float *expert_weights = nullptr;
    int64_t T = 0, top_k = 0, hidden = 0;
    float *y = nullptr;                   // [T, hidden] (overwritten)
};
cudaError_t launch_moe_combine(const MoeCombineParams &p, cudaStream_t stream);

}  // namespace dsi::cuda
