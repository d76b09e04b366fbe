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
#include <doctest/doctest.h>

#include "checkpoint/safetensors.h"
#include "session.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace {

const std::string kDir = std::string(DSI_TEST_DATA_DIR) + "/refdims";

const dsi::SafetensorsFile &reference() {
    static auto f = dsi::SafetensorsFile::open(kDir + "/reference.safetensors");
    return *f;
}

template <class T>
std::vector<T> tensor(const std::string &name, std::vector<int64_t> *shape = nullptr) {
    auto it = reference().tensors().find(name);
    REQUIRE_MESSAGE(it != reference().tensors().end(), "reference tensor missing: " << name);
    const dsi::TensorInfo &t = it->second;
    if (shape) *shape = t.shape;
    std::vector<T> v(static_cast<size_t>(t.numel()));
    std::memcpy(v.data(), t.data, t.nbytes);
    return v;
}

bool has(const std::string &name) { return reference().tensors().count(name) != 0; }

struct Diff {
    double max_abs = 0, ref_rms = 0;
};

Diff compare(const float *got, const std::vector<float> &ref) {
    Diff d;
    double ss = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        d.max_abs = std::max(d.max_abs, std::fabs(static_cast<double>(got[i]) - ref[i]));
        ss += static_cast<double>(ref[i]) * ref[i];
    }
    d.ref_rms = std::sqrt(ss / static_cast<double>(ref.size()));
    return d;
}

// Everything the forward reports for one prefill. A prompt longer than the prefill chunk
// (256 tokens, lib/context.cpp) is reported chunk by chunk: every callback appends.
struct Recorder : dsi::ForwardObserver {
    std::map<int64_t, std::vector<float>> layers;
    std::map<int64_t, std::vector<std::set<int32_t>>> selections;
    std::map<int64_t, std::vector<std::vector<int32_t>>> experts_of;

    void layer_output(int64_t l, const float *x, int64_t t, int64_t h) override {
        layers[l].insert(layers[l].end(), x, x + t * h);
    }
    void indexer_selection(int64_t l, const int32_t *sel, const int32_t *count, int64_t tokens,
                           int64_t stride) override {
        auto &rows = selections[l];
        for (int64_t t = 0; t < tokens; ++t) rows.emplace_back(sel + t * stride, sel + t * stride + count[t]);
    }
    void experts(int64_t l, const int32_t *ids, int64_t tokens, int64_t k) override {
        auto &rows = experts_of[l];
        for (int64_t t = 0; t < tokens; ++t) {
            std::vector<int32_t> e(ids + t * k, ids + (t + 1) * k);
            std::sort(e.begin(), e.end());
            rows.push_back(e);
        }
    }
};

struct Session {
    dsi_session *s = nullptr;
    Session() {
        dsi_session_params p = dsi_session_default_params();
        p.backend = DSI_BACKEND_CPU;
        p.n_threads = 2;
        REQUIRE_MESSAGE(dsi_session_open(kDir.c_str(), &p, &s) == DSI_OK, dsi_last_error());
    }
    ~Session() { dsi_session_free(s); }
};

struct Context {
    dsi_context *c = nullptr;
    explicit Context(dsi_session *s) {
        dsi_context_params p = dsi_context_default_params();
        p.n_ctx = 512;
        REQUIRE_MESSAGE(dsi_context_create(s, &p, &c) == DSI_OK, dsi_last_error());
    }
    ~Context() { dsi_context_free(c); }
};

}  // namespace

TEST_CASE("refdims config: rope_parameters form and the released per-head dims") {
    Session session;
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

TEST_CASE("refdims prefill: logits, indexer top-k, experts against transformers float64") {
    Session session;
    const dsi::ModelConfig &cfg = session.s->model->cfg;
    const auto ids = tensor<int32_t>("input_ids");
    const int64_t T = static_cast<int64_t>(ids.size());
    REQUIRE(T > cfg.index_topk);  // really sparse
    Context ctx(session.s);
    Recorder rec;
    dsi::context_eval(ctx.c, ids.data(), ids.size(), DSI_EVAL_LOGITS_ALL, &rec);

    for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
        const std::string name = "L" + std::to_string(l) + ".out";
        if (!has(name)) continue;
        const auto ref = tensor<float>(name);
        REQUIRE(rec.layers[l].size() == ref.size());
        const Diff d = compare(rec.layers[l].data(), ref);
        MESSAGE("refdims " << name << " max|diff| " << d.max_abs << " (ref rms " << d.ref_rms << ")");
        CHECK_MESSAGE(d.max_abs <= 2e-3 * std::max(1.0, d.ref_rms), "layer output " << name);
    }

    const Diff d = compare(dsi_context_logits(ctx.c, 0), tensor<float>("logits"));
    MESSAGE("refdims prefill logits max|diff| " << d.max_abs << " (ref rms " << d.ref_rms << ")");
    CHECK(d.max_abs <= 2e-3);

    for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
        const std::string name = "L" + std::to_string(l) + ".topk";
        if (has(name)) {
            std::vector<int64_t> shape;
            const auto ref = tensor<int32_t>(name, &shape);
            REQUIRE(shape[1] == cfg.index_topk);
            const auto &got = rec.selections[l];
            REQUIRE(static_cast<int64_t>(got.size()) == T);
            int64_t mismatched = 0, first = -1;
            for (int64_t t = 0; t < T; ++t) {
                std::set<int32_t> want;
                if (t >= cfg.index_topk) {
                    want.insert(ref.begin() + t * shape[1], ref.begin() + (t + 1) * shape[1]);
                } else {
                    // t + 1 <= top-k: every causal position is selected (the reference rows
                    // also list masked future positions).
                    for (int32_t j = 0; j <= t; ++j) want.insert(j);
                }
                if (want != got[static_cast<size_t>(t)]) {
                    ++mismatched;
                    if (first < 0) first = t;
                }
            }
            CHECK_MESSAGE(mismatched == 0, name << ": " << mismatched << " rows differ, first " << first);
        }
        const std::string ename = "L" + std::to_string(l) + ".experts";
        if (has(ename)) {
            std::vector<int64_t> shape;
            const auto ref = tensor<int32_t>(ename, &shape);
            REQUIRE(shape[1] == cfg.num_experts_per_tok);
            const auto &got = rec.experts_of[l];
            REQUIRE(static_cast<int64_t>(got.size()) == T);
            int64_t mismatched = 0;
            for (int64_t t = 0; t < T; ++t)
                mismatched += !std::equal(got[t].begin(), got[t].end(), ref.begin() + t * shape[1]);
            CHECK_MESSAGE(mismatched == 0, ename << ": " << mismatched << " tokens differ");
        }
    }
    // The brief's minimum: layer 1 (the first MoE layer) has both.
    CHECK(has("L1.topk"));
    CHECK(has("L1.experts"));
}

TEST_CASE("refdims greedy continuation by KV-cached decode") {
    Session session;
    const auto ids = tensor<int32_t>("input_ids");
    const auto want = tensor<int32_t>("greedy_ids");
    const auto want_logits = tensor<float>("greedy_logits");
    const int32_t V = dsi_session_n_vocab(session.s);
    REQUIRE(want_logits.size() == want.size() * static_cast<size_t>(V));
    Context ctx(session.s);
    REQUIRE(dsi_context_eval(ctx.c, ids.data(), ids.size(), DSI_EVAL_LOGITS_LAST) == DSI_OK);
    std::vector<int32_t> got;
    double worst = 0;
    for (size_t step = 0; step < want.size(); ++step) {
        const float *logits = dsi_context_logits(ctx.c, -1);
        REQUIRE(logits != nullptr);
        const std::vector<float> ref(want_logits.begin() + step * V, want_logits.begin() + (step + 1) * V);
        worst = std::max(worst, compare(logits, ref).max_abs);
        const int32_t next = static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
        got.push_back(next);
        REQUIRE(dsi_context_eval(ctx.c, &next, 1, DSI_EVAL_LOGITS_LAST) == DSI_OK);  // KV-cached decode
    }
    MESSAGE("refdims greedy logits max|diff| over " << want.size() << " decode steps: " << worst);
    CHECK(got == want);
    CHECK(worst <= 2e-3);
}
