// MLA attention in absorbed (MQA) form over the paged latent cache:
//   score[t,h,j] = scale * (q_latent[t,h] . latent[s_j] + q_rope[t,h] . k_rope[s_j])
//   out[t,h]     = sum_j softmax_j(score) * latent[s_j]
// Each slot of the cache is one record [kv_lora_rank | rope_dim] (576 values at the
// released dims), float32 (`f32` precision) or bf16 (`fast`), so a selected token is
// one contiguous gather. Sparse: row t attends to the physical slots select[t, :]
// (page * 64 + offset, -1 = empty, valid entries first, as FlashMLA); dense (select ==
// nullptr): to positions 0..pos(t) of its sequence through the page table.
//
// Heads share K/V (MQA), so a record is read from the cache ONCE per row for all of its
// heads: a thread-block cluster of ceil(heads / 32) CTAs takes one row, each CTA 32
// heads; the CTAs gather tiles of 32 selected records with coalesced 16-byte loads
// (each a share of the tile) and write them into every CTA's shared memory (DSMEM),
// then score and accumulate with an online softmax in float32.
//   prefill (launch_mla_prefill): one cluster per row, the whole selection;
//   decode  (launch_mla_decode):  one or two rows per sequence are too few clusters to
//     fill the GPU, so each row's selection is split over `splits` clusters
//     (mla_decode_splits) whose partial softmax states a combine kernel merges.
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
    // Decode only: the selection split over `splits` clusters per row, their partial
    // states in `partial` (mla_decode_partial_floats floats) when splits > 1.
    int64_t splits = 1;
    float *partial = nullptr;
};
// Both need rank <= 512 and heads <= 256; cudaErrorInvalidValue otherwise.
cudaError_t launch_mla_prefill(const MlaParams &p, cudaStream_t stream);
cudaError_t launch_mla_decode(const MlaParams &p, cudaStream_t stream);
// The split that fills `sm_count` multiprocessors with clusters (1 = no split).
int64_t mla_decode_splits(const MlaParams &p, int sm_count);
size_t mla_decode_partial_floats(const MlaParams &p);

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
