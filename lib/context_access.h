// Internal facts about a context that the public API does not expose, for other parts
// of the library (the sampler needs the vocabulary size of ctx's logits).
#pragma once

#include "dsinfer.h"

#include <cstdint>

namespace dsi {
int32_t context_n_vocab(const dsi_context *ctx);

// Row `index` of the last eval's logits (-1 = the last); the caller holds ctx's
// ContextLock. Throws DSI_ERR_INVALID_ARGUMENT when there is no such row.
const float *context_logits_row(const dsi_context *ctx, int32_t index);

// Adds one successful eval of n_tokens that took `ms` to ctx's perf counters (one token:
// decode, more: prompt). A batch's time counts for each of its contexts.
void count_eval(dsi_context *ctx, int64_t n_tokens, double ms);
}  // namespace dsi
