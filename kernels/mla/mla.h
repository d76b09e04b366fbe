// MLA attention in absorbed (MQA) form over the paged latent cache:
//   score[t,h,j] = scale * (q_latent[t,h] . latent[s_j] + q_rope[t,h] . k_rope[s_j])
//   out[t,h]     = sum_j softmax_j(score) * latent[s_j]
// Each slot of the cache is one record [kv_lora_rank | rope_dim] (576 values at the
// released dims), float32 (`f32` precision) or bf16 (`fast`), so a selected token is
// one contiguous gather. Sparse: row t attends to the physical slots select[t, :]
// (page * 64 + offset, -1 = empty, as FlashMLA); dense (select == nullptr): to
// positions 0..pos(t) of its sequence through the page table.
// One kernel serves prefill (many rows) and decode (one or two rows per sequence): a
// block takes 8 heads of one row and streams its keys in tiles of 32 with an online
// softmax, so the key tile is read once for 8 heads.
#pragma once

#include "common/paging.h"

#include <cuda_runtime.h>

namespace dsi::cuda {

struct MlaParams {
    const float *q_latent = nullptr;  // [T, heads, rank]
    const float *q_rope = nullptr;    // [T, heads, rope_dim]
    const void *cache = nullptr;      // [slots, rank + rope_dim]
    bool cache_bf16 = false;
    PageTable pages;
    RowInfo rows;
    const int32_t *select = nullptr;  // [T, select_stride] slots, -1 empty
    int64_t select_stride = 0;
    int64_t T = 0, heads = 0, rank = 0, rope_dim = 0;
    float scale = 0.0f;
    float *out = nullptr;             // [T, heads, rank]
};
cudaError_t launch_mla(const MlaParams &p, cudaStream_t stream);

// Writes row r's normalised latent and roped key into record slots[r] (-1 = skip).
struct MlaStoreParams {
    const float *latent = nullptr;    // row r at latent + r * latent_stride
    int64_t latent_stride = 0;
    const float *k_rope = nullptr;    // row r at k_rope + r * k_rope_stride
    int64_t k_rope_stride = 0;
    const int32_t *slots = nullptr;   // [T]
    int64_t T = 0, rank = 0, rope_dim = 0;
    void *cache = nullptr;
    bool cache_bf16 = false;
};
cudaError_t launch_mla_store(const MlaStoreParams &p, cudaStream_t stream);

// The inverse: record slots[r] back to float32 latent [T, rank] and k_rope [T, rope_dim].
struct MlaGatherParams {
    const void *cache = nullptr;
    bool cache_bf16 = false;
    const int32_t *slots = nullptr;
    int64_t T = 0, rank = 0, rope_dim = 0;
    float *latent = nullptr, *k_rope = nullptr;
};
cudaError_t launch_mla_gather(const MlaGatherParams &p, cudaStream_t stream);

}  // namespace dsi::cuda
