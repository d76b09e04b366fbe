// labels: cpu
// The CPU engine against the random-config reference sweep (tests/data/sweep/README.md):
// seeded random valid DeepSeek-V3 and V3.2 configurations in the released layout (FP8 or
// bf16), each with a short and a long prompt computed by transformers 5.17 in float64
// (scripts/make_reference_sweep.py). cases.json lists what each case covers.
//
// Tolerances are the golden data's (tests/data/golden/README.md): logits max |diff|
// <= 2e-3 (logit rms is about 1), identical indexer top-k sets, experts and greedy ids
// (every selection boundary of these prompts has a relative gap >= 2e-5 and every
// greedy step a top-2 logit gap >= 1e-3, and float32 transformers chose the same);
// layer outputs max |diff| <= 2e-3 * max(1, rms of the reference).
#include "reference_check.h"

#include <nlohmann/json.hpp>

#include <fstream>

namespace {

const std::string kDir = std::string(DSI_TEST_DATA_DIR) + "/sweep";

nlohmann::json manifest() {
    std::ifstream in(kDir + "/cases.json");
    REQUIRE_MESSAGE(in.good(), "cannot read " << kDir << "/cases.json");
    return nlohmann::json::parse(in);
}

}  // namespace

TEST_CASE("sweep: the cases cover the axes the issue names") {
    const nlohmann::json all = manifest(), &cases = all["cases"];
    REQUIRE(cases.size() >= 24);
    std::set<std::string> seen;
    for (const auto &c : cases) {
        const auto &v = c["covers"];
        seen.insert("arch=" + v["arch"].get<std::string>());
        seen.insert("weights=" + v["weights"].get<std::string>());
        seen.insert("rope_form=" + v["rope_form"].get<std::string>());
        seen.insert("rope=" + v["rope"].get<std::string>());
        seen.insert(v["q_lora_rank"].is_null() ? "q_proj" : "q_lora");
        seen.insert("heads_odd=" + std::to_string(v["heads"].get<int>() % 2));
        seen.insert("norm_topk_prob=" + std::to_string(v["norm_topk_prob"].get<bool>()));
        seen.insert("shared=" + std::to_string(v["n_shared_experts"].get<int>()));
        const int layers = v["layers"], dense = v["first_k_dense_replace"];
        seen.insert(dense == 0 ? "dense=0" : dense == layers ? "dense=all" : "dense=some");
        if (v["topk_group"] == v["n_group"]) seen.insert("topk_group=n_group");
        if (v["topk_group"] == 1) seen.insert("topk_group=1");
        if (v.contains("factor_is_max_over_original"))
            seen.insert("factor_is_ratio=" + std::to_string(v["factor_is_max_over_original"].get<bool>()));
        if (v.contains("mscale")) {
            const auto &m = v["mscale"], &a = v["mscale_all_dim"];
            seen.insert(m.is_null() || a.is_null() ? "mscale_absent" : m == a ? "mscale_equal" : "mscale_differ");
        }
        for (const char *dim : {"q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                                "hidden_size"}) {
            if (v[dim].is_null()) continue;
            const int d = v[dim];
            seen.insert(std::string(dim) + (d < 128 ? "<128" : d == 128 ? "=128" : ">128"));
        }
        if (v.contains("index_topk")) {
            const int k = v["index_topk"];
            seen.insert(k < c["checks"]["short_len"].get<int>()   ? "index_topk<short"
                        : k < c["checks"]["long_len"].get<int>() ? "index_topk<long"
                                                                 : "index_topk>long");
        }
    }
    for (const char *want :
         {"arch=v3", "arch=v3.2", "weights=fp8", "weights=bf16", "rope_form=rope_scaling",
          "rope_form=rope_parameters", "rope=yarn", "rope=default", "q_proj", "q_lora", "heads_odd=0", "heads_odd=1",
          "norm_topk_prob=0", "norm_topk_prob=1", "shared=0", "shared=1", "shared=2", "dense=0", "dense=all",
          "dense=some", "topk_group=n_group", "topk_group=1", "factor_is_ratio=0", "factor_is_ratio=1",
          "mscale_absent", "mscale_equal", "mscale_differ", "q_lora_rank<128", "q_lora_rank>128",
          "kv_lora_rank<128", "kv_lora_rank>128", "qk_nope_head_dim<128", "qk_nope_head_dim>128",
          "qk_rope_head_dim<128", "qk_rope_head_dim>128", "v_head_dim<128", "v_head_dim>128", "hidden_size<128",
          "hidden_size>128", "index_topk<short", "index_topk<long", "index_topk>long"})
        CHECK_MESSAGE(seen.count(want), "no sweep case covers " << std::string(want));
}

TEST_CASE("sweep: every case against transformers float64 (prefill, layers, selections, greedy decode)") {
    const nlohmann::json all = manifest();
    REQUIRE(all["cases"].size() >= 24);
    for (const auto &c : all["cases"]) {
        const std::string name = c["name"], dir = kDir + "/" + name;
        INFO(name << " covers " << c["covers"].dump());
        try {
        const std::string file = dir + "/reference.safetensors";
        refcheck::check_prefill(dir, refcheck::Reference(file, "short."), name);
        refcheck::check_prefill(dir, refcheck::Reference(file, "long."), name);
        refcheck::check_greedy(dir, refcheck::Reference(file, "long."), name);
        } catch (...) {
            // A failed REQUIRE was recorded already; go on so that it hides no other case.
        }
    }
}
