// The C API of the sampler: argument checks and error conversion around lib/sampler.h.
#include "common/error.h"
#include "context_access.h"
#include "sampler.h"

#include <vector>


using dsi::fail;
using dsi::guard;

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
        sampler->params.seed = seed;
        sampler->rng.reseed(seed);
    });
}

extern "C" DSI_API dsi_status dsi_sampler_sample(dsi_sampler *sampler, dsi_context *ctx, int32_t *token_out) {
    return guard([&] {
        if (!sampler) fail(DSI_ERR_INVALID_ARGUMENT, "dsi_sampler_sample: sampler is NULL");
        if (!ctx) fail(DSI_ERR_INVALID_ARGUMENT, "dsi_sampler_sample: ctx is NULL");
        if (!token_out) fail(DSI_ERR_INVALID_ARGUMENT, "dsi_sampler_sample: token_out is NULL");
        const float *logits = dsi_context_logits(ctx, -1);
        if (!logits) fail(DSI_ERR_INVALID_ARGUMENT, "dsi_sampler_sample: %s", dsi_last_error());
        std::vector<int32_t> &history = sampler->history;
        history.resize(static_cast<size_t>(dsi_context_tokens(ctx, nullptr, 0)));
        dsi_context_tokens(ctx, history.data(), history.size());
        *token_out = sampler->sample(logits, dsi::context_n_vocab(ctx), history.data(), history.size());
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
        *token_out = sampler->sample(logits, n_vocab, history, n_history);
    });
}
