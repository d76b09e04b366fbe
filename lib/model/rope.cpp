#include "model/rope.h"

#include <algorithm>
#include <cmath>

namespace dsi {

static double yarn_get_mscale(double scale, double mscale) {
    return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

RopeFrequencies rope_frequencies(const ModelConfig &cfg) {
    const RopeConfig &r = cfg.rope;
    const int64_t dim = cfg.qk_rope_head_dim, half = dim / 2;
    RopeFrequencies f;
    f.inv_freq.resize(static_cast<size_t>(half));
    // pos_freqs = base ** (arange(0, dim, 2) / dim), evaluated in float32 as torch does.
    std::vector<float> pos_freqs(static_cast<size_t>(half));
    for (int64_t i = 0; i < half; ++i)
        pos_freqs[i] = std::pow(static_cast<float>(r.theta), static_cast<float>(2 * i) / static_cast<float>(dim));
    if (r.type != "yarn") {
        for (int64_t i = 0; i < half; ++i) f.inv_freq[i] = 1.0f / pos_freqs[i];
        return f;
    }
    // The config's factor, as DeepSeek's rope_factor, never max_position_embeddings /
    // original_max_position_embeddings (ARCHITECTURE.md, "Defined choices"); the config
    // check guarantees original_max_position_embeddings.
    const double factor = r.factor;
    const double original = static_cast<double>(r.original_max_position_embeddings);
    if (r.attention_factor > 0.0)
        f.attention_factor = static_cast<float>(r.attention_factor);
    else if (r.mscale != 0.0 && r.mscale_all_dim != 0.0)
        f.attention_factor = static_cast<float>(yarn_get_mscale(factor, r.mscale) / yarn_get_mscale(factor, r.mscale_all_dim));
    else
        f.attention_factor = static_cast<float>(yarn_get_mscale(factor, 1.0));

    const double base = r.theta;
    auto correction_dim = [&](double rotations) {
        return (static_cast<double>(dim) * std::log(original / (rotations * 2.0 * M_PI))) / (2.0 * std::log(base));
    };
    double low = correction_dim(r.beta_fast), high = correction_dim(r.beta_slow);
    if (r.truncate) {
        low = std::floor(low);
        high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, static_cast<double>(dim - 1));
    if (low == high) high += 0.001;  // avoid a zero-width ramp
    for (int64_t i = 0; i < half; ++i) {
        const float ramp = std::clamp(static_cast<float>((static_cast<double>(i) - low) / (high - low)), 0.0f, 1.0f);
        const float extrapolation = 1.0f - ramp;
        const float inv_extra = 1.0f / pos_freqs[i];
        const float inv_inter = 1.0f / (static_cast<float>(factor) * pos_freqs[i]);
        f.inv_freq[i] = inv_inter * (1.0f - extrapolation) + inv_extra * extrapolation;
    }
    return f;
}

void rope_tables(const RopeFrequencies &f, int64_t n_positions, std::vector<float> &cos, std::vector<float> &sin) {
    const size_t half = f.inv_freq.size();
    cos.resize(static_cast<size_t>(n_positions) * half);
    sin.resize(cos.size());
    for (int64_t p = 0; p < n_positions; ++p)
        for (size_t i = 0; i < half; ++i) {
            const float angle = f.inv_freq[i] * static_cast<float>(p);
            cos[p * half + i] = static_cast<float>(std::cos(static_cast<double>(angle))) * f.attention_factor;
            sin[p * half + i] = static_cast<float>(std::sin(static_cast<double>(angle))) * f.attention_factor;
        }
}

float mla_softmax_scale(const ModelConfig &cfg) {
    double scale = 1.0 / std::sqrt(static_cast<double>(cfg.qk_head_dim()));
    if (cfg.rope.type == "yarn" && cfg.rope.mscale_all_dim != 0.0) {
        const double m = yarn_get_mscale(cfg.rope.factor, cfg.rope.mscale_all_dim);
        scale *= m * m;
    }
    return static_cast<float>(scale);
}

}  // namespace dsi
