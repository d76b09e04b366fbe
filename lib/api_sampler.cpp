// The C API of the sampler: argument checks and error conversion around lib/sampler.h.
#include "common/error.h"
#include "context_access.h"
#include "sampler.h"
#include "session.h"

#include <cmath>
#include <vector>


using dsi::fail;
using dsi::guard;

namespace {

// Marks a sampler busy for the guard's lifetime; DSI_ERR_BUSY if another thread holds it.
class SamplerLock {
public:
    explicit SamplerLock(dsi_sampler *s) : s_(s) {
        if (s_->in_use.test_and_set(std::memory_order_acquire))
            fail(DSI_ERR_BUSY, "the sampler is being used by another thread");
    }
    ~SamplerLock() { s_->in_use.clear(std::memory_order_release); }
    SamplerLock(const SamplerLock &) = delete;
    SamplerLock &operator=(const SamplerLock &) = delete;

private:
    dsi_sampler *s_;
};

// Runs one draw and counts it (successful draws only) in the sampler's perf counters.
template <class F>
void timed(dsi_sampler *s, F &&draw) {
    const double start = dsi::now_ms();
    draw();
    s->sample_us.fetch_add(static_cast<int64_t>((dsi::now_ms() - start) * 1000.0), std::memory_order_relaxed);
    s->samples.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

extern "C" DSI_API dsi_sampler_params dsi_sampler_default_params(void) {
    dsi_sampler_params p{};
    p.struct_size = sizeof p;
    p.temperature = 0.8f;
    p.top_k = 40;
    p.top_p = 0.95f;
    p.min_p = 0.05f;
    p.repeat_penalty = 1.0f;
    p.frequency_penalty = 0.0f;
    p.presence_penalty = 0.0f;
    p.penalty_last_n = 64;
    p.seed = 0x5EED;
    return p;
}

extern "C" DSI_API dsi_status dsi_sampler_create(const dsi_sampler_params *params, dsi_sampler **out) {
    return guard([&] {
        if (!out) fail(DSI_ERR_INVALID_ARGUMENT, "dsi_sampler_create: out is NULL");
        *out = nullptr;
        *out = new dsi_sampler(dsi::checked_sampler_params(params));
    });
}

extern "C" DSI_API void dsi_sampler_free(dsi_sampler *sampler) { delete sampler; }

extern "C" DSI_API dsi_status dsi_sampler_reset(dsi_sampler *sampler, uint64_t seed) {
    return guard([&] {
        if (!sampler) fail(DSI_ERR_INVALID_ARGUMENT, "dsi_sampler_reset: sampler is NULL");
        SamplerLock lock(sampler);
        sampler->params.seed = seed;
        sampler->rng.reseed(seed);
    });
}

extern "C" DSI_API dsi_status dsi_sampler_sample(dsi_sampler *sampler, dsi_context *ctx, int32_t *token_out) {
    return guard([&] {
        if (!sampler) fail(DSI_ERR_INVALID_ARGUMENT, "dsi_sampler_sample: sampler is NULL");
        if (!ctx) fail(DSI_ERR_INVALID_ARGUMENT, "dsi_sampler_sample: ctx is NULL");
        if (!token_out) fail(DSI_ERR_INVALID_ARGUMENT, "dsi_sampler_sample: token_out is NULL");
        SamplerLock lock(sampler);
        dsi::ContextLock ctx_lock(ctx);
        const float *logits = dsi::context_logits_row(ctx, -1);
        timed(sampler, [&] {
            *token_out = sampler->sample(logits, dsi::context_n_vocab(ctx), ctx->tokens.data(), ctx->tokens.size());
        });
    });
}

extern "C" DSI_API dsi_status dsi_sampler_sample_logits(dsi_sampler *sampler, const float *logits,
                                                        int32_t n_vocab, const int32_t *history,
                                                        size_t n_history, int32_t *token_out) {
    return guard([&] {
        if (!sampler) fail(DSI_ERR_INVALID_ARGUMENT, "dsi_sampler_sample_logits: sampler is NULL");
        if (!logits) fail(DSI_ERR_INVALID_ARGUMENT, "dsi_sampler_sample_logits: logits is NULL");
        if (n_vocab <= 0) fail(DSI_ERR_INVALID_ARGUMENT, "dsi_sampler_sample_logits: n_vocab is %d", n_vocab);
        if (!history && n_history > 0)
            fail(DSI_ERR_INVALID_ARGUMENT, "dsi_sampler_sample_logits: history is NULL but n_history is %zu",
                 n_history);
        if (!token_out) fail(DSI_ERR_INVALID_ARGUMENT, "dsi_sampler_sample_logits: token_out is NULL");
        SamplerLock lock(sampler);
        timed(sampler, [&] { *token_out = sampler->sample(logits, n_vocab, history, n_history); });
    });
}

extern "C" DSI_API dsi_status dsi_sampler_set_logit_bias(dsi_sampler *sampler, const dsi_logit_bias *entries,
                                                         size_t n) {
    return guard([&] {
        if (!sampler) fail(DSI_ERR_INVALID_ARGUMENT, "dsi_sampler_set_logit_bias: sampler is NULL");
        if (!entries && n > 0)
            fail(DSI_ERR_INVALID_ARGUMENT, "dsi_sampler_set_logit_bias: entries is NULL but n is %zu", n);
        for (size_t i = 0; i < n; ++i) {
            if (entries[i].token < 0)
                fail(DSI_ERR_INVALID_ARGUMENT, "dsi_sampler_set_logit_bias: entry %zu has token %d", i,
                     entries[i].token);
            if (std::isnan(entries[i].bias) || entries[i].bias == INFINITY)
                fail(DSI_ERR_INVALID_ARGUMENT, "dsi_sampler_set_logit_bias: entry %zu (token %d) has bias %g", i,
                     entries[i].token, static_cast<double>(entries[i].bias));
        }
        SamplerLock lock(sampler);
        sampler->logit_bias.assign(entries, entries + n);
    });
}

extern "C" DSI_API dsi_sampler_perf dsi_sampler_perf_get(const dsi_sampler *sampler) {
    dsi_sampler_perf p{};
    if (!sampler) return p;
    p.sample_ms = static_cast<double>(sampler->sample_us.load(std::memory_order_relaxed)) / 1000.0;
    p.samples = sampler->samples.load(std::memory_order_relaxed);
    return p;
}

extern "C" DSI_API void dsi_sampler_perf_reset(dsi_sampler *sampler) {
    if (!sampler) return;
    sampler->sample_us.store(0, std::memory_order_relaxed);
    sampler->samples.store(0, std::memory_order_relaxed);
}
