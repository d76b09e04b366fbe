// labels: cpu badinput
// Checkpoints that parse but disagree with their config, and dense V3 checkpoints.
// Each case rewrites the golden tiny checkpoint into a temporary directory (one
// model.safetensors + config.json) and opens it through the C API.
#include <doctest/doctest.h>

#include "temp_model.h"

#include "checkpoint/safetensors.h"
#include "dsinfer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

using namespace badinput;
using nlohmann::json;

TEST_CASE("a rewritten but unchanged checkpoint loads (the fixture itself is sound)") {
    TempModel m("tiny-fp8", nullptr, nullptr);
    std::string msg;
    CHECK_MESSAGE(open_status(m, &msg) == DSI_OK, msg);
}

TEST_CASE("a missing tensor is named") {
    const std::string name = "model.layers.2.mlp.experts.5.up_proj.weight";
    TempModel m("tiny-bf16", [&](Tensors &t) { t.erase(name); }, nullptr);
    std::string msg;
    CHECK(open_status(m, &msg) == DSI_ERR_CHECKPOINT);
    CHECK_MESSAGE(has(msg, "missing tensor '" + name + "'"), msg);
}

TEST_CASE("a shape that disagrees with the config is named with both shapes") {
    TempModel m("tiny-bf16", nullptr, [](json &c) { c["q_lora_rank"] = 64; });
    std::string msg;
    CHECK(open_status(m, &msg) == DSI_ERR_CHECKPOINT);
    CHECK_MESSAGE(has(msg, "model.layers.0.self_attn.q_a_proj.weight"), msg);
    CHECK_MESSAGE(has(msg, "[128, 256]"), msg);
    CHECK_MESSAGE(has(msg, "[64, 256]"), msg);
}

TEST_CASE("a wrong dtype is named") {
    const std::string name = "model.layers.1.self_attn.o_proj.weight";
    TempModel m("tiny-bf16", [&](Tensors &t) { t[name].dtype = "I16"; }, nullptr);
    std::string msg;
    CHECK(open_status(m, &msg) == DSI_ERR_CHECKPOINT);
    CHECK_MESSAGE(has(msg, name), msg);
    CHECK_MESSAGE(has(msg, "I16"), msg);
}

TEST_CASE("FP8 weights need valid block scales of the right shape") {
    const std::string name = "model.layers.1.self_attn.kv_b_proj.weight";
    {
        TempModel m("tiny-fp8", [&](Tensors &t) { t.erase(name + "_scale_inv"); }, nullptr);
        std::string msg;
        CHECK(open_status(m, &msg) == DSI_ERR_CHECKPOINT);
        CHECK_MESSAGE(has(msg, "no block scales"), msg);
        CHECK_MESSAGE(has(msg, name), msg);
    }
    {
        TempModel m("tiny-fp8", [&](Tensors &t) {
            Tensor &s = t[name + "_scale_inv"];
            s.shape = {1, 2};  // should be [ceil(256/128), ceil(128/128)] = [2, 1]
        }, nullptr);
        std::string msg;
        CHECK(open_status(m, &msg) == DSI_ERR_CHECKPOINT);
        CHECK_MESSAGE(has(msg, name + "_scale_inv"), msg);
        CHECK_MESSAGE(has(msg, "[2, 1]"), msg);
    }
    {
        TempModel m("tiny-fp8", [&](Tensors &t) {
            const float nan = std::nanf("");
            std::memcpy(t[name + "_scale_inv"].bytes.data(), &nan, sizeof nan);
        }, nullptr);
        std::string msg;
        CHECK(open_status(m, &msg) == DSI_ERR_CHECKPOINT);
        CHECK_MESSAGE(has(msg, "invalid scale"), msg);
    }
}

TEST_CASE("tensors the forward pass does not use (an MTP layer) are skipped") {
    TempModel m("tiny-fp8", [](Tensors &t) {
        Tensors extra;
        for (const auto &[name, v] : t)
            if (name.rfind("model.layers.3.", 0) == 0) extra["model.layers.4." + name.substr(15)] = v;
        t.insert(extra.begin(), extra.end());
    }, [](json &c) { c["num_nextn_predict_layers"] = 1; });
    std::string msg;
    dsi_session *s = nullptr;
    REQUIRE_MESSAGE(open_status(m, &msg, &s) == DSI_OK, msg);
    CHECK(dsi_session_n_layers(s) == 4);
    dsi_session_free(s);
}

TEST_CASE("a dense DeepSeek-V3 checkpoint (no index_* keys) runs dense MLA") {
    // With 12 tokens (fewer than top-k 32) DSA selects everything, so the golden case0
    // logits are also the dense model's.
    TempModel m("tiny-bf16", [](Tensors &t) {
        for (auto it = t.begin(); it != t.end();)
            it = it->first.find(".indexer.") != std::string::npos ? t.erase(it) : std::next(it);
    }, [](json &c) {
        c.erase("index_n_heads");
        c.erase("index_head_dim");
        c.erase("index_topk");
        c["architectures"] = {"DeepseekV3ForCausalLM"};
        c["model_type"] = "deepseek_v3";
    });
    std::string msg;
    dsi_session *s = nullptr;
    REQUIRE_MESSAGE(open_status(m, &msg, &s) == DSI_OK, msg);
    CHECK(dsi_session_is_sparse(s) == 0);
    auto golden = dsi::SafetensorsFile::open(kGolden + "/tiny-golden.safetensors");
    const dsi::TensorInfo &ids_t = golden->tensors().at("case0.input_ids");
    const dsi::TensorInfo &ref_t = golden->tensors().at("case0.logits");
    std::vector<int32_t> ids(static_cast<size_t>(ids_t.numel()));
    std::memcpy(ids.data(), ids_t.data, ids_t.nbytes);
    std::vector<float> ref(static_cast<size_t>(ref_t.numel()));
    std::memcpy(ref.data(), ref_t.data, ref_t.nbytes);
    dsi_context *ctx = nullptr;
    REQUIRE(dsi_context_create(s, nullptr, &ctx) == DSI_OK);
    REQUIRE(dsi_context_eval(ctx, ids.data(), ids.size(), DSI_EVAL_LOGITS_ALL) == DSI_OK);
    double worst = 0;
    for (int64_t i = 0; i < ref_t.numel(); ++i)
        worst = std::max(worst, (double)std::fabs(dsi_context_logits(ctx, 0)[i] - ref[i]));
    CHECK(worst <= 2e-3);  // the golden README's float32 tolerance
    dsi_context_free(ctx);
    dsi_session_free(s);
}
