// The sampling chain behind dsi_sampler_* (its order and semantics are specified in
// include/dsinfer.h).
#pragma once

#include "dsinfer.h"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace dsi {

// xoshiro256** seeded through splitmix64. Both are specified bit for bit, so a seed
// yields the same stream with every compiler and standard library, which
// std::*_distribution does not promise.
class Rng {
public:
    explicit Rng(uint64_t seed) { reseed(seed); }
    void reseed(uint64_t seed);
    uint64_t next();
    // Uniform in [0, 1): the top 53 bits of next() scaled by 2^-53.
    double next_double();
    // The four state words, for saved state (lib/state).
    void get_state(uint64_t out[4]) const {
        for (int i = 0; i < 4; ++i) out[i] = s_[i];
    }
    void set_state(const uint64_t in[4]) {
        for (int i = 0; i < 4; ++i) s_[i] = in[i];
    }

private:
    uint64_t s_[4];
};

// `params` (NULL = the defaults) completed with defaults for fields beyond its
// struct_size and validated; throws DSI_ERR_INVALID_ARGUMENT naming a bad field.
dsi_sampler_params checked_sampler_params(const dsi_sampler_params *params);

// Step 1 of the chain: penalises logits[0..n_vocab) in place for the tokens among the
// last params.penalty_last_n entries of history (ids must already be in range).
// `scratch` is reused storage. Throws if a penalised logit overflows to +inf.
void apply_penalties(const dsi_sampler_params &params, float *logits, const int32_t *history,
                     size_t n_history, std::vector<int32_t> &scratch);

struct Candidate {
    int32_t id;
    float logit;
    double p;
};

}  // namespace dsi

struct dsi_sampler {
    explicit dsi_sampler(const dsi_sampler_params &p) : params(p), rng(p.seed) {}

    // The whole chain over caller-checked pointers; throws dsi::Error on bad values.
    int32_t sample(const float *logits, int32_t n_vocab, const int32_t *history,
                   size_t n_history);

    dsi_sampler_params params;
    dsi::Rng rng;
    std::vector<dsi_logit_bias> logit_bias;  // step 0 of the chain

    std::atomic_flag in_use = ATOMIC_FLAG_INIT;  // DSI_ERR_BUSY for a concurrent call
    std::atomic<int64_t> samples{0}, sample_us{0};

    // Scratch kept across calls so that a decode step does not allocate.
    std::vector<float> logits;
    std::vector<int32_t> window;
    std::vector<dsi::Candidate> candidates;

private:
    void apply_logit_bias(int32_t n_vocab);
    void keep_top(size_t k);
    void softmax(float temperature);
    void keep_nucleus(float top_p);
    void keep_min_p(float min_p);
    int32_t draw();
};
