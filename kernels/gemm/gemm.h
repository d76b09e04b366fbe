// Float32 GEMM against a weight in its stored dtype, dequantised as tiles are loaded:
//   y[i, n] = sum_k x[row(i), k] * W[n, k]          (W: [N, K], y: [M, N])
// Two epilogues: plain, and gated (y = silu(x.Wg^T) * (x.Wu^T), the SwiGLU input of the
// down projection, so gate and up never reach memory). Grouped mode runs every MoE
// expert in one launch: rows are sorted by expert, group g owns rows
// [group_rows[g], group_rows[g+1]) and its row tiles start at tile index group_tiles[g].
// Batched mode (grid z) runs one GEMM per attention head over slices of one weight:
// batch b reads x + b * x_batch_stride, writes y + b * y_batch_stride, and sees the
// weight rows from w_row_offset + b * w_row_batch_stride on (MLA's absorbed W_UK / W_UV
// slices of kv_b); with w_transposed, element (n, k) is read at weight (row k, col n).
// Up to 8 rows (decode) without grouping or a transposed weight run as a GEMV: one warp
// per output column streaming its weight row (the tiled kernel would leave the chip idle).
// This is the `f32` precision's GEMM (exact against the CPU engine: float32 products,
// sequential K order) and the fallback wherever cuBLASLt's FP8 path cannot take a shape.
#pragma once

#include "common/weights.h"

#include <cuda_runtime.h>

namespace dsi::cuda {

struct GemmParams {
    const float *x = nullptr;
    int64_t ldx = 0;
    const int32_t *x_rows = nullptr;  // optional gather: GEMM row i reads x row x_rows[i]
    int64_t M = 0;                     // rows (tokens, or sorted token-expert slots)
    WeightRef w;                       // [N, K] (ungrouped)
    WeightRef w_up;                    // gated epilogue only
    const WeightRef *group_w = nullptr;     // device [groups] (grouped mode)
    const WeightRef *group_w_up = nullptr;  // device [groups] (grouped + gated)
    const int32_t *group_rows = nullptr;    // device [groups + 1]
    const int32_t *group_tiles = nullptr;   // device [groups + 1]
    int32_t groups = 0;
    int64_t max_tiles = 0;             // grouped: upper bound on row tiles (grid size)
    int64_t N = 0, K = 0;
    bool gated = false;
    float *y = nullptr;
    int64_t ldy = 0;
    int64_t batches = 1, x_batch_stride = 0, y_batch_stride = 0;
    int64_t w_row_offset = 0, w_row_batch_stride = 0;
    bool w_transposed = false;
};

cudaError_t launch_gemm(const GemmParams &p, cudaStream_t stream);

}  // namespace dsi::cuda
