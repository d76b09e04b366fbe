// The weights of a DeepSeek-V3/V3.2 model, bound from a checkpoint onto a backend.
// Every tensor's dtype and shape is checked against the config before use.
#pragma once

#include "backend/backend.h"
#include "checkpoint/safetensors.h"
#include "model/config.h"

#include <functional>
#include <memory>
#include <vector>

namespace dsi {

struct IndexerWeights {
    std::unique_ptr<Matrix> wq_b;          // [index_heads*index_dim, q_lora_rank]
    std::unique_ptr<Matrix> wk;            // [index_dim, hidden]
    Buffer k_norm_weight, k_norm_bias;     // [index_dim] LayerNorm
    std::unique_ptr<Matrix> weights_proj;  // [index_heads, hidden]
};

struct MoeWeights {
    std::unique_ptr<Matrix> gate;          // router [n_experts, hidden]
    Buffer correction_bias;                // [n_experts] e_score_correction_bias
    std::vector<std::unique_ptr<Matrix>> expert_matrices;  // 3 per expert: gate, up, down
    std::vector<MlpWeights> experts;       // [n_experts]
    std::vector<std::unique_ptr<Matrix>> shared_matrices;
    MlpWeights shared;                     // intermediate moe_intermediate_size * n_shared
};

struct LayerWeights {
    Buffer input_norm, post_attention_norm;  // [hidden]
    // MLA
    std::unique_ptr<Matrix> q_a;            // [q_lora_rank, hidden]     (q_lora_rank > 0)
    Buffer q_a_norm;                        // [q_lora_rank]
    std::unique_ptr<Matrix> q_b;            // [heads*qk_head_dim, q_lora_rank]
    std::unique_ptr<Matrix> q_proj;         // [heads*qk_head_dim, hidden] (q_lora_rank == 0)
    std::unique_ptr<Matrix> kv_a;           // [kv_lora_rank + rope_dim, hidden]
    Buffer kv_a_norm;                       // [kv_lora_rank]
    std::unique_ptr<Matrix> kv_b;           // [heads*(nope+v), kv_lora_rank]
    std::unique_ptr<Matrix> o;              // [hidden, heads*v]
    std::unique_ptr<IndexerWeights> indexer;  // NULL for dense models
    // MLP: dense for the leading layers, MoE after
    std::vector<std::unique_ptr<Matrix>> dense_matrices;
    MlpWeights dense;
    std::unique_ptr<MoeWeights> moe;
};

struct ModelWeights {
    std::unique_ptr<Matrix> embed;          // [vocab, hidden]
    std::vector<LayerWeights> layers;
    Buffer final_norm;                      // [hidden]
    std::unique_ptr<Matrix> lm_head;        // [vocab, hidden]
    // Of the distinct checkpoint tensors bound: elements (without FP8 scales) and bytes
    // (with them).
    int64_t n_params = 0;
    int64_t bytes = 0;
};

// Binds every tensor the forward pass uses; tensors it does not use (an MTP layer,
// extra buffers) are ignored. `progress(fraction)` is called per layer and returns
// false to cancel (DSI_ERR_CANCELLED). Throws DSI_ERR_CHECKPOINT naming the tensor.
ModelWeights load_weights(const ModelConfig &cfg, const Checkpoint &ckpt, Backend &backend,
                          const std::function<bool(float)> &progress);

}  // namespace dsi
