// Scalar float32 kernels of the CPU backend, one row / one (token, head) at a time.
// They are the reference the CUDA kernels are tested against, and are themselves
// tested against naive formulas in tests/test_cpu_kernels.cpp.
#pragma once

#include "backend/backend.h"

#include <cmath>
#include <cstdint>
#include <vector>

namespace dsi {

// float32 value of every E4M3 byte.
const float *e4m3_lut();

namespace kernels {

inline float dot(const float *a, const float *b, int64_t n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
    return s;
}

// y[j] = x . w[j*k ...] for 4 consecutive rows of w: four independent accumulators
// share each load of x (one accumulator is bound by the add latency). Which rows use
// it depends only on the matrix shape, never on the number of input rows, so results
// do not depend on batch size.
inline void dot4(const float *x, const float *w, int64_t k, float *y) {
    const float *w0 = w, *w1 = w + k, *w2 = w + 2 * k, *w3 = w + 3 * k;
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int64_t i = 0; i < k; ++i) {
        s0 += x[i] * w0[i];
        s1 += x[i] * w1[i];
        s2 += x[i] * w2[i];
        s3 += x[i] * w3[i];
    }
    y[0] = s0, y[1] = s1, y[2] = s2, y[3] = s3;
}

// y += a * x
inline void axpy(float a, const float *x, float *y, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

void rms_norm_row(const float *x, const float *w, int64_t dim, float eps, float *y);
void layer_norm_row(const float *x, const float *w, const float *b, int64_t dim, float eps, float *y);

// Rotate rope_dim values at p by angles with cos c[i], sin s[i], i < rope_dim/2.
void rope_interleaved(float *p, int64_t rope_dim, const float *c, const float *s);
void rope_half_split(float *p, int64_t rope_dim, const float *c, const float *s);

// The CPU page layout (backend.h): per layer, page p is kPageTokens latent rows then
// kPageTokens rope-key rows (MLA), and kPageTokens indexer-key rows (index), float32.
// Offsets (in floats) of a slot's entries from the layer's base.
struct MlaPages {
    int64_t rank, rope;
    int64_t latent(int64_t slot) const {
        return (slot / kPageTokens) * kPageTokens * (rank + rope) + (slot % kPageTokens) * rank;
    }
    int64_t k_rope(int64_t slot) const {
        return (slot / kPageTokens) * kPageTokens * (rank + rope) + kPageTokens * rank + (slot % kPageTokens) * rope;
    }
};

// The physical slot of logical position `pos` of row r's sequence.
inline int64_t slot_of(const RowSequences &s, int64_t r, int64_t pos) {
    const int32_t page = s.page_table[s.row_seq[r] * s.page_table_stride + pos / kPageTokens];
    return static_cast<int64_t>(page) * kPageTokens + pos % kPageTokens;
}

// One (token, head) of SparseMlaParams; `probs` and `slots` are scratch.
void mla_attend_one(const SparseMlaParams &p, int64_t t, int64_t h, std::vector<float> &probs,
                    std::vector<int64_t> &slots);

// One query row of IndexerTopkParams; `scores` / `order` are scratch.
void indexer_select_one(const IndexerTopkParams &p, int64_t t, std::vector<float> &scores,
                        std::vector<int32_t> &order);

// One token of MoeRouteParams, given its router logits [n_experts].
void route_one(const MoeRouteParams &p, const float *logits, int64_t t);

}  // namespace kernels
}  // namespace dsi
