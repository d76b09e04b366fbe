#include "model/weights.h"

#include "common/error.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <set>
#include <vector>

namespace dsi {

namespace {

bool is_float_dtype(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

std::string shape_of(std::initializer_list<int64_t> dims) {
    std::string s = "[";
    for (int64_t d : dims) s += (s.size() > 1 ? ", " : "") + std::to_string(d);
    return s + "]";
}

class Binder {
public:
    Binder(const ModelConfig &cfg, const Checkpoint &ckpt, Backend &backend)
        : cfg_(cfg), ckpt_(ckpt), backend_(backend) {}

    // A [rows, cols] matrix: float dtype, or F8_E4M3 with its weight_scale_inv.
    std::unique_ptr<Matrix> matrix(const std::string &name, int64_t rows, int64_t cols) {
        const TensorInfo &w = ckpt_.get(name);
        const bool first_use = used_.insert(name).second;  // a tied lm_head binds the embedding again
        check_shape(w, {rows, cols});
        if (first_use) count(w, true);
        MatrixSource src;
        src.weight = &w;
        src.block_rows = cfg_.fp8_block_rows;
        src.block_cols = cfg_.fp8_block_cols;
        if (w.dtype == DType::F8_E4M3) {
            src.scale_inv = &scale_for(name, w, rows, cols);
            if (first_use) count(*src.scale_inv, false);
        } else if (!is_float_dtype(w.dtype)) {
            fail(DSI_ERR_CHECKPOINT, "tensor '%s' in %s has dtype %s; expected BF16, F16, F32 or F8_E4M3",
                 name.c_str(), w.file.c_str(), dtype_name(w.dtype));
        }
        return backend_.prepare_matrix(src);
    }

    Buffer vector(const std::string &name, int64_t n) {
        const TensorInfo &t = ckpt_.get(name);
        if (!is_float_dtype(t.dtype))
            fail(DSI_ERR_CHECKPOINT, "tensor '%s' in %s has dtype %s; expected BF16, F16 or F32", name.c_str(),
                 t.file.c_str(), dtype_name(t.dtype));
        check_shape(t, {n});
        if (used_.insert(name).second) count(t, true);
        check_finite(t);
        return backend_.prepare_vector(t);
    }

    // Names of the tensors bound so far.
    const std::set<std::string> &used() const { return used_; }

    int64_t n_params() const { return n_params_; }
    int64_t bytes() const { return bytes_; }

    MlpWeights mlp(const std::string &prefix, int64_t inter, std::vector<std::unique_ptr<Matrix>> &owner) {
        const int64_t hidden = cfg_.hidden_size;
        owner.push_back(matrix(prefix + ".gate_proj.weight", inter, hidden));
        owner.push_back(matrix(prefix + ".up_proj.weight", inter, hidden));
        owner.push_back(matrix(prefix + ".down_proj.weight", hidden, inter));
        const size_t n = owner.size();
        return MlpWeights{owner[n - 3].get(), owner[n - 2].get(), owner[n - 1].get()};
    }

private:
    // Elements (of weights, not of FP8 scales) and bytes of a tensor bound for the first time.
    void count(const TensorInfo &t, bool is_param) {
        if (is_param) n_params_ += t.numel();
        bytes_ += static_cast<int64_t>(t.nbytes);
    }

    // Norm weights, biases and e_score_correction_bias are small: a NaN or inf there is
    // checked on load rather than found as NaN logits (or arbitrary routing) later.
    static void check_finite(const TensorInfo &t) {
        std::vector<float> v(static_cast<size_t>(t.numel()));
        convert_to_float(t, 0, t.numel(), v.data());
        for (size_t i = 0; i < v.size(); ++i)
            if (!std::isfinite(v[i]))
                fail(DSI_ERR_CHECKPOINT, "tensor '%s' in %s has the non-finite value %g at element %zu", t.name.c_str(),
                     t.file.c_str(), static_cast<double>(v[i]), i);
    }

    void check_shape(const TensorInfo &t, std::initializer_list<int64_t> dims) {
        if (t.shape != std::vector<int64_t>(dims))
            fail(DSI_ERR_CHECKPOINT, "tensor '%s' in %s has shape %s; the config implies %s", t.name.c_str(),
                 t.file.c_str(), t.shape_str().c_str(), shape_of(dims).c_str());
    }

    const TensorInfo &scale_for(const std::string &name, const TensorInfo &w, int64_t rows, int64_t cols) {
        const std::string sname = name + "_scale_inv";
        const TensorInfo *s = ckpt_.find(sname);
        used_.insert(sname);
        if (!s)
            fail(DSI_ERR_CHECKPOINT, "FP8 tensor '%s' in %s has no block scales '%s'", name.c_str(), w.file.c_str(),
                 sname.c_str());
        const int64_t br = cfg_.fp8_block_rows, bc = cfg_.fp8_block_cols;
        if (s->dtype != DType::F32)
            fail(DSI_ERR_CHECKPOINT, "tensor '%s' in %s has dtype %s; expected F32", sname.c_str(), s->file.c_str(),
                 dtype_name(s->dtype));
        check_shape(*s, {(rows + br - 1) / br, (cols + bc - 1) / bc});
        for (int64_t i = 0; i < s->numel(); ++i) {
            float v;  // memcpy: safetensors data need not be aligned for a float load
            std::memcpy(&v, s->data + i * sizeof(float), sizeof v);
            if (!std::isfinite(v) || v < 0.0f)
                fail(DSI_ERR_CHECKPOINT, "tensor '%s' in %s has an invalid scale %g at element %lld", sname.c_str(),
                     s->file.c_str(), static_cast<double>(v), static_cast<long long>(i));
        }
        return *s;
    }

    const ModelConfig &cfg_;
    const Checkpoint &ckpt_;
    Backend &backend_;
    std::set<std::string> used_;
    int64_t n_params_ = 0, bytes_ = 0;
};

// A checkpoint tensor the config gives no use to means the config does not describe the
// checkpoint (fewer layers, experts or shared experts than it holds, a dense config for
// a sparse model...), which would otherwise run and answer wrongly without a word.
// Allowed: layers after the main ones up to num_nextn_predict_layers (the MTP layer of
// the released checkpoint), tensors outside model.layers, and RoPE inv_freq buffers.
void check_all_used(const ModelConfig &cfg, const Checkpoint &ckpt, const std::set<std::string> &used) {
    static const std::string kLayers = "model.layers.";
    for (const std::string &name : ckpt.names()) {
        if (used.count(name) || name.compare(0, kLayers.size(), kLayers) != 0) continue;
        if (name.size() >= 20 && name.compare(name.size() - 20, 20, "rotary_emb.inv_freq") == 0) continue;
        const char *digits = name.c_str() + kLayers.size();
        char *end = nullptr;
        const unsigned long long layer = std::strtoull(digits, &end, 10);
        const TensorInfo &t = ckpt.get(name);
        if (end == digits || *end != '.')
            fail(DSI_ERR_CHECKPOINT, "tensor '%s' in %s has no layer number after 'model.layers.'", name.c_str(),
                 t.file.c_str());
        const unsigned long long main_layers = static_cast<unsigned long long>(cfg.num_hidden_layers);
        if (layer >= main_layers) {
            if (layer < main_layers + static_cast<unsigned long long>(cfg.num_nextn_predict_layers)) continue;
            fail(DSI_ERR_CHECKPOINT,
                 "tensor '%s' in %s belongs to layer %llu, but the config has num_hidden_layers %lld and "
                 "num_nextn_predict_layers %lld: the config does not describe this checkpoint",
                 name.c_str(), t.file.c_str(), layer, (long long)cfg.num_hidden_layers,
                 (long long)cfg.num_nextn_predict_layers);
        }
        fail(DSI_ERR_CHECKPOINT,
             "tensor '%s' in %s is not used by the model the config describes (check n_routed_experts, "
             "n_shared_experts, q_lora_rank, the index_* keys and first_k_dense_replace)",
             name.c_str(), t.file.c_str());
    }
}

void bind_attention(const ModelConfig &cfg, Binder &b, const std::string &p, LayerWeights &lw) {
    const int64_t H = cfg.hidden_size, heads = cfg.num_attention_heads;
    if (cfg.q_lora_rank > 0) {
        lw.q_a = b.matrix(p + "q_a_proj.weight", cfg.q_lora_rank, H);
        lw.q_a_norm = b.vector(p + "q_a_layernorm.weight", cfg.q_lora_rank);
        lw.q_b = b.matrix(p + "q_b_proj.weight", heads * cfg.qk_head_dim(), cfg.q_lora_rank);
    } else {
        lw.q_proj = b.matrix(p + "q_proj.weight", heads * cfg.qk_head_dim(), H);
    }
    lw.kv_a = b.matrix(p + "kv_a_proj_with_mqa.weight", cfg.kv_lora_rank + cfg.qk_rope_head_dim, H);
    lw.kv_a_norm = b.vector(p + "kv_a_layernorm.weight", cfg.kv_lora_rank);
    lw.kv_b = b.matrix(p + "kv_b_proj.weight", heads * (cfg.qk_nope_head_dim + cfg.v_head_dim), cfg.kv_lora_rank);
    lw.o = b.matrix(p + "o_proj.weight", H, heads * cfg.v_head_dim);
    if (!cfg.is_sparse()) return;
    auto ix = std::make_unique<IndexerWeights>();
    const std::string q = p + "indexer.";
    ix->wq_b = b.matrix(q + "wq_b.weight", cfg.index_n_heads * cfg.index_head_dim, cfg.q_lora_rank);
    ix->wk = b.matrix(q + "wk.weight", cfg.index_head_dim, H);
    ix->k_norm_weight = b.vector(q + "k_norm.weight", cfg.index_head_dim);
    ix->k_norm_bias = b.vector(q + "k_norm.bias", cfg.index_head_dim);
    ix->weights_proj = b.matrix(q + "weights_proj.weight", cfg.index_n_heads, H);
    lw.indexer = std::move(ix);
}

void bind_mlp(const ModelConfig &cfg, Binder &b, int64_t layer, const std::string &p, LayerWeights &lw) {
    if (!cfg.layer_is_moe(layer)) {
        lw.dense = b.mlp(p + "mlp", cfg.intermediate_size, lw.dense_matrices);
        return;
    }
    auto moe = std::make_unique<MoeWeights>();
    moe->gate = b.matrix(p + "mlp.gate.weight", cfg.n_routed_experts, cfg.hidden_size);
    moe->correction_bias = b.vector(p + "mlp.gate.e_score_correction_bias", cfg.n_routed_experts);
    for (int64_t e = 0; e < cfg.n_routed_experts; ++e)
        moe->experts.push_back(b.mlp(p + "mlp.experts." + std::to_string(e), cfg.moe_intermediate_size,
                                     moe->expert_matrices));
    if (cfg.n_shared_experts > 0)
        moe->shared = b.mlp(p + "mlp.shared_experts", cfg.moe_intermediate_size * cfg.n_shared_experts,
                            moe->shared_matrices);
    lw.moe = std::move(moe);
}

}  // namespace

ModelWeights load_weights(const ModelConfig &cfg, const Checkpoint &ckpt, Backend &backend,
                          const std::function<bool(float)> &progress) {
    Binder b(cfg, ckpt, backend);
    ModelWeights w;
    w.embed = b.matrix("model.embed_tokens.weight", cfg.vocab_size, cfg.hidden_size);
    const int64_t L = cfg.num_hidden_layers;
    w.layers.resize(static_cast<size_t>(L));
    for (int64_t l = 0; l < L; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        LayerWeights &lw = w.layers[static_cast<size_t>(l)];
        lw.input_norm = b.vector(p + "input_layernorm.weight", cfg.hidden_size);
        lw.post_attention_norm = b.vector(p + "post_attention_layernorm.weight", cfg.hidden_size);
        bind_attention(cfg, b, p + "self_attn.", lw);
        bind_mlp(cfg, b, l, p, lw);
        if (progress && !progress(static_cast<float>(l + 1) / static_cast<float>(L + 1)))
            fail(DSI_ERR_CANCELLED, "loading cancelled by the progress callback");
    }
    w.final_norm = b.vector("model.norm.weight", cfg.hidden_size);
    const bool tied = cfg.tie_word_embeddings && !ckpt.find("lm_head.weight");
    w.lm_head = b.matrix(tied ? "model.embed_tokens.weight" : "lm_head.weight", cfg.vocab_size, cfg.hidden_size);
    w.n_params = b.n_params();
    w.bytes = b.bytes();
    check_all_used(cfg, ckpt, b.used());
    return w;
}

}  // namespace dsi
