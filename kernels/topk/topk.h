// Causal top-k per row: row t keeps the `k` highest of scores[t, 0..pos(t)] as logical
// positions in ascending order, ties to the earlier position (the CPU engine's rule),
// and -1 in the slots it cannot fill. A row with pos(t)+1 <= k keeps 0..pos(t) without
// reading its scores. Radix select on the scores' order-preserving 32-bit keys (4 passes
// of 8 bits, one block per row), then one ordered pass that writes the survivors.
#pragma once

#include "common/paging.h"

#include <cuda_runtime.h>

#include <cstdint>

namespace dsi::cuda {

struct TopkParams {
    const float *scores = nullptr;    // [T, score_stride]
    int64_t score_stride = 0;
    RowInfo rows;                     // pos: causal limit; seq: for select_slots
    int64_t T = 0, k = 0;
    int32_t *select = nullptr;        // [T, k] logical positions
    PageTable pages;                  // optional: also write the selection as slots
    int32_t *select_slots = nullptr;  // [T, k] or nullptr
};
cudaError_t launch_topk(const TopkParams &p, cudaStream_t stream);

}  // namespace dsi::cuda
