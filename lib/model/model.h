// A loaded DeepSeek-V3/V3.2 model (immutable; shared by every context of a session),
// the per-context caches, and the forward pass.
#pragma once

#include "backend/backend.h"
#include "checkpoint/safetensors.h"
#include "model/config.h"
#include "model/weights.h"

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace dsi {

struct Model {
    ModelConfig cfg;
    std::unique_ptr<Checkpoint> checkpoint;  // owns the mapped files the weights point into
    std::unique_ptr<Backend> backend;
    ModelWeights weights;
    float mla_scale = 0.0f;                  // softmax scale incl. YaRN mscale^2
    float index_scale = 0.0f;                // index_head_dim^-0.5 (no mscale)
    float index_weight_scale = 0.0f;         // index_n_heads^-0.5
};

// Opens config + checkpoint from `dir` and binds the weights onto `backend`.
std::unique_ptr<Model> load_model(const std::string &dir, std::unique_ptr<Backend> backend,
                                  const std::function<bool(float)> &progress);

// What one context keeps per layer for tokens [0, n_ctx): the MLA latent after
// kv_a_layernorm, the rotated rope key, and the indexer's key (after k_norm + rope).
struct LayerCache {
    Buffer latent;      // [n_ctx, kv_lora_rank]
    Buffer k_rope;      // [n_ctx, qk_rope_head_dim]
    Buffer index_keys;  // [n_ctx, index_head_dim]; empty for dense models
};

struct KvCache {
    int64_t n_ctx = 0;
    std::vector<LayerCache> layers;
    Buffer rope_cos, rope_sin;  // [n_ctx, qk_rope_head_dim/2]
    RopeTable rope;
};

KvCache make_cache(const Model &m, int64_t n_ctx);

// Receives intermediate results (host memory, valid during the call). Used by tests
// and debugging tools; the forward downloads them only when an observer is given.
class ForwardObserver {
public:
    virtual ~ForwardObserver() = default;
    virtual void embedding(const float *x, int64_t tokens, int64_t hidden) {}
    virtual void layer_output(int64_t layer, const float *x, int64_t tokens, int64_t hidden) {}
    // Row t lists count[t] selected positions (ascending) of query first_pos + t.
    virtual void indexer_selection(int64_t layer, const int32_t *select, const int32_t *count,
                                   int64_t tokens, int64_t stride) {}
    virtual void experts(int64_t layer, const int32_t *ids, int64_t tokens, int64_t top_k) {}
    virtual void final_norm(const float *x, int64_t tokens, int64_t hidden) {}
};

struct ForwardRequest {
    const int32_t *ids = nullptr;    // host, validated ids
    int64_t tokens = 0;
    int64_t first_pos = 0;           // position of ids[0]; caches hold [0, first_pos)
    bool all_logits = false;         // logits of every token, else of the last only
    float *logits = nullptr;         // host [all_logits ? tokens : 1, vocab]
    ForwardObserver *observer = nullptr;
    std::function<bool()> should_abort;  // polled between layers; true -> DSI_ERR_CANCELLED
};

// Runs the model over ids, appending their keys to the cache rows
// [first_pos, first_pos + tokens).
void forward(const Model &m, KvCache &cache, const ForwardRequest &r);

}  // namespace dsi
