#include "model/config.h"

#include "common/error.h"
#include "common/file.h"
#include "common/json_text.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <set>
#include <vector>

namespace dsi {

using json = nlohmann::json;

namespace {

// One JSON object of the config (the top level, rope_scaling, quantization_config...)
// with typed accessors. A null value counts as absent, as it does for Hugging Face.
// Wrong JSON types are DSI_ERR_FORMAT, bad values DSI_ERR_CONFIG; both name the key
// (prefixed with its parent, e.g. 'rope_scaling.factor') and the file.
class Obj {
public:
    Obj(const json &j, const std::string &path, std::string prefix = "")
        : j_(j), path_(path), prefix_(std::move(prefix)) {}

    const std::string &path() const { return path_; }
    std::string name(const std::string &key) const { return prefix_ + key; }

    const json *get(const std::string &key) const {
        auto it = j_.find(key);
        return it == j_.end() || it->is_null() ? nullptr : &*it;
    }
    bool has(const std::string &key) const { return get(key) != nullptr; }
    bool present(const std::string &key) const { return j_.contains(key); }

    [[noreturn]] void type_error(const std::string &key, const char *what) const {
        fail(DSI_ERR_FORMAT, "'%s' must be %s in %s", name(key).c_str(), what, path_.c_str());
    }
    [[noreturn]] void value_error(const std::string &key, const char *what) const {
        fail(DSI_ERR_CONFIG, "'%s' must be %s in %s", name(key).c_str(), what, path_.c_str());
    }
    [[noreturn]] void unsupported(const std::string &key, const std::string &why) const {
        fail(DSI_ERR_UNSUPPORTED, "'%s' %s in %s: not supported by dsinfer", name(key).c_str(), why.c_str(),
             path_.c_str());
    }
    [[noreturn]] void missing(const std::string &key) const {
        fail(DSI_ERR_CONFIG, "missing required key '%s' in %s", name(key).c_str(), path_.c_str());
    }

    void only_keys(const std::set<std::string> &allowed) const {
        for (auto it = j_.begin(); it != j_.end(); ++it)
            if (!allowed.count(it.key()))
                fail(DSI_ERR_CONFIG, "unknown key '%s' in %s", name(it.key()).c_str(), path_.c_str());
    }

    std::optional<int64_t> int_(const std::string &key, const char *what = "an integer") const {
        const json *v = get(key);
        if (!v) return std::nullopt;
        if (!v->is_number_integer()) type_error(key, what);
        if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
            value_error(key, what);
        return v->get<int64_t>();
    }
    // Absent -> def; present -> must be >= min.
    int64_t int_min(const std::string &key, int64_t min, int64_t def) const {
        const char *what = min > 0 ? "a positive integer" : "a non-negative integer";
        std::optional<int64_t> v = int_(key, what);
        if (!v) return def;
        if (*v < min) value_error(key, what);
        return *v;
    }
    int64_t required_int(const std::string &key, int64_t min) const {
        if (!has(key)) missing(key);
        return int_min(key, min, 0);
    }
    // A value already read that must not exceed `max` (what the engine can address).
    void at_most(const std::string &key, int64_t value, int64_t max) const {
        if (value > max)
            fail(DSI_ERR_CONFIG, "'%s' is %lld, more than the %lld dsinfer supports, in %s", name(key).c_str(),
                 (long long)value, (long long)max, path_.c_str());
    }

    std::optional<double> num(const std::string &key) const {
        const json *v = get(key);
        if (!v) return std::nullopt;
        if (!v->is_number()) type_error(key, "a number");
        return v->get<double>();
    }
    double positive_num(const std::string &key, double def) const {
        std::optional<double> v = num(key);
        if (!v) return def;
        if (!(*v > 0) || !std::isfinite(*v)) value_error(key, "a positive number");
        return *v;
    }
    double required_positive_num(const std::string &key) const {
        if (!has(key)) missing(key);
        return positive_num(key, 0);
    }

    std::optional<bool> bool_(const std::string &key) const {
        const json *v = get(key);
        if (!v) return std::nullopt;
        if (!v->is_boolean()) type_error(key, "true or false");
        return v->get<bool>();
    }

    std::optional<std::string> str(const std::string &key) const {
        const json *v = get(key);
        if (!v) return std::nullopt;
        if (!v->is_string()) type_error(key, "a string");
        return v->get<std::string>();
    }

    // A key whose only value we implement; absent is accepted as that value.
    void require_str(const std::string &key, const std::set<std::string> &ok) const {
        std::optional<std::string> v = str(key);
        if (v && !ok.count(*v)) unsupported(key, "is \"" + *v + "\"");
    }
    // A key whose value makes this another model than DeepSeek-V3/V3.2 (DeepSeek-V2's
    // softmax or greedy routing, another activation): DSI_ERR_CONFIG naming key and value.
    void require_v3_str(const std::string &key, const char *v3_value) const {
        std::optional<std::string> v = str(key);
        if (v && *v != v3_value)
            fail(DSI_ERR_CONFIG, "'%s' is \"%s\" in %s: DeepSeek-V3/V3.2 has \"%s\"; this is not a DeepSeek-V3 model",
                 name(key).c_str(), v->c_str(), path_.c_str(), v3_value);
    }
    void require_bool(const std::string &key, bool ok) const {
        std::optional<bool> v = bool_(key);
        if (v && *v != ok) unsupported(key, *v ? "is true" : "is false");
    }

    // Accepted for compatibility but unused: still type-checked so garbage is caught.
    enum class Kind { Int, Number, Bool, String, Object };
    void ignored(const std::string &key, Kind kind) const {
        switch (kind) {
            case Kind::Int:
                int_(key);
                break;
            case Kind::Number:
                num(key);
                break;
            case Kind::Bool:
                bool_(key);
                break;
            case Kind::String:
                str(key);
                break;
            case Kind::Object:
                if (const json *v = get(key); v && !v->is_object()) type_error(key, "an object");
                break;
        }
    }

    // An optional array of strings.
    std::optional<std::vector<std::string>> strings(const std::string &key) const {
        const json *v = get(key);
        if (!v) return std::nullopt;
        if (!v->is_array()) type_error(key, "an array of strings");
        std::vector<std::string> out;
        for (const json &e : *v) {
            if (!e.is_string()) type_error(key, "an array of strings");
            out.push_back(e.get<std::string>());
        }
        return out;
    }

    Obj child(const std::string &key) const {
        const json *v = get(key);
        if (!v->is_object()) type_error(key, "an object");
        return Obj(*v, path_, name(key) + ".");
    }

private:
    const json &j_;
    const std::string &path_;
    std::string prefix_;
};

// ---- keys --------------------------------------------------------------------------
//
// Every key of the released config.json of deepseek-ai/DeepSeek-V3, V3.1, V3.2-Exp and
// V3.2, and of transformers' DeepseekV3Config / DeepseekV32Config (what save_pretrained
// writes), is listed. Anything else is an error: a key we do not know may change the
// model in a way we would silently ignore.
const std::set<std::string> kTopLevelKeys = {
    // read into ModelConfig
    "architectures",
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "moe_intermediate_size",
    "num_hidden_layers",
    "first_k_dense_replace",
    "moe_layer_freq",
    "num_nextn_predict_layers",
    "num_attention_heads",
    "q_lora_rank",
    "kv_lora_rank",
    "qk_nope_head_dim",
    "qk_rope_head_dim",
    "v_head_dim",
    "index_n_heads",
    "index_head_dim",
    "index_topk",
    "n_routed_experts",
    "n_shared_experts",
    "num_experts_per_tok",
    "n_group",
    "topk_group",
    "routed_scaling_factor",
    "norm_topk_prob",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "bos_token_id",
    "eos_token_id",
    "tie_word_embeddings",
    "quantization_config",
    // checked against the one behaviour we implement
    "topk_method",
    "scoring_func",
    "hidden_act",
    "attention_bias",
    "mlp_bias",
    "rope_interleave",
    "qk_head_dim",
    "mlp_layer_types",
    "layer_types",
    // ignored: training-only (initializer_range, ep_size, aux_loss_alpha, seq_aux,
    // attention_dropout, pretraining_tp), runtime hints (use_cache, torch_dtype, dtype:
    // tensor dtypes come from the safetensors headers), bookkeeping (auto_map,
    // transformers_version, _name_or_path), GQA/RoPE aliases that MLA does not use
    // (num_key_value_heads, head_dim), and pad_token_id (nothing is padded).
    "initializer_range",
    "ep_size",
    "aux_loss_alpha",
    "seq_aux",
    "attention_dropout",
    "pretraining_tp",
    "use_cache",
    "torch_dtype",
    "dtype",
    "auto_map",
    "transformers_version",
    "_name_or_path",
    "num_key_value_heads",
    "head_dim",
    "pad_token_id",
};

// Legacy rope_scaling and the newer rope_parameters share these; "type" is the legacy
// spelling of "rope_type", and rope_theta moved inside in the newer form.
const std::set<std::string> kRopeKeys = {
    "type",      "rope_type", "rope_theta", "factor",         "original_max_position_embeddings",
    "beta_fast", "beta_slow", "mscale",     "mscale_all_dim", "attention_factor",
    "truncate",
};

// DeepSeek's released files write fmt/scale_fmt; transformers' FineGrainedFP8Config
// writes modules_to_not_convert/dequantize (which tensors are FP8 is read from the
// checkpoint's dtypes, so both are ignored).
const std::set<std::string> kQuantKeys = {
    "quant_method",           "fmt",        "activation_scheme", "weight_block_size", "scale_fmt",
    "modules_to_not_convert", "dequantize",
};

// ---- architecture ------------------------------------------------------------------

void parse_architecture(const Obj &o, ModelConfig &c) {
    const json *a = o.get("architectures");
    if (!a) o.missing("architectures");
    if (!a->is_array() || a->empty() || !(*a)[0].is_string())
        o.type_error("architectures", "a non-empty array of strings");
    c.architecture = (*a)[0].get<std::string>();
    std::string expected_type;
    if (c.architecture == "DeepseekV32ForCausalLM")
        expected_type = "deepseek_v32";
    else if (c.architecture == "DeepseekV3ForCausalLM")
        expected_type = "deepseek_v3";
    else
        fail(DSI_ERR_CONFIG,
             "unknown architecture '%s' in %s (expected DeepseekV32ForCausalLM or "
             "DeepseekV3ForCausalLM)",
             c.architecture.c_str(), o.path().c_str());

    c.model_type = o.str("model_type").value_or(expected_type);
    if (c.model_type != expected_type)
        fail(DSI_ERR_CONFIG, "model_type '%s' does not match architecture %s (expected '%s') in %s",
             c.model_type.c_str(), c.architecture.c_str(), expected_type.c_str(), o.path().c_str());
}

// ---- dimensions ----------------------------------------------------------------------

// Bounds that keep every size the engine computes from the config (products of two
// dimensions, times a token count and an element size) far from int64 overflow before
// the checkpoint's tensors confirm them; the released model is well inside each.
constexpr int64_t kMaxDim = int64_t(1) << 24;          // any width, rank or head count
constexpr int64_t kMaxLayers = 4096;
constexpr int64_t kMaxExperts = int64_t(1) << 16;
constexpr int64_t kMaxPositions = INT32_MAX;             // reported as int32 by the C API

void parse_dims(const Obj &o, ModelConfig &c) {
    c.vocab_size = o.required_int("vocab_size", 1);
    c.hidden_size = o.required_int("hidden_size", 1);
    c.intermediate_size = o.required_int("intermediate_size", 1);
    c.num_hidden_layers = o.required_int("num_hidden_layers", 1);
    c.max_position_embeddings = o.required_int("max_position_embeddings", 1);
    c.num_nextn_predict_layers = o.int_min("num_nextn_predict_layers", 0, 0);
    c.rms_norm_eps = o.positive_num("rms_norm_eps", c.rms_norm_eps);
    // eps is added to a mean of squares in float32: it must stay a small positive float.
    if (c.rms_norm_eps > 1.0 || static_cast<float>(c.rms_norm_eps) == 0.0f)
        o.value_error("rms_norm_eps", "in (0, 1] and representable as a float32 (e.g. 1e-6)");
    c.tie_word_embeddings = o.bool_("tie_word_embeddings").value_or(false);

    // MLA. q_lora_rank null (or 0) means q is projected directly by q_proj.
    c.num_attention_heads = o.required_int("num_attention_heads", 1);
    c.q_lora_rank = o.int_min("q_lora_rank", 0, 0);
    c.kv_lora_rank = o.required_int("kv_lora_rank", 1);
    c.qk_nope_head_dim = o.required_int("qk_nope_head_dim", 1);
    c.qk_rope_head_dim = o.required_int("qk_rope_head_dim", 1);
    c.v_head_dim = o.required_int("v_head_dim", 1);
    if (c.qk_rope_head_dim % 2 != 0) o.value_error("qk_rope_head_dim", "even (RoPE rotates pairs)");
    if (std::optional<int64_t> qk = o.int_("qk_head_dim"); qk && *qk != c.qk_head_dim())
        o.value_error("qk_head_dim", "qk_nope_head_dim + qk_rope_head_dim");

    for (const char *key : {"vocab_size", "hidden_size", "intermediate_size", "q_lora_rank", "kv_lora_rank",
                            "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "num_attention_heads"})
        if (o.has(key)) o.at_most(key, *o.int_(key), kMaxDim);
    o.at_most("num_hidden_layers", c.num_hidden_layers, kMaxLayers);
    o.at_most("num_nextn_predict_layers", c.num_nextn_predict_layers, kMaxLayers);
    o.at_most("max_position_embeddings", c.max_position_embeddings, kMaxPositions);

    if (c.bos_token_id = o.int_min("bos_token_id", 0, -1); c.bos_token_id >= c.vocab_size)
        o.value_error("bos_token_id", "less than vocab_size");
}

// eos_token_id may be one id or (as transformers allows) a list; the first is the
// end-of-sequence token.
void parse_eos(const Obj &o, ModelConfig &c) {
    const json *v = o.get("eos_token_id");
    if (!v) return;
    const char *what = "a token id or a non-empty array of token ids";
    const std::vector<json> ids =
        v->is_array() ? std::vector<json>(v->begin(), v->end()) : std::vector<json>{*v};
    if (ids.empty()) o.type_error("eos_token_id", what);
    for (const json &id : ids) {
        if (!id.is_number_integer()) o.type_error("eos_token_id", what);
        // a huge unsigned value reads back negative and is refused here too
        if (id.get<int64_t>() < 0 || id.get<int64_t>() >= c.vocab_size)
            o.value_error("eos_token_id", "a token id below vocab_size");
    }
    c.eos_token_id = ids[0].get<int64_t>();
    for (const json &id : ids)
        if (std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), id.get<int64_t>()) == c.eos_token_ids.end())
            c.eos_token_ids.push_back(id.get<int64_t>());
}

// The lightning indexer belongs to V3.2 only: DeepseekV32ForCausalLM needs all three
// index_* keys and DeepseekV3ForCausalLM must have none.
void parse_indexer(const Obj &o, ModelConfig &c) {
    const bool v32 = c.architecture == "DeepseekV32ForCausalLM";
    for (const char *key : {"index_topk", "index_n_heads", "index_head_dim"}) {
        if (v32 && !o.has(key)) o.missing(key);
        if (!v32 && o.has(key))
            fail(DSI_ERR_CONFIG, "'%s' in %s: only DeepseekV32ForCausalLM has an indexer", key,
                 o.path().c_str());
    }
    if (!v32) return;
    // DeepSeek-V3.2's indexer reads the normalised q latent: there is no q_proj variant.
    if (c.q_lora_rank == 0)
        fail(DSI_ERR_CONFIG, "'q_lora_rank' is %s in %s: DeepseekV32ForCausalLM needs a q latent (its indexer reads it)",
             o.has("q_lora_rank") ? "0" : "null", o.path().c_str());
    c.index_topk = o.required_int("index_topk", 1);
    c.index_n_heads = o.required_int("index_n_heads", 1);
    c.index_head_dim = o.required_int("index_head_dim", 1);
    o.at_most("index_n_heads", c.index_n_heads, kMaxDim);
    o.at_most("index_head_dim", c.index_head_dim, kMaxDim);
    // Selecting more tokens than there are positions selects them all.
    o.at_most("index_topk", c.index_topk, c.max_position_embeddings);
    if (c.index_head_dim < c.qk_rope_head_dim)
        o.value_error("index_head_dim", "at least qk_rope_head_dim (it holds the rotated part)");
}

// Hugging Face and DeepSeek's own configuration_deepseek.py disagree on the defaults of
// the routing parameters, so a MoE model must state them.
void parse_moe(const Obj &o, ModelConfig &c) {
    if (!o.present("n_routed_experts")) o.missing("n_routed_experts");
    c.n_routed_experts = o.int_min("n_routed_experts", 0, 0);  // null: no MoE layers
    if (c.n_routed_experts > 0 && !o.has("first_k_dense_replace")) o.missing("first_k_dense_replace");
    c.first_k_dense_replace = o.int_min("first_k_dense_replace", 0, 0);
    // DeepSeek-V2's remote code made every moe_layer_freq-th layer MoE; V3's code (and
    // transformers' DeepseekV3) has no such key: any other value is another model.
    if (const int64_t freq = o.int_min("moe_layer_freq", 1, 1); freq != 1)
        fail(DSI_ERR_CONFIG,
             "'moe_layer_freq' is %lld in %s: DeepSeek-V3/V3.2 has 1 (every layer from first_k_dense_replace on "
             "is MoE); this is not a DeepSeek-V3 model",
             (long long)freq, o.path().c_str());
    if (c.first_k_dense_replace > c.num_hidden_layers)
        o.value_error("first_k_dense_replace", "at most num_hidden_layers");
    o.require_v3_str("topk_method", "noaux_tc");
    o.require_v3_str("scoring_func", "sigmoid");
    if (c.n_routed_experts == 0) return;

    c.moe_intermediate_size = o.required_int("moe_intermediate_size", 1);
    c.num_experts_per_tok = o.required_int("num_experts_per_tok", 1);
    if (!o.present("n_shared_experts")) o.missing("n_shared_experts");
    c.n_shared_experts = o.int_min("n_shared_experts", 0, 0);
    c.n_group = o.required_int("n_group", 1);
    c.topk_group = o.required_int("topk_group", 1);
    c.routed_scaling_factor = o.required_positive_num("routed_scaling_factor");
    o.at_most("n_routed_experts", c.n_routed_experts, kMaxExperts);
    o.at_most("moe_intermediate_size", c.moe_intermediate_size, kMaxDim);
    o.at_most("n_shared_experts", c.n_shared_experts, kMaxExperts);
    if (c.routed_scaling_factor > 1e6) o.value_error("routed_scaling_factor", "a positive number up to 1e6");
    c.norm_topk_prob = o.bool_("norm_topk_prob").value_or(true);

    if (c.n_routed_experts % c.n_group != 0) o.value_error("n_group", "a divisor of n_routed_experts");
    if (c.topk_group > c.n_group) o.value_error("topk_group", "at most n_group");
    if (c.num_experts_per_tok > c.n_routed_experts)
        o.value_error("num_experts_per_tok", "at most n_routed_experts");
    const int64_t per_group = c.n_routed_experts / c.n_group;
    // noaux_tc ranks a group by the sum of its two best experts.
    if (per_group < 2) o.value_error("n_group", "at most n_routed_experts / 2");
    if (c.num_experts_per_tok > c.topk_group * per_group)
        o.value_error("num_experts_per_tok", "at most topk_group * n_routed_experts / n_group");
}

// ---- per-layer lists written by newer transformers --------------------------------------

void check_layer_lists(const Obj &o, const ModelConfig &c) {
    if (auto mlp = o.strings("mlp_layer_types")) {
        if (int64_t(mlp->size()) != c.num_hidden_layers)
            o.value_error("mlp_layer_types", "one entry per hidden layer");
        for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
            const std::string &t = (*mlp)[size_t(l)];
            if (t != "dense" && t != "sparse")
                o.value_error("mlp_layer_types", "a list of \"dense\" and \"sparse\"");
            if ((t == "sparse") != c.layer_is_moe(l))
                o.unsupported("mlp_layer_types",
                              strformat("disagrees with first_k_dense_replace at layer %lld",
                                        (long long)l));
        }
    }
    if (auto lt = o.strings("layer_types")) {
        const char *want = c.is_sparse() ? "deepseek_sparse_attention" : "full_attention";
        if (int64_t(lt->size()) != c.num_hidden_layers)
            o.value_error("layer_types", "one entry per hidden layer");
        for (const std::string &t : *lt)
            if (t != want) o.unsupported("layer_types", "has \"" + t + "\" (expected \"" + want + "\")");
    }
}

// ---- RoPE --------------------------------------------------------------------------

bool same_rope(const RopeConfig &a, const RopeConfig &b) {
    return a.type == b.type && a.theta == b.theta && a.factor == b.factor &&
           a.original_max_position_embeddings == b.original_max_position_embeddings &&
           a.beta_fast == b.beta_fast && a.beta_slow == b.beta_slow && a.mscale == b.mscale &&
           a.mscale_all_dim == b.mscale_all_dim && a.attention_factor == b.attention_factor &&
           a.truncate == b.truncate;
}

std::string rope_type(const Obj &r) {
    std::optional<std::string> t = r.str("rope_type"), legacy = r.str("type");
    if (t && legacy && *t != *legacy) r.value_error("type", "equal to rope_type when both are given");
    if (!t && !legacy) r.missing("rope_type");
    return t ? *t : *legacy;
}

// One rope dict (either form). `theta` is the top-level rope_theta, if any.
RopeConfig parse_rope_dict(const Obj &r, std::optional<double> theta) {
    r.only_keys(kRopeKeys);
    RopeConfig rope;
    rope.type = rope_type(r);
    std::optional<double> inner = r.num("rope_theta");
    if (inner && theta && *inner != *theta)
        r.value_error("rope_theta", "equal to the top-level rope_theta when both are given");
    rope.theta = r.positive_num("rope_theta", theta.value_or(rope.theta));

    if (rope.type == "default") {
        for (const char *key : {"factor", "original_max_position_embeddings", "beta_fast", "beta_slow",
                                "mscale", "mscale_all_dim", "attention_factor", "truncate"})
            if (r.has(key))
                fail(DSI_ERR_CONFIG, "'%s' is not used by rope type 'default' in %s", r.name(key).c_str(),
                     r.path().c_str());
        return rope;
    }
    if (rope.type != "yarn") r.unsupported("rope_type", "is \"" + rope.type + "\" (only default and yarn)");

    rope.factor = r.required_positive_num("factor");
    if (rope.factor < 1) r.value_error("factor", "at least 1");
    rope.original_max_position_embeddings = r.int_min("original_max_position_embeddings", 1, 0);
    rope.beta_fast = r.positive_num("beta_fast", rope.beta_fast);
    rope.beta_slow = r.positive_num("beta_slow", rope.beta_slow);
    // 0 means absent for Hugging Face too (it tests `if mscale and mscale_all_dim`).
    const std::pair<const char *, double *> mscales[] = {{"mscale", &rope.mscale},
                                                         {"mscale_all_dim", &rope.mscale_all_dim}};
    for (const auto &[key, field] : mscales) {
        *field = r.num(key).value_or(0.0);
        if (*field < 0 || !std::isfinite(*field)) r.value_error(key, "a non-negative number");
    }
    rope.attention_factor = r.positive_num("attention_factor", 0.0);
    rope.truncate = r.bool_("truncate").value_or(true);
    return rope;
}

// Legacy form: rope_theta at the top level plus rope_scaling (absent or null = plain
// RoPE). Newer form: rope_parameters with rope_theta inside. Both may be present only if
// they describe the same RoPE.
RopeConfig parse_rope(const Obj &o) {
    std::optional<double> theta = o.num("rope_theta");
    if (theta && (!(*theta > 0) || !std::isfinite(*theta))) o.value_error("rope_theta", "a positive number");
    std::optional<RopeConfig> legacy, params;
    if (o.has("rope_scaling")) legacy = parse_rope_dict(o.child("rope_scaling"), theta);
    if (o.has("rope_parameters")) params = parse_rope_dict(o.child("rope_parameters"), theta);
    if (legacy && params && !same_rope(*legacy, *params))
        fail(DSI_ERR_CONFIG, "rope_scaling and rope_parameters disagree in %s", o.path().c_str());
    if (params) return *params;
    if (legacy) return *legacy;
    RopeConfig rope;
    rope.theta = theta.value_or(rope.theta);
    return rope;
}

// DeepSeek's inference code applies YaRN only when the context (max_position_embeddings
// here) exceeds original_max_position_embeddings; transformers applies it regardless,
// taking original = max_position_embeddings when the key is absent. Where the two would
// compute different models the config is refused (ARCHITECTURE.md, "Defined choices").
void check_yarn_range(const Obj &o, const ModelConfig &c) {
    if (c.rope.type != "yarn") return;
    const std::string key =
        std::string(o.has("rope_parameters") ? "rope_parameters" : "rope_scaling") + ".original_max_position_embeddings";
    const char *why = "DeepSeek's inference applies YaRN only when max_position_embeddings exceeds it, transformers "
                      "always, so the model is ambiguous";
    if (c.rope.original_max_position_embeddings == 0)
        fail(DSI_ERR_CONFIG, "missing required key '%s' in %s (YaRN): %s", key.c_str(), o.path().c_str(), why);
    if (c.rope.original_max_position_embeddings >= c.max_position_embeddings)
        fail(DSI_ERR_CONFIG, "'%s' is %lld, not below max_position_embeddings (%lld), in %s: %s", key.c_str(),
             (long long)c.rope.original_max_position_embeddings, (long long)c.max_position_embeddings,
             o.path().c_str(), why);
}

// ---- quantization ----------------------------------------------------------------------

// FP8 E4M3 weights with one float32 scale_inv per 128x128 block: the released format.
void parse_quant(const Obj &o, ModelConfig &c) {
    if (!o.has("quantization_config")) return;
    const Obj q = o.child("quantization_config");
    q.only_keys(kQuantKeys);
    std::optional<std::string> method = q.str("quant_method");
    if (!method) q.missing("quant_method");
    if (*method != "fp8") q.unsupported("quant_method", "is \"" + *method + "\" (only fp8)");
    q.require_str("fmt", {"e4m3"});
    q.require_str("activation_scheme", {"dynamic"});
    // ue8m0 scales are powers of two, still stored as float32: read like any other.
    q.require_str("scale_fmt", {"ue8m0"});
    q.ignored("dequantize", Obj::Kind::Bool);
    if (q.has("modules_to_not_convert")) q.strings("modules_to_not_convert");

    if (const json *bs = q.get("weight_block_size")) {
        if (!bs->is_array() || bs->size() != 2 || !(*bs)[0].is_number_integer() ||
            !(*bs)[1].is_number_integer())
            q.type_error("weight_block_size", "an array of two integers");
        c.fp8_block_rows = (*bs)[0].get<int64_t>();
        c.fp8_block_cols = (*bs)[1].get<int64_t>();
        if (c.fp8_block_rows != 128 || c.fp8_block_cols != 128)
            q.unsupported("weight_block_size", "is " + bs->dump() + " (only [128, 128])");
    }
    c.fp8 = true;
}

// Keys whose one implemented value we check, and the ignored ones' types.
void check_fixed_semantics(const Obj &o) {
    o.require_v3_str("hidden_act", "silu");
    o.require_bool("attention_bias", false);
    o.require_bool("mlp_bias", false);
    // The checkpoints store q/k RoPE dims as interleaved pairs; the other layout is not built.
    o.require_bool("rope_interleave", true);
    using K = Obj::Kind;
    const std::pair<const char *, K> ignored[] = {{"initializer_range", K::Number},
                                                  {"ep_size", K::Int},
                                                  {"aux_loss_alpha", K::Number},
                                                  {"seq_aux", K::Bool},
                                                  {"attention_dropout", K::Number},
                                                  {"pretraining_tp", K::Int},
                                                  {"use_cache", K::Bool},
                                                  {"torch_dtype", K::String},
                                                  {"dtype", K::String},
                                                  {"auto_map", K::Object},
                                                  {"transformers_version", K::String},
                                                  {"_name_or_path", K::String},
                                                  {"num_key_value_heads", K::Int},
                                                  {"head_dim", K::Int},
                                                  {"pad_token_id", K::Int}};
    for (const auto &[key, kind] : ignored) o.ignored(key, kind);
}

}  // namespace

ModelConfig parse_config(const std::string &json_text, const std::string &path) {
    if (std::string problem = json_text_problem(json_text); !problem.empty())
        fail(DSI_ERR_FORMAT, "%s: %s", path.c_str(), problem.c_str());
    json root;
    try {
        root = json::parse(json_text);
    } catch (const json::exception &e) {
        fail(DSI_ERR_FORMAT, "%s is not valid JSON: %s", path.c_str(), e.what());
    }
    if (!root.is_object()) fail(DSI_ERR_FORMAT, "%s: expected a JSON object", path.c_str());

    const Obj o(root, path);
    o.only_keys(kTopLevelKeys);
    ModelConfig c;
    parse_architecture(o, c);
    parse_dims(o, c);
    parse_eos(o, c);
    parse_indexer(o, c);
    parse_moe(o, c);
    check_layer_lists(o, c);
    c.rope = parse_rope(o);
    check_yarn_range(o, c);
    parse_quant(o, c);
    check_fixed_semantics(o);
    return c;
}

ModelConfig load_config(const std::string &dir) {
    const std::string path = dir + "/config.json";
    return parse_config(read_text_file(path, "config", size_t(16) << 20), path);
}

}  // namespace dsi
