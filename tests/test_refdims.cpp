// labels: cpu
// The CPU engine against a second independent reference (tests/data/refdims/README.md):
// a random-weight FP8 checkpoint with the released DeepSeek-V3.2 per-head dims (q/k
// nope 128, rope 64, v 128, kv_lora_rank 512), q_lora_rank 384 (partial FP8 blocks),
// the released YaRN RoPE (factor 40, original 4096) written in the newer
// `rope_parameters` form, 8 expert groups / top-4 groups / 6 experts per token, 2 shared
// experts; reference logits from transformers 5.17 in float64
// (scripts/make_reference_checkpoint.py).
//
// Tolerances are the golden data's (tests/data/golden/README.md): logits max |diff|
// <= 2e-3 (logit rms is about 1; float32 accumulation error is far smaller), identical
// indexer top-k sets, identical experts and identical greedy ids (the prompt was drawn so
// that every selection boundary has a relative gap >= 2e-5 and every greedy step a top-2
// logit gap >= 1e-3). Layer outputs are checked at the same relative level as in
// test_golden: max |diff| <= 2e-3 * max(1, rms of the reference).
#include "reference_check.h"

namespace {

const std::string kDir = std::string(DSI_TEST_DATA_DIR) + "/refdims";

}  // namespace

TEST_CASE("refdims config: rope_parameters form and the released per-head dims") {
    refcheck::CpuSession session(kDir);
    const dsi::ModelConfig &cfg = session.s->model->cfg;
    CHECK(cfg.rope.type == "yarn");
    CHECK(cfg.rope.theta == 10000.0);
    CHECK(cfg.rope.factor == 40.0);
    CHECK(cfg.rope.original_max_position_embeddings == 4096);
    CHECK(cfg.rope.mscale == 1.0);
    CHECK(cfg.rope.mscale_all_dim == 1.0);
    CHECK(cfg.qk_nope_head_dim == 128);
    CHECK(cfg.qk_rope_head_dim == 64);
    CHECK(cfg.v_head_dim == 128);
    CHECK(cfg.q_lora_rank == 384);
    CHECK(cfg.kv_lora_rank == 512);
    CHECK(cfg.n_group == 8);
    CHECK(cfg.topk_group == 4);
    CHECK(cfg.num_experts_per_tok == 6);
    CHECK(cfg.n_shared_experts == 2);
    CHECK(cfg.fp8);
}

TEST_CASE("refdims prefill: layers, indexer top-k, experts, logits against transformers float64") {
    const refcheck::Reference ref(kDir + "/reference.safetensors", "");
    refcheck::CpuSession session(kDir);
    REQUIRE(static_cast<int64_t>(ref.tensor<int32_t>("input_ids").size()) > session.s->model->cfg.index_topk);
    // The brief's minimum: layer 1 (the first MoE layer) has both.
    CHECK(ref.has("L1.topk"));
    CHECK(ref.has("L1.experts"));
    refcheck::check_prefill(kDir, ref, "refdims");
}

TEST_CASE("refdims greedy continuation by KV-cached decode") {
    refcheck::check_greedy(kDir, refcheck::Reference(kDir + "/reference.safetensors", ""), "refdims");
}
