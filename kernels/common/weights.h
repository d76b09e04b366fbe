// A weight matrix in device memory, kept in its stored dtype. Plain data: passed by
// value to kernels, or as a device array of them for grouped (MoE) launches.
#pragma once

#include <cstdint>

namespace dsi::cuda {

enum class WeightType : int32_t { F32 = 0, BF16 = 1, FP8 = 2 };

// Row-major [rows = out features, cols = in features]. For FP8, `scale` holds the
// checkpoint's weight_scale_inv per 128x128 block: [ceil(rows/128), scale_stride].
struct WeightRef {
    const void *data = nullptr;
    const float *scale = nullptr;
    WeightType type = WeightType::F32;
    int64_t rows = 0, cols = 0;
    int64_t scale_stride = 0;
};

constexpr int64_t kFp8Block = 128;

}  // namespace dsi::cuda
