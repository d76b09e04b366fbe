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
}  // namespace dsi
