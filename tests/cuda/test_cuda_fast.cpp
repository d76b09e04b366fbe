// labels: gpu
// The CUDA backend's `fast` precision (FP8 GEMMs, bf16 latent cache, FP8 indexer keys)
// measured on every reference case against the float64 references, next to the `f32`
// precision on the same case: logits max |diff|, the overlap of the indexer's top-k
// sets, the tokens whose experts all agree, and greedy agreement under teacher forcing
// (each step fed the reference's ids, so one early difference does not hide the rest;
// where the argmax differs, the reference's top-2 logit gap there).
//
// Stated tolerances of `fast` (the f32 precision is held to the CPU's, 2e-3):
//  - where every indexer selection and every expert choice equals the reference's,
//    logits max |diff| <= 0.25 at logit rms ~1: each FP8 GEMM rounds its activations to
//    e4m3 (3 mantissa bits, ~2.5% relative RMS, test_cuda_ops) and the latent cache is
//    bf16 (measured at most 0.04 on these cases);
//  - the references were drawn with selection and routing margins of only 2e-5, while
//    FP8 indexer keys move scores by ~3% (test_cuda_ops' bound): the first sparse layer
//    (whose inputs no earlier selection touched) may lose at most max(1, 15% of top-k)
//    of each row's reference selection. Once a selection or an expert differs, later
//    layers and the logits inherit it; those numbers are printed, not held
//    (docs/PERF.md records them).
#include "reference_check.h"

#include <cstdio>
#include <filesystem>

namespace {

const std::string kData = DSI_TEST_DATA_DIR;

struct Stats {
    double logits = 0, topk_overlap_min = 1, topk_overlap_sum = 0;
    int64_t topk_rows = 0, expert_tokens = 0, expert_same = 0, greedy = 0, greedy_same = 0;
    bool sparse = false;  // some row has more candidates than top-k
    int64_t topk = 0;
    double worst_gap_where_parted = 0;
    std::map<int64_t, double> layer_overlap_min;  // per sparse layer
};

dsi_session *open(const std::string &dir, dsi_gpu_precision precision) {
    dsi_session_params p = dsi_session_default_params();
    p.backend = DSI_BACKEND_CUDA;
    p.gpu_precision = precision;
    dsi_session *s = nullptr;
    REQUIRE_MESSAGE(dsi_session_open(dir.c_str(), &p, &s) == DSI_OK, dsi_last_error());
    return s;
}

Stats measure(const std::string &dir, const refcheck::Reference &ref, dsi_gpu_precision precision) {
    Stats st;
    dsi_session *s = open(dir, precision);
    const dsi::ModelConfig &cfg = s->model->cfg;
    const auto ids = ref.tensor<int32_t>("input_ids");
    const int64_t T = static_cast<int64_t>(ids.size());
    st.sparse = cfg.is_sparse() && T > cfg.index_topk;
    st.topk = cfg.index_topk;
    {
        refcheck::CpuContext ctx(s);
        refcheck::Recorder rec;
        dsi::context_eval(ctx.c, ids.data(), ids.size(), DSI_EVAL_LOGITS_ALL, &rec);
        st.logits = refcheck::compare(dsi_context_logits(ctx.c, 0), ref.tensor<float>("logits")).max_abs;
        for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
            const std::string name = "L" + std::to_string(l) + ".topk";
            if (ref.has(name)) {
                std::vector<int64_t> shape;
                const auto want_rows = ref.tensor<int32_t>(name, &shape);
                for (int64_t t = 0; t < T; ++t) {
                    std::set<int32_t> want;
                    for (int64_t j = 0; j < shape[1]; ++j)
                        if (want_rows[t * shape[1] + j] <= t) want.insert(want_rows[t * shape[1] + j]);
                    int64_t common = 0;
                    for (int32_t x : rec.selections[l][static_cast<size_t>(t)]) common += want.count(x);
                    const double overlap = want.empty() ? 1.0 : static_cast<double>(common) / want.size();
                    st.topk_overlap_min = std::min(st.topk_overlap_min, overlap);
                    auto it = st.layer_overlap_min.emplace(l, 1.0).first;
                    it->second = std::min(it->second, overlap);
                    st.topk_overlap_sum += overlap;
                    ++st.topk_rows;
                }
            }
            const std::string ename = "L" + std::to_string(l) + ".experts";
            if (ref.has(ename)) {
                std::vector<int64_t> shape;
                const auto want = ref.tensor<int32_t>(ename, &shape);
                for (int64_t t = 0; t < T; ++t) {
                    const auto &got = rec.experts_of[l][static_cast<size_t>(t)];
                    st.expert_same += std::equal(got.begin(), got.end(), want.begin() + t * shape[1]);
                    ++st.expert_tokens;
                }
            }
        }
    }
    if (ref.has("greedy_ids")) {
        const auto want = ref.tensor<int32_t>("greedy_ids");
        const auto want_logits = ref.tensor<float>("greedy_logits");
        const int64_t V = dsi_session_n_vocab(s);
        refcheck::CpuContext ctx(s);
        REQUIRE(dsi_context_eval(ctx.c, ids.data(), ids.size(), DSI_EVAL_LOGITS_LAST) == DSI_OK);
        for (size_t step = 0; step < want.size(); ++step) {
            const float *logits = dsi_context_logits(ctx.c, -1);
            REQUIRE(logits != nullptr);
            const int32_t got = static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
            ++st.greedy;
            if (got == want[step]) {
                ++st.greedy_same;
            } else {
                std::vector<float> row(want_logits.begin() + step * V, want_logits.begin() + (step + 1) * V);
                std::partial_sort(row.begin(), row.begin() + 2, row.end(), std::greater<float>());
                st.worst_gap_where_parted = std::max(st.worst_gap_where_parted, static_cast<double>(row[0] - row[1]));
            }
            REQUIRE(dsi_context_eval(ctx.c, &want[step], 1, DSI_EVAL_LOGITS_LAST) == DSI_OK);
        }
    }
    dsi_session_free(s);
    return st;
}

void report(const std::string &label, const std::string &dir, const refcheck::Reference &ref) {
    for (auto precision : {DSI_GPU_PRECISION_F32, DSI_GPU_PRECISION_FAST}) {
        const Stats st = measure(dir, ref, precision);
        const bool fast = precision == DSI_GPU_PRECISION_FAST;
        std::printf("[test_cuda_fast] %-22s %-4s logits max|diff| %.3g  top-k overlap mean %.4f min %.4f (%lld rows)  "
                    "experts same %lld/%lld  greedy same %lld/%lld (worst ref top-2 gap where parted %.3g)\n",
                    label.c_str(), fast ? "fast" : "f32", st.logits,
                    st.topk_rows ? st.topk_overlap_sum / st.topk_rows : 1.0, st.topk_overlap_min,
                    static_cast<long long>(st.topk_rows), static_cast<long long>(st.expert_same),
                    static_cast<long long>(st.expert_tokens), static_cast<long long>(st.greedy_same),
                    static_cast<long long>(st.greedy), st.worst_gap_where_parted);
        for (const auto &kv : st.layer_overlap_min)
            std::printf("[test_cuda_fast]   layer %lld top-k overlap min %.4f\n", static_cast<long long>(kv.first),
                        kv.second);
        if (!fast) {
            CHECK(st.logits <= 2e-3);
            continue;
        }
        const bool same = st.topk_overlap_min == 1.0 && st.expert_same == st.expert_tokens;
        if (same) CHECK(st.logits <= 0.25);
        if (st.sparse && !st.layer_overlap_min.empty()) {
            const double lost = (1.0 - st.layer_overlap_min.begin()->second) * static_cast<double>(st.topk);
            CHECK(lost <= std::max(1.0, 0.15 * static_cast<double>(st.topk)) + 1e-9);
        }
    }
}

}  // namespace

TEST_CASE("fast vs f32 precision on the golden and refdims references") {
    for (const std::string model : {"tiny-bf16", "tiny-fp8"})
        for (const std::string cs : {"case0", "case1"})
            report(model + " " + cs, kData + "/golden/" + model,
                   refcheck::Reference(kData + "/golden/tiny-golden.safetensors", cs + "."));
    report("refdims", kData + "/refdims", refcheck::Reference(kData + "/refdims/reference.safetensors", ""));
    std::vector<std::string> sweep;
    for (const auto &e : std::filesystem::directory_iterator(kData + "/sweep"))
        if (e.is_directory() && std::filesystem::exists(e.path() / "reference.safetensors")) sweep.push_back(e.path());
    std::sort(sweep.begin(), sweep.end());
    for (const auto &dir : sweep)
        for (const std::string part : {"short", "long"})
            report("sweep/" + std::filesystem::path(dir).filename().string() + " " + part, dir,
                   refcheck::Reference(dir + "/reference.safetensors", part + "."));
}
