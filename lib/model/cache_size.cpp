#include "model/cache_size.h"

namespace dsi {

int64_t cache_bytes(const ModelConfig &c, int64_t n_ctx) {
    const int64_t per_layer = c.kv_lora_rank + c.qk_rope_head_dim + (c.is_sparse() ? c.index_head_dim : 0);
    const int64_t rope_tables = c.qk_rope_head_dim;  // cos and sin, half the rope dims each
    return n_ctx * (c.num_hidden_layers * per_layer + rope_tables) * static_cast<int64_t>(sizeof(float));
}

int64_t allocated_bytes(const KvCache &cache) {
    size_t bytes = cache.rope_cos.bytes() + cache.rope_sin.bytes();
    for (const LayerCache &l : cache.layers) bytes += l.latent.bytes() + l.k_rope.bytes() + l.index_keys.bytes();
    return static_cast<int64_t>(bytes);
}

}  // namespace dsi
