// Rotary embedding frequencies (default or YaRN) and the attention-scale correction,
// computed exactly as Hugging Face transformers does for DeepSeek-V3/V3.2.
#pragma once

#include "model/config.h"

#include <vector>

namespace dsi {

struct RopeFrequencies {
    std::vector<float> inv_freq;    // [rope_dim/2]
    float attention_factor = 1.0f;  // multiplies cos and sin
};

// inv_freq over `rope_dim` dims (qk_rope_head_dim) for the config's rope type.
RopeFrequencies rope_frequencies(const ModelConfig &cfg);

// cos/sin tables [n_positions, rope_dim/2], angle = float32(inv_freq * pos).
void rope_tables(const RopeFrequencies &f, int64_t n_positions, std::vector<float> &cos,
                 std::vector<float> &sin);

// MLA's softmax scale: qk_head_dim^-0.5, times YaRN's mscale^2 when mscale_all_dim
// is set (the indexer's scale has no such factor).
float mla_softmax_scale(const ModelConfig &cfg);

}  // namespace dsi
