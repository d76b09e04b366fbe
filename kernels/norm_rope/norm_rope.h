// Row-wise small ops: RMSNorm, LayerNorm (with bias), YaRN RoPE in both layouts,
// embedding gather from a stored-dtype table, and residual add. All float32.
#pragma once

#include "common/weights.h"

#include <cuda_runtime.h>

namespace dsi::cuda {

// y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w; y may alias x. Also LayerNorm when
// `layer_norm` (biased variance, then * w + b).
struct NormParams {
    const float *x = nullptr;
    const float *w = nullptr;
    const float *b = nullptr;  // LayerNorm only
    int64_t rows = 0, dim = 0;
    int64_t ldx = 0, ldy = 0;  // row strides
    float eps = 0.0f;
    bool layer_norm = false;
    float *y = nullptr;
};
cudaError_t launch_norm(const NormParams &p, cudaStream_t stream);

// Rotates rope_dim dims of every head in place. Row r has position positions[r].
// Interleaved pairs (x0,x1),(x2,x3).. (MLA) or half-split pairs (x_i, x_{i+d/2}) (indexer).
struct RopeParams {
    float *x = nullptr;
    int64_t rows = 0, row_stride = 0, heads = 1, head_stride = 0, offset = 0;
    int64_t rope_dim = 0;
    bool interleaved = true;
    const int32_t *positions = nullptr;  // [rows]
    const float *cos = nullptr, *sin = nullptr;  // [n_positions, rope_dim/2]
};
cudaError_t launch_rope(const RopeParams &p, cudaStream_t stream);

// out[i] = table[ids[i]] as float32 (ids device memory, validated by the caller).
cudaError_t launch_embed(const WeightRef &table, const int32_t *ids, int64_t n, float *out, cudaStream_t stream);

// y += x, n elements.
cudaError_t launch_add(float *y, const float *x, int64_t n, cudaStream_t stream);

// gate[i] = silu(gate[i]) * up[i], n elements (the SwiGLU product when gate and up come
// from separate cuBLASLt GEMMs).
cudaError_t launch_silu_mul(float *gate, const float *up, int64_t n, cudaStream_t stream);

// dst[i] = src[index[i]] for n rows of `cols` floats (src rows contiguous).
cudaError_t launch_gather_rows(const float *src, const int32_t *index, int64_t n, int64_t cols, float *dst,
                               cudaStream_t stream);

}  // namespace dsi::cuda
