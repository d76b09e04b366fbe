// config.json of a DeepSeek-V3 / V3.1 / V3.2 checkpoint, validated.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dsi {

struct RopeConfig {
    std::string type = "default";      // "default" or "yarn"
    double theta = 10000.0;            // rope_theta
    double factor = 1.0;               // as written in the file
    int64_t original_max_position_embeddings = 0;  // 0 = absent
    double beta_fast = 32.0;
    double beta_slow = 1.0;
    double mscale = 0.0;               // 0 = absent
    double mscale_all_dim = 0.0;       // 0 = absent
    double attention_factor = 0.0;     // 0 = absent (derived as Hugging Face does)
    bool truncate = true;
};

struct ModelConfig {
    std::string architecture;          // DeepseekV32ForCausalLM, DeepseekV3ForCausalLM
    std::string model_type;            // deepseek_v32, deepseek_v3

    int64_t vocab_size = 0;
    int64_t hidden_size = 0;
    int64_t intermediate_size = 0;     // dense MLP of the leading layers
    int64_t moe_intermediate_size = 0;
    int64_t num_hidden_layers = 0;
    int64_t first_k_dense_replace = 0;
    int64_t num_nextn_predict_layers = 0;  // MTP layers stored after the main ones (skipped)

    // MLA
    int64_t num_attention_heads = 0;
    int64_t q_lora_rank = 0;           // 0 = no q compression (q_proj)
    int64_t kv_lora_rank = 0;
    int64_t qk_nope_head_dim = 0;
    int64_t qk_rope_head_dim = 0;
    int64_t v_head_dim = 0;

    // DSA lightning indexer; index_topk == 0 means a dense model (no indexer)
    int64_t index_n_heads = 0;
    int64_t index_head_dim = 0;
    int64_t index_topk = 0;

    // MoE
    int64_t n_routed_experts = 0;
    int64_t n_shared_experts = 0;
    int64_t num_experts_per_tok = 0;
    int64_t n_group = 1;
    int64_t topk_group = 1;
    double routed_scaling_factor = 1.0;
    bool norm_topk_prob = true;

    int64_t max_position_embeddings = 0;
    double rms_norm_eps = 1e-6;
    RopeConfig rope;
    int64_t bos_token_id = -1;
    int64_t eos_token_id = -1;
    std::vector<int64_t> eos_token_ids;  // all of eos_token_id when it is a list

    bool tie_word_embeddings = false;

    // quantization_config: FP8 e4m3 with block scales
    bool fp8 = false;
    int64_t fp8_block_rows = 128;
    int64_t fp8_block_cols = 128;

    bool is_sparse() const { return index_topk > 0; }
    bool layer_is_moe(int64_t layer) const {
        return n_routed_experts > 0 && layer >= first_k_dense_replace;
    }
    int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
};

// Parses and validates config.json text. `path` is used in messages. Throws
// DSI_ERR_FORMAT (malformed JSON, wrong value type) or DSI_ERR_CONFIG (unknown
// architecture, unknown key, missing or inconsistent value), naming the key.
ModelConfig parse_config(const std::string &json_text, const std::string &path);

// Reads <dir>/config.json (DSI_ERR_IO if absent) and parses it.
ModelConfig load_config(const std::string &dir);

}  // namespace dsi
