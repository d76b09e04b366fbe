// What a context's caches cost, from the config alone, so that the API can answer before
// any cache exists (dsi_session_cache_bytes) and check what make_cache allocated.
#pragma once

#include "model/config.h"
#include "model/model.h"

#include <cstdint>

namespace dsi {

// Bytes make_cache(m, n_ctx) allocates: per layer the MLA latent (kv_lora_rank), the rope
// key (qk_rope_head_dim) and, for DSA, the indexer key (index_head_dim), plus the rope
// cos/sin tables (qk_rope_head_dim / 2 each), all float32 per position.
int64_t cache_bytes(const ModelConfig &c, int64_t n_ctx);

// Bytes the buffers of `cache` actually hold.
int64_t allocated_bytes(const KvCache &cache);

}  // namespace dsi
