// labels: gpu
// The CUDA backend's `fast` precision (FP8 GEMMs, bf16 latent cache, FP8 indexer keys)
// measured against its `f32` precision on the same input, on every reference case
// (golden tiny-bf16 / tiny-fp8, refdims, the 26 sweep cases) and on the trained demo model.
// Per reference case: prefill logits max |diff|, the overlap of the indexer's top-k sets
// (rows with more candidates than top-k) and the tokens whose experts all agree, each
// against the f32 run; greedy agreement under teacher forcing (every step fed the
// reference's greedy ids, which f32 reproduces, so one early difference does not hide the
// rest) and, where fast's argmax parts from f32's, f32's top-2 logit gap there. The FP8
// indexer is measured with DeepSeek's Hadamard rotation (what the backend does) and
// without it (DSI_CUDA_INDEXER_HADAMARD=0). docs/ACCURACY.md has the tables and reasons.
//
// Held (the f32 precision to the CPU's tolerances, 2e-3):
//  - reference cases, where every indexer selection and expert choice equals f32's:
//    logits max |diff| <= 0.25 at logit rms ~1 (each FP8 GEMM rounds its activations to
//    e4m3, ~2.5% relative RMS per GEMM in test_cuda_ops; the latent cache is bf16);
//  - the references were drawn with selection and routing margins of only 2e-5, while FP8
//    indexer keys move scores by ~3% (test_cuda_ops' bound): the first sparse layer, whose
//    inputs no earlier selection touched, may lose at most max(1, 15% of top-k) of a row's
//    f32 selection. Once a selection or an expert differs, later layers and the logits
//    inherit it: those numbers are printed, not held;
//  - the demo model (real margins), fast against f32 on a fixed text it was not trained
//    on: mean loss within kDemoLoss nats, logits within kDemoLogits until a selection
//    differs, next-token argmax agreeing at >= kDemoTop1 of positions and of the steps of
//    two long greedy generations (reasons at the constants).
#include "greedy.h"
#include "reference_check.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace {

const std::string kData = DSI_TEST_DATA_DIR;
const std::string kRoot = kData + "/../..";

enum class Mode { F32, Fast, FastUnrotated };

const char *mode_name(Mode m) { return m == Mode::F32 ? "f32" : m == Mode::Fast ? "fast" : "fast-nohad"; }

dsi_session *open(const std::string &dir, Mode mode) {
    // Read by the backend when the session opens (lib/backend_cuda: a measurement switch).
    setenv("DSI_CUDA_INDEXER_HADAMARD", mode == Mode::FastUnrotated ? "0" : "1", 1);
    dsi_session_params p = dsi_session_default_params();
    p.backend = DSI_BACKEND_CUDA;
    p.gpu_precision = mode == Mode::F32 ? DSI_GPU_PRECISION_F32 : DSI_GPU_PRECISION_FAST;
    p.cache_budget = size_t(256) << 20;
    dsi_session *s = nullptr;
    REQUIRE_MESSAGE(dsi_session_open(dir.c_str(), &p, &s) == DSI_OK, dsi_last_error());
    return s;
}

using greedy::argmax;
using greedy::top2_gap;

double max_abs_diff(const float *a, const float *b, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; ++i) d = std::max(d, std::fabs(static_cast<double>(a[i]) - b[i]));
    return d;
}

// One precision's run of a reference case: the prefill (everything recorded), then the
// decode steps along the reference's greedy ids.
struct Pass {
    std::vector<float> logits;  // [T, vocab]
    refcheck::Recorder rec;
    std::vector<std::vector<float>> steps;  // logits of each decode step
};

Pass evaluate(const std::string &dir, const refcheck::Reference &ref, Mode mode) {
    Pass p;
    dsi_session *s = open(dir, mode);
    const int64_t V = dsi_session_n_vocab(s);
    const auto ids = ref.tensor<int32_t>("input_ids");
    {
        refcheck::CpuContext ctx(s);
        dsi::context_eval(ctx.c, ids.data(), ids.size(), DSI_EVAL_LOGITS_ALL, &p.rec);
        const float *l = dsi_context_logits(ctx.c, 0);
        p.logits.assign(l, l + ids.size() * V);
    }
    if (ref.has("greedy_ids")) {
        const auto want = ref.tensor<int32_t>("greedy_ids");
        refcheck::CpuContext ctx(s);
        REQUIRE(dsi_context_eval(ctx.c, ids.data(), ids.size(), DSI_EVAL_LOGITS_LAST) == DSI_OK);
        for (int32_t id : want) {
            const float *l = dsi_context_logits(ctx.c, -1);
            REQUIRE(l != nullptr);
            p.steps.emplace_back(l, l + V);
            REQUIRE(dsi_context_eval(ctx.c, &id, 1, DSI_EVAL_LOGITS_LAST) == DSI_OK);
        }
    }
    dsi_session_free(s);
    return p;
}

struct Compare {
    double logits = 0, decode_logits = 0;
    double overlap_sum = 0, overlap_min = 1, first_layer_overlap_min = 1;
    int64_t sparse_rows = 0, expert_tokens = 0, expert_same = 0, greedy = 0, greedy_same = 0;
    double widest_gap_parted = 0;  // f32's top-2 gap where fast's argmax parts from it
    bool selections_same = true;
};

Compare compare(const Pass &f32, const Pass &fast, int64_t topk, int64_t V) {
    Compare c;
    c.logits = max_abs_diff(f32.logits.data(), fast.logits.data(), f32.logits.size());
    bool first = true;
    for (const auto &kv : f32.rec.selections) {
        const auto &want = kv.second;
        const auto &got = fast.rec.selections.at(kv.first);
        double layer_min = 1;
        for (size_t t = 0; t < want.size(); ++t) {
            c.selections_same = c.selections_same && want[t] == got[t];
            if (static_cast<int64_t>(t) + 1 <= topk) continue;  // every candidate selected
            int64_t common = 0;
            for (int32_t x : got[t]) common += want[t].count(x);
            const double overlap = static_cast<double>(common) / static_cast<double>(want[t].size());
            c.overlap_sum += overlap;
            c.overlap_min = std::min(c.overlap_min, overlap);
            layer_min = std::min(layer_min, overlap);
            ++c.sparse_rows;
        }
        if (first) c.first_layer_overlap_min = layer_min;
        first = false;
    }
    for (const auto &kv : f32.rec.experts_of) {
        const auto &got = fast.rec.experts_of.at(kv.first);
        for (size_t t = 0; t < kv.second.size(); ++t) {
            c.expert_same += kv.second[t] == got[t];
            ++c.expert_tokens;
        }
    }
    for (size_t k = 0; k < f32.steps.size(); ++k) {
        const float *a = f32.steps[k].data(), *b = fast.steps[k].data();
        c.decode_logits = std::max(c.decode_logits, max_abs_diff(a, b, static_cast<size_t>(V)));
        ++c.greedy;
        if (argmax(a, V) == argmax(b, V)) ++c.greedy_same;
        else c.widest_gap_parted = std::max(c.widest_gap_parted, static_cast<double>(top2_gap(a, V)));
    }
    return c;
}

// The CUDA fast run's layer-0 output and logits as raw float32, for
// scripts/emulate_fast_fp8.py (DSI_FAST_DUMP=DIR).
void dump(const std::string &label, const Pass &p) {
    const char *dir = std::getenv("DSI_FAST_DUMP");
    if (!dir) return;
    std::string name = label;
    std::replace(name.begin(), name.end(), ' ', '_');
    auto write = [&](const std::string &what, const std::vector<float> &v) {
        std::ofstream f(std::string(dir) + "/" + name + "." + what + ".f32", std::ios::binary);
        f.write(reinterpret_cast<const char *>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
    };
    if (p.rec.layers.count(0)) write("L0", p.rec.layers.at(0));
    write("logits", p.logits);
}

// Sums over the reference cases where the rotation applies and some row is sparse:
// [0] rotated (what the backend does), [1] unrotated.
struct Totals {
    int64_t rows = 0, cases = 0, expert_same = 0, expert_tokens = 0, greedy_same = 0, greedy = 0;
    double overlap_sum = 0, first_layer_min_sum = 0;
};
Totals totals[2];

void report(const std::string &label, const std::string &dir, const refcheck::Reference &ref) {
    dsi_session *probe = open(dir, Mode::F32);
    const dsi::ModelConfig cfg = probe->model->cfg;
    const int64_t V = dsi_session_n_vocab(probe);
    dsi_session_free(probe);
    const int64_t topk = cfg.is_sparse() ? cfg.index_topk : 0;
    const bool sparse_rows = topk && static_cast<int64_t>(ref.tensor<int32_t>("input_ids").size()) > topk;
    // The backend rotates where a Hadamard transform of the index dim exists (a power of
    // two: 128 released, 64 in the demo model); other dims are quantised unrotated anyway.
    const int64_t dim = cfg.index_head_dim;
    const bool rotated = topk && dim > 0 && (dim & (dim - 1)) == 0;

    const Pass f32 = evaluate(dir, ref, Mode::F32);
    const double ref_logits = refcheck::compare(f32.logits.data(), ref.tensor<float>("logits")).max_abs;
    int64_t f32_greedy_same = 0;
    if (ref.has("greedy_ids")) {
        const auto want = ref.tensor<int32_t>("greedy_ids");
        for (size_t k = 0; k < want.size(); ++k) f32_greedy_same += argmax(f32.steps[k].data(), V) == want[k];
        CHECK_MESSAGE(f32_greedy_same == static_cast<int64_t>(want.size()), label << ": f32 greedy ids");
    }
    CHECK_MESSAGE(ref_logits <= 2e-3, label << ": f32 logits vs the reference " << ref_logits);
    std::printf("[test_cuda_fast] %-22s f32 vs reference: logits max|diff| %.3g, greedy %lld/%zu\n", label.c_str(),
                ref_logits, static_cast<long long>(f32_greedy_same), f32.steps.size());

    for (Mode mode : {Mode::Fast, Mode::FastUnrotated}) {
        // Unrotated differs only where some row has more candidates than top-k.
        if (mode == Mode::FastUnrotated && !(sparse_rows && rotated)) continue;
        const Pass fast = evaluate(dir, ref, mode);
        if (mode == Mode::Fast && label.rfind("tiny-fp8", 0) == 0) dump(label, fast);
        const Compare c = compare(f32, fast, topk, V);
        char overlap[96] = "n/a (no row has more candidates than top-k)";
        if (c.sparse_rows)
            std::snprintf(overlap, sizeof overlap, "mean %.4f min %.4f first-layer min %.4f (%lld rows)",
                          c.overlap_sum / c.sparse_rows, c.overlap_min, c.first_layer_overlap_min,
                          static_cast<long long>(c.sparse_rows));
        if (rotated && sparse_rows) {
            Totals &t = totals[mode == Mode::Fast ? 0 : 1];
            t.rows += c.sparse_rows;
            t.overlap_sum += c.overlap_sum;
            t.first_layer_min_sum += c.first_layer_overlap_min;
            ++t.cases;
            t.expert_same += c.expert_same;
            t.expert_tokens += c.expert_tokens;
            t.greedy_same += c.greedy_same;
            t.greedy += c.greedy;
        }
        std::printf("[test_cuda_fast] %-22s %-10s vs f32: logits max|diff| %.3g (decode %.3g)  top-k overlap %s  "
                    "experts same %lld/%lld  greedy same %lld/%lld (widest f32 top-2 gap where parted %.3g)\n",
                    label.c_str(), mode_name(mode), c.logits, c.decode_logits, overlap,
                    static_cast<long long>(c.expert_same), static_cast<long long>(c.expert_tokens),
                    static_cast<long long>(c.greedy_same), static_cast<long long>(c.greedy), c.widest_gap_parted);
        if (mode != Mode::Fast) continue;
        if (c.selections_same && c.expert_same == c.expert_tokens) CHECK_MESSAGE(c.logits <= 0.25, label);
        if (c.sparse_rows) {
            const double lost = (1.0 - c.first_layer_overlap_min) * static_cast<double>(topk);
            CHECK_MESSAGE(lost <= std::max(1.0, 0.15 * static_cast<double>(topk)) + 1e-9, label);
        }
    }
}

// The demo model (models/demo, trained; FP8 weights): fast against f32 on real margins.
// Loss: DeepSeek-V3 validated this FP8 scheme (1x128 activations, 128x128 weights) at a
// relative loss difference below 0.25% against bf16; 0.01 nats is 0.4% of this model's
// ~2.6.
constexpr double kDemoLoss = 0.01;
// Logits where no selection differs: no demo GEMM has the FP8 shape (K a multiple of 512),
// so that is the bf16 latent cache alone (2^-9 relative per element) at logit rms ~4.7;
// held to the reference cases' 0.25. Where FP8 index keys change a selection (most rows
// lose or gain a key or two: a ~3% score error against the trained model's near ties,
// ReLU zeros among them), a position's logits can move by several units: loss and
// argmax agreement are what say whether that matters.
constexpr double kDemoLogits = 0.25;
// Argmax: the next token (over the text) and every teacher-forced generation step agree
// with f32's at >= 97% of positions.
constexpr double kDemoTop1 = 0.97;

std::string read_file(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    REQUIRE_MESSAGE(f.good(), path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

TEST_CASE("fast vs f32 on the trained demo model: loss on a fixed text, long greedy generation") {
    const std::string dir = kRoot + "/models/demo";
    dsi_session *f32 = open(dir, Mode::F32);
    const int64_t V = dsi_session_n_vocab(f32);
    const int32_t n_ctx = dsi_session_n_ctx_train(f32);
    // A fixed text the model was not trained on (it was trained on CPython's standard
    // library): this repository's training script, Python source, 8 windows of n_ctx.
    const std::string text = read_file(kRoot + "/scripts/train_demo_model.py");
    const dsi_tokenizer *tok = dsi_session_tokenizer(f32);
    size_t n = 0;
    REQUIRE(dsi_tokenize(tok, text.data(), text.size(), 0, nullptr, 0, &n) == DSI_ERR_BUFFER_TOO_SMALL);
    std::vector<int32_t> ids(n);
    REQUIRE(dsi_tokenize(tok, text.data(), text.size(), 0, ids.data(), n, &n) == DSI_OK);
    const size_t windows = std::min<size_t>(8, n / static_cast<size_t>(n_ctx));
    REQUIRE(windows >= 4);

    for (Mode mode : {Mode::Fast, Mode::FastUnrotated}) {
        dsi_session *fast = open(dir, mode);
        double nll32 = 0, nll_fast = 0, logits = 0, widest_gap = 0;
        int64_t positions = 0, top1_same = 0;
        // Per position: whether its own indexer rows (all layers) and experts equal f32's.
        double logits_same_sel = 0, logits_untainted = 0, overlap_sum = 0, overlap_min = 1, logit_ss = 0, logit_max = 0;
        int64_t sparse_rows = 0, rows_same = 0, positions_same_sel = 0, positions_untainted = 0, expert_same = 0,
                expert_tokens = 0;
        std::vector<double> per_position;  // logits max |diff| of each position
        const int64_t topk = f32->model->cfg.index_topk;
        for (size_t w = 0; w < windows; ++w) {
            const int32_t *x = ids.data() + w * static_cast<size_t>(n_ctx);
            refcheck::CpuContext a(f32), b(fast);
            refcheck::Recorder ra, rb;
            dsi::context_eval(a.c, x, static_cast<size_t>(n_ctx), DSI_EVAL_LOGITS_ALL, &ra);
            dsi::context_eval(b.c, x, static_cast<size_t>(n_ctx), DSI_EVAL_LOGITS_ALL, &rb);
            std::vector<bool> own_same(static_cast<size_t>(n_ctx), true);
            // Positions before the first row (any layer) whose selection or experts differ
            // from f32's: nothing they depend on was chosen differently, so their logits show
            // the bf16 latent cache alone (rows up to top-k select every candidate).
            size_t untainted = static_cast<size_t>(n_ctx);
            for (const auto &kv : ra.selections) {
                const auto &got = rb.selections.at(kv.first);
                for (size_t t = 0; t < kv.second.size(); ++t) {
                    const bool same = kv.second[t] == got[t];
                    own_same[t] = own_same[t] && same;
                    if (!same) untainted = std::min(untainted, t);
                    if (static_cast<int64_t>(t) + 1 <= topk) continue;
                    int64_t common = 0;
                    for (int32_t i : got[t]) common += kv.second[t].count(i);
                    const double o = static_cast<double>(common) / static_cast<double>(kv.second[t].size());
                    overlap_sum += o;
                    overlap_min = std::min(overlap_min, o);
                    ++sparse_rows;
                    rows_same += same;
                }
            }
            for (const auto &kv : ra.experts_of) {
                const auto &got = rb.experts_of.at(kv.first);
                for (size_t t = 0; t < kv.second.size(); ++t) {
                    expert_same += kv.second[t] == got[t];
                    ++expert_tokens;
                    if (kv.second[t] != got[t]) untainted = std::min(untainted, t);
                }
            }
            for (int32_t t = 0; t + 1 < n_ctx; ++t) {
                const float *la = dsi_context_logits(a.c, t), *lb = dsi_context_logits(b.c, t);
                const double d = max_abs_diff(la, lb, static_cast<size_t>(V));
                logits = std::max(logits, d);
                per_position.push_back(d);
                if (static_cast<size_t>(t) < untainted) {
                    logits_untainted = std::max(logits_untainted, d);
                    ++positions_untainted;
                }
                if (own_same[static_cast<size_t>(t)]) {
                    logits_same_sel = std::max(logits_same_sel, d);
                    ++positions_same_sel;
                }
                for (int64_t v = 0; v < V; ++v) {
                    logit_ss += static_cast<double>(la[v]) * la[v];
                    logit_max = std::max(logit_max, std::fabs(static_cast<double>(la[v])));
                }
                for (int k = 0; k < 2; ++k) {
                    const float *l = k ? lb : la;
                    const float mx = *std::max_element(l, l + V);
                    double sum = 0;
                    for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(l[v] - mx));
                    (k ? nll_fast : nll32) += std::log(sum) + mx - l[x[t + 1]];
                }
                if (argmax(la, V) == argmax(lb, V)) ++top1_same;
                else widest_gap = std::max(widest_gap, static_cast<double>(top2_gap(la, V)));
                ++positions;
            }
        }
        nll32 /= static_cast<double>(positions);
        nll_fast /= static_cast<double>(positions);
        const double top1 = static_cast<double>(top1_same) / static_cast<double>(positions);
        std::printf("[test_cuda_fast] demo text (%zu x %d tokens) %-10s loss f32 %.5f fast %.5f (ppl %.4f vs %.4f, "
                    "diff %+.5f nats)  logits max|diff| %.3g  next-token argmax same %lld/%lld (%.4f; widest f32 "
                    "top-2 gap where parted %.3g)\n",
                    windows, n_ctx, mode_name(mode), nll32, nll_fast, std::exp(nll32), std::exp(nll_fast),
                    nll_fast - nll32, logits, static_cast<long long>(top1_same), static_cast<long long>(positions),
                    top1, widest_gap);
        std::sort(per_position.begin(), per_position.end());
        const auto pct = [&](double q) { return per_position[static_cast<size_t>(q * (per_position.size() - 1))]; };
        std::printf("[test_cuda_fast] demo text %-10s f32 logit rms %.3g max %.3g; per-position logits max|diff| "
                    "median %.3g p90 %.3g p99 %.3g max %.3g; at the %lld positions before any selection differs "
                    "(bf16 cache only) %.3g; at the %lld/%lld positions whose own indexer rows all equal f32's %.3g; "
                    "top-k overlap mean %.4f min %.4f, rows equal %lld/%lld; experts same %lld/%lld\n",
                    mode_name(mode), std::sqrt(logit_ss / (static_cast<double>(positions) * V)), logit_max, pct(0.5),
                    pct(0.9), pct(0.99), per_position.back(), static_cast<long long>(positions_untainted),
                    logits_untainted, static_cast<long long>(positions_same_sel), static_cast<long long>(positions),
                    logits_same_sel, sparse_rows ? overlap_sum / sparse_rows : 1.0, overlap_min,
                    static_cast<long long>(rows_same), static_cast<long long>(sparse_rows),
                    static_cast<long long>(expert_same), static_cast<long long>(expert_tokens));
        if (mode == Mode::Fast) {
            CHECK(std::fabs(nll_fast - nll32) <= kDemoLoss);
            CHECK(logits_untainted <= kDemoLogits);
            CHECK(top1 >= kDemoTop1);
        }

        // Long greedy generations to the model's context: reference.json's prompt (160
        // tokens of a validation file) and `def fibonacci(n):`. Free-running: the first
        // step where fast's ids part from f32's. Teacher-forced along f32's ids: argmax
        // agreement at every step, f32's top-2 gap where they part.
        const nlohmann::json refj = nlohmann::json::parse(read_file(dir + "/reference.json"));
        const std::vector<std::vector<int32_t>> prompts = {refj["prompt_ids"].get<std::vector<int32_t>>(),
                                                           refj["fibonacci"]["prompt_ids"].get<std::vector<int32_t>>()};
        for (const auto &prompt : prompts) {
            const int32_t steps = n_ctx - static_cast<int32_t>(prompt.size());
            std::vector<int32_t> gen32;
            std::vector<float> gaps32;
            {
                refcheck::CpuContext a(f32);
                REQUIRE(dsi_context_eval(a.c, prompt.data(), prompt.size(), DSI_EVAL_LOGITS_LAST) == DSI_OK);
                for (int32_t k = 0; k < steps; ++k) {
                    const float *l = dsi_context_logits(a.c, -1);
                    gen32.push_back(argmax(l, V));
                    gaps32.push_back(top2_gap(l, V));
                    if (k + 1 < steps) REQUIRE(dsi_context_eval(a.c, &gen32.back(), 1, DSI_EVAL_LOGITS_LAST) == DSI_OK);
                }
            }
            int32_t first_parted = -1, forced_same = 0;
            double widest = 0;
            {
                refcheck::CpuContext b(fast);  // teacher-forced along f32's ids
                REQUIRE(dsi_context_eval(b.c, prompt.data(), prompt.size(), DSI_EVAL_LOGITS_LAST) == DSI_OK);
                for (int32_t k = 0; k < steps; ++k) {
                    const int32_t got = argmax(dsi_context_logits(b.c, -1), V);
                    if (got == gen32[k]) ++forced_same;
                    else widest = std::max(widest, static_cast<double>(gaps32[k]));
                    if (got != gen32[k] && first_parted < 0) first_parted = k;  // = free-running parting
                    if (k + 1 < steps) REQUIRE(dsi_context_eval(b.c, &gen32[k], 1, DSI_EVAL_LOGITS_LAST) == DSI_OK);
                }
            }
            std::printf("[test_cuda_fast] demo greedy (prompt %zu, %d steps) %-10s free-running ids equal for %d steps; "
                        "teacher-forced argmax same %d/%d (widest f32 top-2 gap where parted %.3g; f32's smallest gap "
                        "%.3g)\n",
                        prompt.size(), steps, mode_name(mode), first_parted < 0 ? steps : first_parted, forced_same,
                        steps, widest, static_cast<double>(*std::min_element(gaps32.begin(), gaps32.end())));
            if (mode == Mode::Fast) CHECK(forced_same >= kDemoTop1 * steps);
        }
        dsi_session_free(fast);
    }
    dsi_session_free(f32);
}

}  // namespace

TEST_CASE("fast vs f32 precision on every reference case (golden, refdims, sweep)") {
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
    for (int k = 0; k < 2; ++k) {
        const Totals &t = totals[k];
        if (!t.cases) continue;
        std::printf("[test_cuda_fast] Hadamard %-9s over %lld cases with a rotatable index dim and sparse rows: "
                    "top-k overlap mean %.4f (%lld rows), first-layer min (mean over cases) %.4f, experts same %lld/%lld, "
                    "greedy same %lld/%lld\n",
                    k == 0 ? "rotated" : "unrotated", static_cast<long long>(t.cases), t.overlap_sum / t.rows,
                    static_cast<long long>(t.rows), t.first_layer_min_sum / t.cases, static_cast<long long>(t.expert_same),
                    static_cast<long long>(t.expert_tokens), static_cast<long long>(t.greedy_same),
                    static_cast<long long>(t.greedy));
    }
}
