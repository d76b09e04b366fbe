// Comparing the CPU engine with a reference computed by an independent implementation
// (transformers, float64): shared by test_golden.cpp and test_refdims.cpp.
//
// A reference file holds, under a name prefix ("case0." or ""): input_ids [T],
// logits [T, vocab] of one prefill, optionally embed / L{l}.out / final_norm [T, hidden],
// L{l}.topk [T, <= top-k] (sorted; rows with t+1 <= top-k also list masked future
// positions), L{l}.experts [T, k] (sorted), and greedy_ids [S] / greedy_logits [S, vocab]
// of a greedy continuation computed by re-running the whole sequence at each step.
//
// Tolerances (tests/data/golden/README.md): logits max |diff| <= 2e-3 (logit rms ~1);
// identical top-k sets, experts and greedy ids (the references were drawn with relative
// gaps >= 2e-5 at every selection boundary, far above float32 rounding). Hidden states
// are held to the same relative level: max |diff| <= 2e-3 * max(1, rms of the reference).
#pragma once

#include <doctest/doctest.h>

#include "checkpoint/safetensors.h"
#include "session.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace refcheck {

class Reference {
public:
    Reference(const std::string &path, std::string prefix)
        : file_(dsi::SafetensorsFile::open(path)), prefix_(std::move(prefix)) {}

    bool has(const std::string &name) const { return file_->tensors().count(prefix_ + name) != 0; }

    template <class T>
    std::vector<T> tensor(const std::string &name, std::vector<int64_t> *shape = nullptr) const {
        auto it = file_->tensors().find(prefix_ + name);
        REQUIRE_MESSAGE(it != file_->tensors().end(), "reference tensor missing: " << prefix_ + name);
        const dsi::TensorInfo &t = it->second;
        if (shape) *shape = t.shape;
        std::vector<T> v(static_cast<size_t>(t.numel()));
        std::memcpy(v.data(), t.data, t.nbytes);
        return v;
    }

    const std::string &prefix() const { return prefix_; }

private:
    std::unique_ptr<dsi::SafetensorsFile> file_;
    std::string prefix_;
};

struct Diff {
    double max_abs = 0, ref_rms = 0;
};

inline Diff compare(const float *got, const std::vector<float> &ref) {
    Diff d;
    double ss = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        d.max_abs = std::max(d.max_abs, std::fabs(static_cast<double>(got[i]) - ref[i]));
        ss += static_cast<double>(ref[i]) * ref[i];
    }
    d.ref_rms = std::sqrt(ss / static_cast<double>(ref.size()));
    return d;
}

// Everything the forward reports for one prefill. Long prompts arrive in prefill
// chunks (lib/context.cpp): every callback appends.
struct Recorder : dsi::ForwardObserver {
    std::vector<float> embed, normed;
    std::map<int64_t, std::vector<float>> layers;
    std::map<int64_t, std::vector<std::set<int32_t>>> selections;
    std::map<int64_t, std::vector<std::vector<int32_t>>> experts_of;

    void embedding(const float *x, int64_t t, int64_t h) override { embed.insert(embed.end(), x, x + t * h); }
    void layer_output(int64_t l, const float *x, int64_t t, int64_t h) override {
        layers[l].insert(layers[l].end(), x, x + t * h);
    }
    void final_norm(const float *x, int64_t t, int64_t h) override { normed.insert(normed.end(), x, x + t * h); }
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

// The engine under test: the CPU backend, or with DSI_TEST_BACKEND=cuda the CUDA
// backend in its float32 precision (scripts/device-test.sh), held to the same
// tolerances: the f32 GPU path exists to prove the GPU engine exact.
struct CpuSession {
    dsi_session *s = nullptr;
    explicit CpuSession(const std::string &dir) {
        dsi_session_params p = dsi_session_default_params();
        const char *backend = std::getenv("DSI_TEST_BACKEND");
        p.backend = backend && std::string(backend) == "cuda" ? DSI_BACKEND_CUDA : DSI_BACKEND_CPU;
        p.gpu_precision = DSI_GPU_PRECISION_F32;
        p.n_threads = 2;
        REQUIRE_MESSAGE(dsi_session_open(dir.c_str(), &p, &s) == DSI_OK, dsi_last_error());
    }
    ~CpuSession() { dsi_session_free(s); }
};

struct CpuContext {
    dsi_context *c = nullptr;
    explicit CpuContext(dsi_session *s) {
        dsi_context_params p = dsi_context_default_params();
        p.n_ctx = std::min(512, dsi_session_n_ctx_train(s));
        REQUIRE_MESSAGE(dsi_context_create(s, &p, &c) == DSI_OK, dsi_last_error());
    }
    ~CpuContext() { dsi_context_free(c); }
};

// One prefill of input_ids with every intermediate the reference has.
inline void check_prefill(const std::string &model_dir, const Reference &ref, const std::string &label) {
    CpuSession session(model_dir);
    const dsi::ModelConfig &cfg = session.s->model->cfg;
    const auto ids = ref.tensor<int32_t>("input_ids");
    const int64_t T = static_cast<int64_t>(ids.size());
    CpuContext ctx(session.s);
    Recorder rec;
    dsi::context_eval(ctx.c, ids.data(), ids.size(), DSI_EVAL_LOGITS_ALL, &rec);

    auto check_hidden = [&](const std::vector<float> &got, const std::string &name) {
        if (!ref.has(name)) return;
        const auto want = ref.tensor<float>(name);
        REQUIRE(got.size() == want.size());
        const Diff d = compare(got.data(), want);
        MESSAGE(label << " " << ref.prefix() << name << " max|diff| " << d.max_abs << " (ref rms " << d.ref_rms << ")");
        CHECK_MESSAGE(d.max_abs <= 2e-3 * std::max(1.0, d.ref_rms), name);
    };
    check_hidden(rec.embed, "embed");
    for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) check_hidden(rec.layers[l], "L" + std::to_string(l) + ".out");
    check_hidden(rec.normed, "final_norm");

    const Diff d = compare(dsi_context_logits(ctx.c, 0), ref.tensor<float>("logits"));
    MESSAGE(label << " " << ref.prefix() << "logits max|diff| " << d.max_abs << " (ref rms " << d.ref_rms << ")");
    CHECK(d.max_abs <= 2e-3);

    for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
        const std::string name = "L" + std::to_string(l) + ".topk";
        if (ref.has(name)) {
            std::vector<int64_t> shape;
            const auto want_rows = ref.tensor<int32_t>(name, &shape);
            const auto &got = rec.selections[l];
            REQUIRE(static_cast<int64_t>(got.size()) == T);
            int64_t mismatched = 0;
            for (int64_t t = 0; t < T; ++t) {
                // Rows shorter than top-k also list masked future positions: keep <= t.
                std::set<int32_t> want;
                for (int64_t j = 0; j < shape[1]; ++j)
                    if (want_rows[t * shape[1] + j] <= t) want.insert(want_rows[t * shape[1] + j]);
                mismatched += want != got[static_cast<size_t>(t)];
            }
            CHECK_MESSAGE(mismatched == 0, label << " " << name << ": " << mismatched << " rows differ");
        }
        const std::string ename = "L" + std::to_string(l) + ".experts";
        if (ref.has(ename)) {
            std::vector<int64_t> shape;
            const auto want = ref.tensor<int32_t>(ename, &shape);
            const auto &got = rec.experts_of[l];
            REQUIRE(static_cast<int64_t>(got.size()) == T);
            int64_t mismatched = 0;
            for (int64_t t = 0; t < T; ++t)
                mismatched += !std::equal(got[t].begin(), got[t].end(), want.begin() + t * shape[1]);
            CHECK_MESSAGE(mismatched == 0, label << " " << ename << ": " << mismatched << " tokens differ");
        }
    }
}

// The greedy continuation by KV-cached decode, one token per eval.
inline void check_greedy(const std::string &model_dir, const Reference &ref, const std::string &label) {
    CpuSession session(model_dir);
    const auto ids = ref.tensor<int32_t>("input_ids");
    const auto want = ref.tensor<int32_t>("greedy_ids");
    const auto want_logits = ref.tensor<float>("greedy_logits");
    const int32_t V = dsi_session_n_vocab(session.s);
    REQUIRE(want_logits.size() == want.size() * static_cast<size_t>(V));
    CpuContext ctx(session.s);
    REQUIRE(dsi_context_eval(ctx.c, ids.data(), ids.size(), DSI_EVAL_LOGITS_LAST) == DSI_OK);
    std::vector<int32_t> got;
    double worst = 0;
    for (size_t step = 0; step < want.size(); ++step) {
        const float *logits = dsi_context_logits(ctx.c, -1);
        REQUIRE(logits != nullptr);
        const std::vector<float> row(want_logits.begin() + step * V, want_logits.begin() + (step + 1) * V);
        worst = std::max(worst, compare(logits, row).max_abs);
        const int32_t next = static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
        got.push_back(next);
        REQUIRE(dsi_context_eval(ctx.c, &next, 1, DSI_EVAL_LOGITS_LAST) == DSI_OK);
    }
    MESSAGE(label << " " << ref.prefix() << "greedy logits max|diff| over " << want.size()
                  << " decode steps: " << worst);
    CHECK(got == want);
    CHECK(worst <= 2e-3);
}

}  // namespace refcheck
