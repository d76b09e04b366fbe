// The lightning indexer's scores over each row's own sequence, reading paged keys:
//   score[t, s] = sum_h (w[t,h] * weight_scale) * ReLU(scale * q[t,h] . k[s]),  s <= pos(t)
// Entries past pos(t) are not written. Keys are one per token, shared by all heads:
//   KeyFormat::F32: float32 [slot, dim];
//   KeyFormat::FP8: per page 64 x dim e4m3 bytes, then 64 fp32 scales (132 bytes a
//     token at dim 128: DeepGEMM's paged layout), one scale per token.
#pragma once

#include "common/paging.h"

#include <cuda_runtime.h>

namespace dsi::cuda {

enum class KeyFormat : int32_t { F32 = 0, FP8 = 1 };

// Bytes of one cache page of indexer keys.
inline int64_t index_key_page_bytes(KeyFormat f, int64_t dim) {
    return f == KeyFormat::F32 ? kPageTokens * dim * 4 : kPageTokens * (dim + 4);
}

struct IndexerScoreParams {
    const float *q = nullptr;        // [T, heads, dim]
    const float *w = nullptr;        // [T, heads]
    float weight_scale = 1.0f, scale = 1.0f;
    const void *keys = nullptr;      // the page pool
    KeyFormat format = KeyFormat::F32;
    PageTable pages;
    RowInfo rows;
    int64_t T = 0, heads = 0, dim = 0;
    int64_t max_len = 0;             // >= pos(t)+1 for every row
    float *scores = nullptr;         // [T, score_stride]
    int64_t score_stride = 0;
};
cudaError_t launch_indexer_scores(const IndexerScoreParams &p, cudaStream_t stream);

// Writes key row t (float32 [T, dim]) into slots[t] (-1 = skip), quantising to e4m3
// with a power-of-two per-token scale for FP8.
struct IndexerStoreParams {
    const float *k = nullptr;        // [T, dim]
    int64_t T = 0, dim = 0;
    const int32_t *slots = nullptr;  // [T]
    void *keys = nullptr;
    KeyFormat format = KeyFormat::F32;
};
cudaError_t launch_indexer_store(const IndexerStoreParams &p, cudaStream_t stream);

// The inverse: key slots[t] back to float32 [T, dim] (dequantised for FP8).
cudaError_t launch_indexer_gather(const void *keys, KeyFormat format, const int32_t *slots, int64_t T, int64_t dim,
                                  float *out, cudaStream_t stream);

// In place: x[r] = H x[r] / sqrt(dim) for each of `rows` contiguous vectors (dim a power
// of two <= 1024): the Walsh-Hadamard rotation DeepSeek's FP8 indexer applies to q and
// k before quantising (q.k is unchanged; outliers are spread over the block).
cudaError_t launch_hadamard(float *x, int64_t rows, int64_t dim, cudaStream_t stream);

}  // namespace dsi::cuda
