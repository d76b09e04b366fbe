// labels: cpu badinput
// config.json parsing: the golden checkpoints, the released DeepSeek-V3 / V3.1 / V3.2
// configs, the transformers (rope_parameters) form, and every kind of bad input with
// its status code and a message naming the key and the file.
#include <doctest/doctest.h>

#include "expect_error.h"

#include "common/error.h"
#include "model/config.h"

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const std::string kGoldenBf16 = DSI_TEST_DATA_DIR "/golden/tiny-bf16";
const std::string kGoldenFp8 = DSI_TEST_DATA_DIR "/golden/tiny-fp8";
const std::string kPath = "/models/x/config.json";  // only used in messages

// deepseek-ai/DeepSeek-V3 config.json as released (V3.1 is the same plus scale_fmt).
const char *kDeepSeekV3 = R"({
  "architectures": ["DeepseekV3ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "auto_map": {
    "AutoConfig": "configuration_deepseek.DeepseekV3Config",
    "AutoModel": "modeling_deepseek.DeepseekV3Model",
    "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM"
  },
  "aux_loss_alpha": 0.001,
  "bos_token_id": 0,
  "eos_token_id": 1,
  "ep_size": 1,
  "first_k_dense_replace": 3,
  "hidden_act": "silu",
  "hidden_size": 7168,
  "initializer_range": 0.02,
  "intermediate_size": 18432,
  "kv_lora_rank": 512,
  "max_position_embeddings": 163840,
  "model_type": "deepseek_v3",
  "moe_intermediate_size": 2048,
  "moe_layer_freq": 1,
  "n_group": 8,
  "n_routed_experts": 256,
  "n_shared_experts": 1,
  "norm_topk_prob": true,
  "num_attention_heads": 128,
  "num_experts_per_tok": 8,
  "num_hidden_layers": 61,
  "num_key_value_heads": 128,
  "num_nextn_predict_layers": 1,
  "pretraining_tp": 1,
  "q_lora_rank": 1536,
  "qk_nope_head_dim": 128,
  "qk_rope_head_dim": 64,
  "quantization_config": {
    "activation_scheme": "dynamic",
    "fmt": "e4m3",
    "quant_method": "fp8",
    "weight_block_size": [128, 128]
  },
  "rms_norm_eps": 1e-06,
  "rope_scaling": {
    "beta_fast": 32,
    "beta_slow": 1,
    "factor": 40,
    "mscale": 1.0,
    "mscale_all_dim": 1.0,
    "original_max_position_embeddings": 4096,
    "type": "yarn"
  },
  "rope_theta": 10000,
  "routed_scaling_factor": 2.5,
  "scoring_func": "sigmoid",
  "seq_aux": true,
  "tie_word_embeddings": false,
  "topk_group": 4,
  "topk_method": "noaux_tc",
  "torch_dtype": "bfloat16",
  "transformers_version": "4.33.1",
  "use_cache": true,
  "v_head_dim": 128,
  "vocab_size": 129280
})";

// deepseek-ai/DeepSeek-V3.2 config.json as released (V3.2-Exp has the same keys).
const char *kDeepSeekV32 = R"({
  "architectures": ["DeepseekV32ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 0,
  "eos_token_id": 1,
  "ep_size": 1,
  "first_k_dense_replace": 3,
  "hidden_act": "silu",
  "hidden_size": 7168,
  "index_head_dim": 128,
  "index_n_heads": 64,
  "index_topk": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 18432,
  "kv_lora_rank": 512,
  "max_position_embeddings": 163840,
  "model_type": "deepseek_v32",
  "moe_intermediate_size": 2048,
  "moe_layer_freq": 1,
  "n_group": 8,
  "n_routed_experts": 256,
  "n_shared_experts": 1,
  "norm_topk_prob": true,
  "num_attention_heads": 128,
  "num_experts_per_tok": 8,
  "num_hidden_layers": 61,
  "num_key_value_heads": 128,
  "num_nextn_predict_layers": 1,
  "q_lora_rank": 1536,
  "qk_nope_head_dim": 128,
  "qk_rope_head_dim": 64,
  "quantization_config": {
    "activation_scheme": "dynamic",
    "fmt": "e4m3",
    "quant_method": "fp8",
    "scale_fmt": "ue8m0",
    "weight_block_size": [128, 128]
  },
  "rms_norm_eps": 1e-06,
  "rope_scaling": {
    "beta_fast": 32,
    "beta_slow": 1,
    "factor": 40,
    "mscale": 1.0,
    "mscale_all_dim": 1.0,
    "original_max_position_embeddings": 4096,
    "type": "yarn"
  },
  "rope_theta": 10000,
  "routed_scaling_factor": 2.5,
  "scoring_func": "sigmoid",
  "tie_word_embeddings": false,
  "topk_group": 4,
  "topk_method": "noaux_tc",
  "torch_dtype": "bfloat16",
  "transformers_version": "4.44.2",
  "use_cache": true,
  "v_head_dim": 128,
  "vocab_size": 129280
})";

struct TempDir {
    std::string path;
    TempDir() {
        char tmpl[] = "/tmp/dsi_test_config_XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        path = tmpl;
    }
    ~TempDir() { fs::remove_all(path); }
};

std::string read_text(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    REQUIRE(in.good());
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_text(const std::string &path, const std::string &text) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    REQUIRE(out.good());
}

json golden_json(const std::string &dir) {
    return json::parse(read_text(dir + "/config.json"));
}

// The golden config in the newer form: rope_theta and rope_scaling folded into
// rope_parameters, "type" renamed "rope_type".
json to_rope_parameters(json j) {
    json params = j["rope_scaling"];
    params["rope_type"] = params["type"];
    params.erase("type");
    params["rope_theta"] = j["rope_theta"];
    j.erase("rope_scaling");
    j.erase("rope_theta");
    j["rope_parameters"] = params;
    return j;
}

void check_same_rope(const dsi::RopeConfig &a, const dsi::RopeConfig &b) {
    CHECK(a.type == b.type);
    CHECK(a.theta == b.theta);
    CHECK(a.factor == b.factor);
    CHECK(a.original_max_position_embeddings == b.original_max_position_embeddings);
    CHECK(a.beta_fast == b.beta_fast);
    CHECK(a.beta_slow == b.beta_slow);
    CHECK(a.mscale == b.mscale);
    CHECK(a.mscale_all_dim == b.mscale_all_dim);
    CHECK(a.attention_factor == b.attention_factor);
    CHECK(a.truncate == b.truncate);
}

// A golden config changed by `edit` must be refused with `status`, naming `needle`
// (the key) and the file.
struct BadCase {
    const char *what;
    std::function<void(json &)> edit;
    dsi_status status;
    std::string needle;
};

void run_bad_cases(const std::string &golden_dir, const std::vector<BadCase> &cases) {
    for (const BadCase &c : cases) {
        INFO(c.what);
        json j = golden_json(golden_dir);
        c.edit(j);
        expect_error([&] { dsi::parse_config(j.dump(), kPath); }, c.status, {c.needle, kPath});
    }
}

}  // namespace

// ---- accepted configs --------------------------------------------------------------------

TEST_CASE("golden tiny-bf16 config") {
    const dsi::ModelConfig c = dsi::load_config(kGoldenBf16);
    CHECK(c.architecture == "DeepseekV32ForCausalLM");
    CHECK(c.model_type == "deepseek_v32");
    CHECK(c.vocab_size == 1024);
    CHECK(c.hidden_size == 256);
    CHECK(c.intermediate_size == 512);
    CHECK(c.moe_intermediate_size == 128);
    CHECK(c.num_hidden_layers == 4);
    CHECK(c.first_k_dense_replace == 1);
    CHECK(c.num_nextn_predict_layers == 0);
    CHECK(c.num_attention_heads == 4);
    CHECK(c.q_lora_rank == 128);
    CHECK(c.kv_lora_rank == 128);
    CHECK(c.qk_nope_head_dim == 32);
    CHECK(c.qk_rope_head_dim == 16);
    CHECK(c.qk_head_dim() == 48);
    CHECK(c.v_head_dim == 32);
    CHECK(c.index_n_heads == 8);
    CHECK(c.index_head_dim == 128);
    CHECK(c.index_topk == 32);
    CHECK(c.is_sparse());
    CHECK(c.n_routed_experts == 16);
    CHECK(c.n_shared_experts == 1);
    CHECK(c.num_experts_per_tok == 4);
    CHECK(c.n_group == 4);
    CHECK(c.topk_group == 2);
    CHECK(c.routed_scaling_factor == 2.5);
    CHECK(c.norm_topk_prob);
    CHECK(c.max_position_embeddings == 512);
    CHECK(c.rms_norm_eps == 1e-6);
    CHECK(c.rope.type == "yarn");
    CHECK(c.rope.theta == 10000.0);
    CHECK(c.rope.factor == 4.0);
    CHECK(c.rope.original_max_position_embeddings == 128);
    CHECK(c.rope.beta_fast == 32.0);
    CHECK(c.rope.beta_slow == 1.0);
    CHECK(c.rope.mscale == 1.0);
    CHECK(c.rope.mscale_all_dim == 1.0);
    CHECK(c.rope.attention_factor == 0.0);
    CHECK(c.bos_token_id == 0);
    CHECK(c.eos_token_id == 1);
    CHECK_FALSE(c.tie_word_embeddings);
    CHECK_FALSE(c.layer_is_moe(0));
    CHECK(c.layer_is_moe(1));
    CHECK(c.layer_is_moe(3));
    CHECK_FALSE(c.fp8);  // no quantization_config
}

TEST_CASE("golden tiny-fp8 config has FP8 128x128 blocks") {
    const dsi::ModelConfig c = dsi::load_config(kGoldenFp8);
    CHECK(c.fp8);
    CHECK(c.fp8_block_rows == 128);
    CHECK(c.fp8_block_cols == 128);
    CHECK(c.index_topk == 32);
}

TEST_CASE("released DeepSeek-V3, V3.1 and V3.2 configs") {
    SUBCASE("V3: dense attention, no indexer") {
        const dsi::ModelConfig c = dsi::parse_config(kDeepSeekV3, kPath);
        CHECK(c.architecture == "DeepseekV3ForCausalLM");
        CHECK(c.model_type == "deepseek_v3");
        CHECK(c.index_topk == 0);
        CHECK_FALSE(c.is_sparse());
        CHECK(c.num_hidden_layers == 61);
        CHECK(c.first_k_dense_replace == 3);
        CHECK(c.num_nextn_predict_layers == 1);
        CHECK(c.n_routed_experts == 256);
        CHECK(c.rope.type == "yarn");
        CHECK(c.rope.factor == 40.0);
        CHECK(c.rope.original_max_position_embeddings == 4096);
        CHECK(c.fp8);
    }
    SUBCASE("V3.1: scale_fmt ue8m0") {
        json j = json::parse(kDeepSeekV3);
        j["quantization_config"]["scale_fmt"] = "ue8m0";
        j["transformers_version"] = "4.44.2";
        CHECK(dsi::parse_config(j.dump(), kPath).fp8);
    }
    SUBCASE("V3.2: DSA indexer") {
        const dsi::ModelConfig c = dsi::parse_config(kDeepSeekV32, kPath);
        CHECK(c.architecture == "DeepseekV32ForCausalLM");
        CHECK(c.index_topk == 2048);
        CHECK(c.index_n_heads == 64);
        CHECK(c.index_head_dim == 128);
        CHECK(c.is_sparse());
        CHECK(c.q_lora_rank == 1536);
        CHECK(c.kv_lora_rank == 512);
    }
}

TEST_CASE("config as written by transformers (rope_parameters, dtype, layer lists)") {
    json j = to_rope_parameters(golden_json(kGoldenBf16));
    j.erase("torch_dtype");
    j["dtype"] = "bfloat16";
    j["transformers_version"] = "5.0.0";
    j["head_dim"] = 16;
    j["qk_head_dim"] = 48;
    j["rope_interleave"] = true;
    j["mlp_bias"] = false;
    j["attention_dropout"] = 0.0;
    j["initializer_range"] = 0.02;
    j["pad_token_id"] = nullptr;
    j["eos_token_id"] = json::array({1, 2});
    j["mlp_layer_types"] = json::array({"dense", "sparse", "sparse", "sparse"});
    j["layer_types"] = json::array({"deepseek_sparse_attention", "deepseek_sparse_attention",
                                    "deepseek_sparse_attention", "deepseek_sparse_attention"});
    j["quantization_config"] = {{"quant_method", "fp8"},
                                {"activation_scheme", "dynamic"},
                                {"weight_block_size", {128, 128}},
                                {"modules_to_not_convert", nullptr},
                                {"dequantize", false}};
    const dsi::ModelConfig c = dsi::parse_config(j.dump(), kPath);
    CHECK(c.eos_token_id == 1);
    CHECK(c.fp8);
    check_same_rope(c.rope, dsi::load_config(kGoldenBf16).rope);
}

TEST_CASE("both RoPE forms parse to the same RopeConfig") {
    const json legacy = golden_json(kGoldenBf16);
    const json params = to_rope_parameters(legacy);
    REQUIRE_FALSE(params.contains("rope_scaling"));
    const dsi::RopeConfig a = dsi::parse_config(legacy.dump(), kPath).rope;
    const dsi::RopeConfig b = dsi::parse_config(params.dump(), kPath).rope;
    CHECK(a.type == "yarn");
    check_same_rope(a, b);

    SUBCASE("rope_scaling with rope_type instead of type") {
        json j = legacy;
        j["rope_scaling"]["rope_type"] = "yarn";
        j["rope_scaling"].erase("type");
        check_same_rope(a, dsi::parse_config(j.dump(), kPath).rope);
    }
    SUBCASE("both forms present and agreeing") {
        json j = params;
        j["rope_scaling"] = legacy["rope_scaling"];
        j["rope_theta"] = legacy["rope_theta"];
        check_same_rope(a, dsi::parse_config(j.dump(), kPath).rope);
    }
    SUBCASE("both forms present and disagreeing") {
        json j = params;
        j["rope_scaling"] = legacy["rope_scaling"];
        j["rope_scaling"]["factor"] = 8.0;
        expect_error([&] { dsi::parse_config(j.dump(), kPath); }, DSI_ERR_CONFIG,
                     {"rope_scaling and rope_parameters disagree", kPath});
    }
    SUBCASE("yarn extras: attention_factor and truncate") {
        json j = params;
        j["rope_parameters"]["attention_factor"] = 1.25;
        j["rope_parameters"]["truncate"] = false;
        const dsi::RopeConfig r = dsi::parse_config(j.dump(), kPath).rope;
        CHECK(r.attention_factor == 1.25);
        CHECK_FALSE(r.truncate);
    }
}

TEST_CASE("rope_scaling null or absent is plain RoPE") {
    json j = golden_json(kGoldenBf16);
    j["rope_scaling"] = nullptr;
    j["rope_theta"] = 50000.0;
    dsi::RopeConfig r = dsi::parse_config(j.dump(), kPath).rope;
    CHECK(r.type == "default");
    CHECK(r.theta == 50000.0);
    CHECK(r.factor == 1.0);
    j.erase("rope_scaling");
    j.erase("rope_theta");
    r = dsi::parse_config(j.dump(), kPath).rope;
    CHECK(r.type == "default");
    CHECK(r.theta == 10000.0);
    j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 20000}};
    CHECK(dsi::parse_config(j.dump(), kPath).rope.theta == 20000.0);
}

// ---- refused configs ----------------------------------------------------------------------

TEST_CASE("config.json missing, malformed, or not an object") {
    TempDir tmp;
    const std::string path = tmp.path + "/config.json";
    expect_error([&] { dsi::load_config(tmp.path); }, DSI_ERR_IO, {path});
    write_text(path, "{\"architectures\": [\"DeepseekV32ForCausalLM\"],");
    expect_error([&] { dsi::load_config(tmp.path); }, DSI_ERR_FORMAT, {path, "not valid JSON"});
    write_text(path, "");
    expect_error([&] { dsi::load_config(tmp.path); }, DSI_ERR_FORMAT, {path});
    write_text(path, "[1, 2]");
    expect_error([&] { dsi::load_config(tmp.path); }, DSI_ERR_FORMAT, {path, "object"});
}

TEST_CASE("architecture and model_type") {
    run_bad_cases(
        kGoldenBf16,
        {
            {"unknown architecture", [](json &j) { j["architectures"] = {"LlamaForCausalLM"}; },
             DSI_ERR_CONFIG, "unknown architecture 'LlamaForCausalLM'"},
            {"no architectures", [](json &j) { j.erase("architectures"); }, DSI_ERR_CONFIG,
             "'architectures'"},
            {"empty architectures", [](json &j) { j["architectures"] = json::array(); }, DSI_ERR_FORMAT,
             "'architectures'"},
            {"architectures not a list", [](json &j) { j["architectures"] = "DeepseekV32ForCausalLM"; },
             DSI_ERR_FORMAT, "'architectures'"},
            {"model_type of another architecture", [](json &j) { j["model_type"] = "deepseek_v3"; },
             DSI_ERR_CONFIG, "model_type 'deepseek_v3'"},
            {"unknown model_type", [](json &j) { j["model_type"] = "llama"; }, DSI_ERR_CONFIG, "'llama'"},
        });
}

TEST_CASE("unknown keys are refused, also inside nested objects") {
    run_bad_cases(
        kGoldenBf16,
        {
            {"top level", [](json &j) { j["foo"] = 1; }, DSI_ERR_CONFIG, "unknown key 'foo' in " + kPath},
            {"near miss", [](json &j) { j["num_hidden_layer"] = 4; }, DSI_ERR_CONFIG,
             "unknown key 'num_hidden_layer'"},
            {"in rope_scaling", [](json &j) { j["rope_scaling"]["low_freq_factor"] = 1.0; }, DSI_ERR_CONFIG,
             "unknown key 'rope_scaling.low_freq_factor'"},
            {"in rope_parameters",
             [](json &j) {
                 j = to_rope_parameters(j);
                 j["rope_parameters"]["partial_rotary_factor"] = 0.5;
             },
             DSI_ERR_CONFIG, "unknown key 'rope_parameters.partial_rotary_factor'"},
            {"in quantization_config",
             [](json &j) {
                 j["quantization_config"] = {{"quant_method", "fp8"}, {"bits", 8}};
             },
             DSI_ERR_CONFIG, "unknown key 'quantization_config.bits'"},
        });
}

TEST_CASE("wrong value types are DSI_ERR_FORMAT naming the key") {
    run_bad_cases(
        kGoldenBf16,
        {
            {"string for int", [](json &j) { j["hidden_size"] = "256"; }, DSI_ERR_FORMAT,
             "'hidden_size' must be a positive integer"},
            {"float for int", [](json &j) { j["num_hidden_layers"] = 4.0; }, DSI_ERR_FORMAT,
             "'num_hidden_layers'"},
            {"bool for int", [](json &j) { j["index_topk"] = true; }, DSI_ERR_FORMAT, "'index_topk'"},
            {"string for number", [](json &j) { j["rope_scaling"]["factor"] = "4"; }, DSI_ERR_FORMAT,
             "'rope_scaling.factor' must be a number"},
            {"int for bool", [](json &j) { j["tie_word_embeddings"] = 0; }, DSI_ERR_FORMAT,
             "'tie_word_embeddings' must be true or false"},
            {"number for string", [](json &j) { j["hidden_act"] = 1; }, DSI_ERR_FORMAT,
             "'hidden_act' must be a string"},
            {"rope_scaling not an object", [](json &j) { j["rope_scaling"] = "yarn"; }, DSI_ERR_FORMAT,
             "'rope_scaling' must be an object"},
            {"ignored key of the wrong type", [](json &j) { j["use_cache"] = "yes"; }, DSI_ERR_FORMAT,
             "'use_cache'"},
            {"eos list of strings", [](json &j) { j["eos_token_id"] = {"</s>"}; }, DSI_ERR_FORMAT,
             "'eos_token_id'"},
            {"mlp_layer_types not strings",
             [](json &j) {
                 j["mlp_layer_types"] = {1, 2, 3, 4};
             },
             DSI_ERR_FORMAT, "'mlp_layer_types'"},
            {"block size not a pair",
             [](json &j) {
                 j["quantization_config"] = {{"quant_method", "fp8"}, {"weight_block_size", 128}};
             },
             DSI_ERR_FORMAT, "'quantization_config.weight_block_size'"},
        });
}

TEST_CASE("missing required keys are DSI_ERR_CONFIG") {
    std::vector<BadCase> cases;
    for (const char *key : {"vocab_size",
                            "hidden_size",
                            "intermediate_size",
                            "num_hidden_layers",
                            "num_attention_heads",
                            "kv_lora_rank",
                            "qk_nope_head_dim",
                            "qk_rope_head_dim",
                            "v_head_dim",
                            "max_position_embeddings",
                            "index_topk",
                            "index_n_heads",
                            "index_head_dim",
                            "n_routed_experts",
                            "moe_intermediate_size",
                            "num_experts_per_tok",
                            "n_shared_experts",
                            "n_group",
                            "topk_group",
                            "routed_scaling_factor",
                            "first_k_dense_replace"})
        cases.push_back({key, [key](json &j) { j.erase(key); }, DSI_ERR_CONFIG,
                         std::string("missing required key '") + key + "'"});
    cases.push_back({"null dimension", [](json &j) { j["hidden_size"] = nullptr; }, DSI_ERR_CONFIG,
                     "missing required key 'hidden_size'"});
    cases.push_back({"yarn without factor", [](json &j) { j["rope_scaling"].erase("factor"); },
                     DSI_ERR_CONFIG, "missing required key 'rope_scaling.factor'"});
    cases.push_back({"rope dict without a type", [](json &j) { j["rope_scaling"].erase("type"); },
                     DSI_ERR_CONFIG, "'rope_scaling.rope_type'"});
    cases.push_back({"quantization_config without quant_method",
                     [](json &j) {
                         j["quantization_config"] = {{"fmt", "e4m3"}};
                     },
                     DSI_ERR_CONFIG, "'quantization_config.quant_method'"});
    run_bad_cases(kGoldenBf16, cases);
}

TEST_CASE("out-of-range and inconsistent values are DSI_ERR_CONFIG") {
    run_bad_cases(
        kGoldenBf16,
        {
            {"negative dim", [](json &j) { j["hidden_size"] = -256; }, DSI_ERR_CONFIG,
             "'hidden_size' must be a positive integer"},
            {"zero layers", [](json &j) { j["num_hidden_layers"] = 0; }, DSI_ERR_CONFIG,
             "'num_hidden_layers'"},
            {"huge unsigned", [](json &j) { j["vocab_size"] = 18446744073709551615ull; }, DSI_ERR_CONFIG,
             "'vocab_size'"},
            {"n_group not dividing experts", [](json &j) { j["n_group"] = 3; }, DSI_ERR_CONFIG, "'n_group'"},
            {"one expert per group",
             [](json &j) {
                 j["n_group"] = 16;
                 j["topk_group"] = 4;
             },
             DSI_ERR_CONFIG, "'n_group'"},
            {"topk_group > n_group", [](json &j) { j["topk_group"] = 5; }, DSI_ERR_CONFIG, "'topk_group'"},
            {"too many experts per token", [](json &j) { j["num_experts_per_tok"] = 17; }, DSI_ERR_CONFIG,
             "'num_experts_per_tok'"},
            {"more experts than the chosen groups hold", [](json &j) { j["num_experts_per_tok"] = 9; },
             DSI_ERR_CONFIG, "'num_experts_per_tok'"},
            {"odd rope dim", [](json &j) { j["qk_rope_head_dim"] = 15; }, DSI_ERR_CONFIG,
             "'qk_rope_head_dim'"},
            {"index_head_dim below rope dim", [](json &j) { j["index_head_dim"] = 8; }, DSI_ERR_CONFIG,
             "'index_head_dim'"},
            {"first_k_dense_replace past the last layer", [](json &j) { j["first_k_dense_replace"] = 5; },
             DSI_ERR_CONFIG, "'first_k_dense_replace'"},
            {"moe_layer_freq zero", [](json &j) { j["moe_layer_freq"] = 0; }, DSI_ERR_CONFIG,
             "'moe_layer_freq'"},
            {"eos outside the vocabulary", [](json &j) { j["eos_token_id"] = 1024; }, DSI_ERR_CONFIG,
             "'eos_token_id'"},
            {"bos negative", [](json &j) { j["bos_token_id"] = -2; }, DSI_ERR_CONFIG, "'bos_token_id'"},
            {"zero rms_norm_eps", [](json &j) { j["rms_norm_eps"] = 0; }, DSI_ERR_CONFIG, "'rms_norm_eps'"},
            {"zero routed_scaling_factor", [](json &j) { j["routed_scaling_factor"] = 0.0; }, DSI_ERR_CONFIG,
             "'routed_scaling_factor'"},
            {"qk_head_dim inconsistent", [](json &j) { j["qk_head_dim"] = 64; }, DSI_ERR_CONFIG,
             "'qk_head_dim'"},
            {"yarn factor below 1", [](json &j) { j["rope_scaling"]["factor"] = 0.5; }, DSI_ERR_CONFIG,
             "'rope_scaling.factor'"},
            {"negative mscale", [](json &j) { j["rope_scaling"]["mscale"] = -1; }, DSI_ERR_CONFIG,
             "'rope_scaling.mscale'"},
            {"type and rope_type disagree", [](json &j) { j["rope_scaling"]["rope_type"] = "default"; },
             DSI_ERR_CONFIG, "'rope_scaling.type'"},
            {"rope_theta inside and outside disagree", [](json &j) { j["rope_scaling"]["rope_theta"] = 5.0; },
             DSI_ERR_CONFIG, "'rope_scaling.rope_theta'"},
            {"yarn keys on default rope",
             [](json &j) {
                 j["rope_scaling"] = {{"type", "default"}, {"factor", 2.0}};
             },
             DSI_ERR_CONFIG, "'rope_scaling.factor'"},
            {"indexer keys on V3",
             [](json &j) {
                 j["architectures"] = {"DeepseekV3ForCausalLM"};
                 j["model_type"] = "deepseek_v3";
             },
             DSI_ERR_CONFIG, "'index_topk'"},
            {"mlp_layer_types of the wrong length",
             [](json &j) {
                 j["mlp_layer_types"] = {"dense", "sparse"};
             },
             DSI_ERR_CONFIG, "'mlp_layer_types'"},
        });
}

TEST_CASE("configurations that are not DeepSeek-V3/V3.2 are DSI_ERR_CONFIG naming key and value") {
    run_bad_cases(
        kGoldenBf16,
        {
            {"softmax scoring (DeepSeek-V2)", [](json &j) { j["scoring_func"] = "softmax"; }, DSI_ERR_CONFIG,
             "'scoring_func' is \"softmax\""},
            {"greedy top-k (DeepSeek-V2)", [](json &j) { j["topk_method"] = "greedy"; }, DSI_ERR_CONFIG,
             "'topk_method' is \"greedy\""},
            {"group_limited_greedy (DeepSeek-V2)", [](json &j) { j["topk_method"] = "group_limited_greedy"; },
             DSI_ERR_CONFIG, "'topk_method' is \"group_limited_greedy\""},
            {"gelu", [](json &j) { j["hidden_act"] = "gelu"; }, DSI_ERR_CONFIG, "'hidden_act' is \"gelu\""},
            {"MoE every other layer (DeepSeek-V2's moe_layer_freq)", [](json &j) { j["moe_layer_freq"] = 2; },
             DSI_ERR_CONFIG, "'moe_layer_freq' is 2"},
            {"V3.2 without a q latent", [](json &j) { j["q_lora_rank"] = nullptr; }, DSI_ERR_CONFIG,
             "'q_lora_rank' is null"},
            {"YaRN whose original length is not below max_position_embeddings",
             [](json &j) { j["rope_scaling"]["original_max_position_embeddings"] = j["max_position_embeddings"]; },
             DSI_ERR_CONFIG, "'rope_scaling.original_max_position_embeddings' is 512, not below"},
            {"YaRN without original_max_position_embeddings",
             [](json &j) { j["rope_scaling"].erase("original_max_position_embeddings"); }, DSI_ERR_CONFIG,
             "missing required key 'rope_scaling.original_max_position_embeddings'"},
        });
}

TEST_CASE("semantics dsinfer does not implement are DSI_ERR_UNSUPPORTED") {
    run_bad_cases(
        kGoldenBf16,
        {
            {"attention bias", [](json &j) { j["attention_bias"] = true; }, DSI_ERR_UNSUPPORTED,
             "'attention_bias'"},
            {"mlp bias", [](json &j) { j["mlp_bias"] = true; }, DSI_ERR_UNSUPPORTED, "'mlp_bias'"},
            {"half-split rope layout", [](json &j) { j["rope_interleave"] = false; }, DSI_ERR_UNSUPPORTED,
             "'rope_interleave'"},
            {"linear rope", [](json &j) { j["rope_scaling"]["type"] = "linear"; }, DSI_ERR_UNSUPPORTED,
             "'rope_scaling.rope_type'"},
            {"llama3 rope in rope_parameters",
             [](json &j) {
                 j = to_rope_parameters(j);
                 j["rope_parameters"]["rope_type"] = "llama3";
             },
             DSI_ERR_UNSUPPORTED, "'rope_parameters.rope_type'"},
            {"MoE pattern not expressible",
             [](json &j) {
                 j["mlp_layer_types"] = {"dense", "sparse", "dense", "sparse"};
             },
             DSI_ERR_UNSUPPORTED, "'mlp_layer_types'"},
            {"layer_types of another attention",
             [](json &j) {
                 j["layer_types"] = {"full_attention", "full_attention", "full_attention", "full_attention"};
             },
             DSI_ERR_UNSUPPORTED, "'layer_types'"},
        });
    run_bad_cases(
        kGoldenFp8,
        {
            {"other quant method", [](json &j) { j["quantization_config"]["quant_method"] = "awq"; },
             DSI_ERR_UNSUPPORTED, "'quantization_config.quant_method'"},
            {"e5m2", [](json &j) { j["quantization_config"]["fmt"] = "e5m2"; }, DSI_ERR_UNSUPPORTED,
             "'quantization_config.fmt'"},
            {"static activations", [](json &j) { j["quantization_config"]["activation_scheme"] = "static"; },
             DSI_ERR_UNSUPPORTED, "'quantization_config.activation_scheme'"},
            {"64x64 blocks",
             [](json &j) {
                 j["quantization_config"]["weight_block_size"] = {64, 64};
             },
             DSI_ERR_UNSUPPORTED, "'quantization_config.weight_block_size'"},
            {"other scale format", [](json &j) { j["quantization_config"]["scale_fmt"] = "e8m0fnu"; },
             DSI_ERR_UNSUPPORTED, "'quantization_config.scale_fmt'"},
        });
}
