#include "backend_cpu/cpu_kernels.h"

#include <algorithm>
#include <array>
#include <limits>
#include <numeric>

namespace dsi {

const float *e4m3_lut() {
    static const std::array<float, 256> lut = [] {
        std::array<float, 256> t{};
        for (int i = 0; i < 256; ++i) t[static_cast<size_t>(i)] = e4m3_to_float(static_cast<uint8_t>(i));
        return t;
    }();
    return lut.data();
}

namespace kernels {

void rms_norm_row(const float *x, const float *w, int64_t dim, float eps, float *y) {
    double ss = 0.0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(x[i]) * x[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps));
    for (int64_t i = 0; i < dim; ++i) y[i] = x[i] * inv * w[i];
}

void layer_norm_row(const float *x, const float *w, const float *b, int64_t dim, float eps, float *y) {
    double mean = 0.0, var = 0.0;
    for (int64_t i = 0; i < dim; ++i) mean += x[i];
    mean /= static_cast<double>(dim);
    for (int64_t i = 0; i < dim; ++i) var += (x[i] - mean) * (x[i] - mean);
    var /= static_cast<double>(dim);  // biased, as torch.nn.LayerNorm
    const double inv = 1.0 / std::sqrt(var + eps);
    for (int64_t i = 0; i < dim; ++i) y[i] = static_cast<float>((x[i] - mean) * inv) * w[i] + b[i];
}

void rope_interleaved(float *p, int64_t rope_dim, const float *c, const float *s) {
    for (int64_t i = 0; i < rope_dim / 2; ++i) {
        const float a = p[2 * i], b = p[2 * i + 1];
        p[2 * i] = a * c[i] - b * s[i];
        p[2 * i + 1] = b * c[i] + a * s[i];
    }
}

void rope_half_split(float *p, int64_t rope_dim, const float *c, const float *s) {
    const int64_t half = rope_dim / 2;
    for (int64_t i = 0; i < half; ++i) {
        const float a = p[i], b = p[i + half];
        p[i] = a * c[i] - b * s[i];
        p[i + half] = b * c[i] + a * s[i];
    }
}

void mla_attend_one(const SparseMlaParams &p, int64_t t, int64_t h, std::vector<float> &probs,
                    std::vector<int64_t> &slots) {
    const int64_t rank = p.kv_lora_rank, rd = p.rope_dim;
    const float *base = static_cast<const float *>(p.mla_pages);
    const MlaPages pages{rank, rd};
    const float *ql = p.q_latent + (t * p.heads + h) * rank;
    const float *qr = p.q_rope + (t * p.heads + h) * rd;
    slots.clear();
    if (p.select) {
        const int32_t *sel = p.select + t * p.select_stride;
        for (int64_t j = 0; j < p.select_stride && sel[j] >= 0; ++j) slots.push_back(sel[j]);
    } else {
        const int64_t pos = p.seqs.row_pos[t];
        for (int64_t s = 0; s <= pos; ++s) slots.push_back(slot_of(p.seqs, t, s));
    }
    const int64_t n = static_cast<int64_t>(slots.size());
    probs.resize(static_cast<size_t>(n));
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < n; ++j) {
        probs[j] = p.scale * (dot(ql, base + pages.latent(slots[j]), rank) + dot(qr, base + pages.k_rope(slots[j]), rd));
        mx = std::max(mx, probs[j]);
    }
    double sum = 0.0;
    for (int64_t j = 0; j < n; ++j) {
        probs[j] = std::exp(probs[j] - mx);
        sum += probs[j];
    }
    float *out = p.out + (t * p.heads + h) * rank;
    std::fill(out, out + rank, 0.0f);
    const float inv = static_cast<float>(1.0 / sum);
    for (int64_t j = 0; j < n; ++j) axpy(probs[j] * inv, base + pages.latent(slots[j]), out, rank);
}

void indexer_select_one(const IndexerTopkParams &p, int64_t t, std::vector<float> &scores,
                        std::vector<int32_t> &order) {
    const int64_t n = p.seqs.row_pos[t] + 1;  // causal: positions 0..pos(t)
    int32_t *sel = p.select + t * p.topk;
    const int64_t kept = std::min(n, p.topk);
    if (kept <= 0) {
        // topk 0: nothing selected.
    } else if (n <= p.topk) {
        // Every earlier token fits: the selection is dense and needs no scores.
        std::iota(sel, sel + n, 0);
    } else {
        scores.assign(static_cast<size_t>(n), 0.0f);
        const float *w = p.weights + t * p.heads;
        const float *pages = static_cast<const float *>(p.index_pages);
        for (int64_t h = 0; h < p.heads; ++h) {
            const float *q = p.q + (t * p.heads + h) * p.dim;
            const float wh = w[h] * p.weight_scale;
            for (int64_t s = 0; s < n; ++s) {
                // ReLU per head before the weighted head sum.
                const float d = p.scale * dot(q, pages + slot_of(p.seqs, t, s) * p.dim, p.dim);
                if (d > 0.0f) scores[s] += wh * d;
            }
        }
        order.resize(static_cast<size_t>(n));
        std::iota(order.begin(), order.end(), 0);
        // Highest score first; equal scores (ReLU makes exact zeros common) go to the
        // lower, i.e. earlier, token index.
        auto better = [&](int32_t a, int32_t b) { return scores[a] != scores[b] ? scores[a] > scores[b] : a < b; };
        std::nth_element(order.begin(), order.begin() + (p.topk - 1), order.end(), better);
        std::sort(order.begin(), order.begin() + p.topk);
        std::copy(order.begin(), order.begin() + p.topk, sel);
    }
    std::fill(sel + std::max<int64_t>(kept, 0), sel + p.topk, -1);
    if (p.select_slots) {
        int32_t *slots = p.select_slots + t * p.topk;
        for (int64_t j = 0; j < p.topk; ++j) slots[j] = sel[j] < 0 ? -1 : static_cast<int32_t>(slot_of(p.seqs, t, sel[j]));
    }
}

void route_one(const MoeRouteParams &p, const float *logits, int64_t t) {
    const int64_t E = p.n_experts, per_group = E / p.n_group;
    std::vector<float> score(static_cast<size_t>(E)), choice(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) {
        score[e] = 1.0f / (1.0f + std::exp(-logits[e]));
        choice[e] = score[e] + p.bias[e];
    }
    // A group's score is the sum of its two best biased scores.
    std::vector<float> group_score(static_cast<size_t>(p.n_group));
    std::vector<int32_t> idx(static_cast<size_t>(std::max(E, p.n_group)));
    for (int64_t g = 0; g < p.n_group; ++g) {
        std::vector<float> v(choice.begin() + g * per_group, choice.begin() + (g + 1) * per_group);
        const int64_t k = std::min<int64_t>(2, per_group);
        std::partial_sort(v.begin(), v.begin() + k, v.end(), std::greater<float>());
        group_score[g] = std::accumulate(v.begin(), v.begin() + k, 0.0f);
    }
    // Ties in both selections go to the lower index.
    auto top = [&](const std::vector<float> &val, int64_t n, int64_t k) {
        std::iota(idx.begin(), idx.begin() + n, 0);
        std::partial_sort(idx.begin(), idx.begin() + k, idx.begin() + n, [&](int32_t a, int32_t b) {
            return val[a] != val[b] ? val[a] > val[b] : a < b;
        });
    };
    top(group_score, p.n_group, p.topk_group);
    std::vector<char> allowed(static_cast<size_t>(E), 0);
    for (int64_t i = 0; i < p.topk_group; ++i)
        std::fill(allowed.begin() + idx[i] * per_group, allowed.begin() + (idx[i] + 1) * per_group, 1);
    for (int64_t e = 0; e < E; ++e)
        if (!allowed[e]) choice[e] = -std::numeric_limits<float>::infinity();
    top(choice, E, p.top_k);
    int32_t *ids = p.expert_ids + t * p.top_k;
    float *wts = p.expert_weights + t * p.top_k;
    double sum = 0.0;
    for (int64_t j = 0; j < p.top_k; ++j) {
        ids[j] = idx[j];
        wts[j] = score[idx[j]];
        sum += wts[j];
    }
    const double norm = p.norm_topk_prob ? 1.0 / (sum + 1e-20) : 1.0;
    for (int64_t j = 0; j < p.top_k; ++j)
        wts[j] = static_cast<float>(wts[j] * norm * p.routed_scaling_factor);
}

}  // namespace kernels
}  // namespace dsi
