// Internal facts about a context that the public API does not expose, for other parts
// of the library (the sampler needs the vocabulary size of ctx's logits).
#pragma once

#include "dsinfer.h"

#include <cstdint>

namespace dsi {
int32_t context_n_vocab(const dsi_context *ctx);
}  // namespace dsi
