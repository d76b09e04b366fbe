// The float32 reference backend. Weights stay as stored (memory-mapped BF16/F32 or
// FP8 with block scales) and are dequantised a tile of rows at a time inside each op,
// so an FP8 checkpoint is never expanded to float32 as a whole. Threads: OpenMP, with
// the count chosen per calling thread (set_thread_compute_threads) so that contexts
// sharing one session can each use their own.
#include "backend/backend.h"
#include "backend_cpu/cpu_kernels.h"
#include "common/error.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace dsi {

static thread_local int t_compute_threads = 0;

void set_thread_compute_threads(int n_threads) { t_compute_threads = n_threads; }

namespace {

// Rows of W dequantised per tile: small enough to spread a few-hundred-row matrix
// over all threads, large enough to amortise the per-tile setup.
constexpr int64_t kTileRows = 16;

// Below this many multiply-adds an op runs on one thread: waking a team costs more.
constexpr int64_t kParallelWork = 1 << 16;

class CpuMatrix : public Matrix {
public:
    explicit CpuMatrix(const MatrixSource &src) : src_(src) {
        rows = src.weight->shape[0];
        cols = src.weight->shape[1];
        if (src.scale_inv) {
            // Copied: safetensors data need not be 4-byte aligned for a float load.
            scales_.resize(static_cast<size_t>(src.scale_inv->numel()));
            std::memcpy(scales_.data(), src.scale_inv->data, src.scale_inv->nbytes);
        }
    }
    // Writes rows [row0, row0+n) as float32 into out[n, cols].
    void dequant_rows(int64_t row0, int64_t n, float *out) const {
        const TensorInfo &w = *src_.weight;
        if (w.dtype == DType::BF16) {
            // bf16 is the high half of a float32: widen without a call per element.
            const uint8_t *p = w.data + row0 * cols * 2;
            for (int64_t i = 0; i < n * cols; ++i) {
                uint16_t h;
                std::memcpy(&h, p + 2 * i, 2);
                const uint32_t bits = static_cast<uint32_t>(h) << 16;
                std::memcpy(out + i, &bits, 4);
            }
            return;
        }
        if (w.dtype != DType::F8_E4M3) {
            convert_to_float(w, row0 * cols, n * cols, out);
            return;
        }
        const float *scales = scales_.data();
        const int64_t scale_cols = src_.scale_inv->shape[1], bc = src_.block_cols;
        const float *lut = e4m3_lut();
        for (int64_t r = 0; r < n; ++r) {
            const int64_t row = row0 + r;
            const uint8_t *q = w.data + row * cols;
            const float *srow = scales + (row / src_.block_rows) * scale_cols;
            float *o = out + r * cols;
            for (int64_t c0 = 0, b = 0; c0 < cols; c0 += bc, ++b) {
                const float scale = srow[b];
                const int64_t c1 = std::min(cols, c0 + bc);
                for (int64_t c = c0; c < c1; ++c) o[c] = lut[q[c]] * scale;
            }
        }
    }

private:
    MatrixSource src_;
    std::vector<float> scales_;  // [ceil(rows/block_rows), ceil(cols/block_cols)] for FP8
};

const CpuMatrix &cpu(const Matrix &m) { return static_cast<const CpuMatrix &>(m); }

void release_host(void *p) { std::free(p); }

// One float32 array per layer and kind (backend.h: the CPU page layout).
class CpuCachePool : public CachePool {
public:
    std::vector<Buffer> storage;
};

class CpuBackend : public Backend {
public:
    explicit CpuBackend(int n_threads)
        : default_threads_(n_threads > 0 ? n_threads : omp_get_num_procs()) {}

    const char *name() const override { return "cpu"; }

    // Inside a team (experts run in parallel) every op runs on its calling thread.
    int threads() const {
        if (omp_in_parallel()) return 1;
        return t_compute_threads > 0 ? t_compute_threads : default_threads_;
    }

    Buffer alloc(size_t bytes) override {
        // 64-byte alignment for vector loads; at least one line so empty tensors are valid.
        size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
        void *p = std::aligned_alloc(64, rounded);
        if (!p) fail(DSI_ERR_NO_MEMORY, "cannot allocate %zu bytes of host memory", bytes);
        return Buffer(p, bytes, release_host);
    }
    void to_host(const void *src, size_t bytes, void *dst) override { std::memcpy(dst, src, bytes); }
    void from_host(const void *src, size_t bytes, void *dst) override { std::memcpy(dst, src, bytes); }
    void copy(const void *src, size_t bytes, void *dst) override { std::memmove(dst, src, bytes); }

    size_t cache_page_bytes(const CacheDims &d) const override {
        return static_cast<size_t>(d.layers * kPageTokens * (d.kv_lora_rank + d.rope_dim + d.index_dim)) * sizeof(float);
    }

    // A quarter of the memory the kernel reports available: weights are memory-mapped
    // and compete for the same RAM. Pages are only touched when used.
    size_t default_cache_budget() const override {
        const long pages = sysconf(_SC_AVPHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);
        if (pages <= 0 || page_size <= 0) return size_t(1) << 30;
        return static_cast<size_t>(pages) * static_cast<size_t>(page_size) / 4;
    }

    std::unique_ptr<CachePool> alloc_cache_pool(const CacheDims &d, int64_t n_pages) override {
        auto pool = std::make_unique<CpuCachePool>();
        pool->dims = d;
        pool->n_pages = n_pages;
        pool->mla_page_bytes = static_cast<size_t>(kPageTokens * (d.kv_lora_rank + d.rope_dim)) * sizeof(float);
        pool->index_page_bytes = static_cast<size_t>(kPageTokens * d.index_dim) * sizeof(float);
        for (int64_t l = 0; l < d.layers; ++l) {
            pool->storage.push_back(alloc(pool->mla_page_bytes * static_cast<size_t>(n_pages)));
            pool->mla.push_back(pool->storage.back().f32());
            if (d.index_dim > 0) {
                pool->storage.push_back(alloc(pool->index_page_bytes * static_cast<size_t>(n_pages)));
                pool->index.push_back(pool->storage.back().f32());
            }
        }
        return pool;
    }

    void copy_page(CachePool &pool, int64_t src, int64_t dst) override {
        for (int64_t l = 0; l < pool.dims.layers; ++l) {
            char *m = static_cast<char *>(pool.mla[l]);
            std::memcpy(m + dst * pool.mla_page_bytes, m + src * pool.mla_page_bytes, pool.mla_page_bytes);
            if (pool.index.empty()) continue;
            char *ix = static_cast<char *>(pool.index[l]);
            std::memcpy(ix + dst * pool.index_page_bytes, ix + src * pool.index_page_bytes, pool.index_page_bytes);
        }
    }

    void cache_store(const CacheStoreParams &p) override {
        float *base = static_cast<float *>(p.mla_pages);
        const kernels::MlaPages mla{p.kv_lora_rank, p.rope_dim};
        const size_t fr = sizeof(float);
        for (int64_t r = 0; r < p.rows; ++r) {
            const int64_t slot = p.slots[r];
            if (slot < 0) continue;
            std::memcpy(base + mla.latent(slot), p.latent + r * p.latent_stride, p.kv_lora_rank * fr);
            std::memcpy(base + mla.k_rope(slot), p.k_rope + r * p.k_rope_stride, p.rope_dim * fr);
            if (p.index_pages)
                std::memcpy(static_cast<float *>(p.index_pages) + slot * p.index_dim, p.index_key + r * p.index_dim,
                            p.index_dim * fr);
        }
    }

    void cache_gather(const CacheGatherParams &p) override {
        const float *base = static_cast<const float *>(p.mla_pages);
        const kernels::MlaPages mla{p.kv_lora_rank, p.rope_dim};
        const size_t fr = sizeof(float);
        for (int64_t r = 0; r < p.rows; ++r) {
            const int64_t slot = p.slots[r];
            std::memcpy(p.latent + r * p.kv_lora_rank, base + mla.latent(slot), p.kv_lora_rank * fr);
            std::memcpy(p.k_rope + r * p.rope_dim, base + mla.k_rope(slot), p.rope_dim * fr);
            if (p.index_pages)
                std::memcpy(p.index_key + r * p.index_dim, static_cast<const float *>(p.index_pages) + slot * p.index_dim,
                            p.index_dim * fr);
        }
    }

    std::unique_ptr<Matrix> prepare_matrix(const MatrixSource &src) override {
        return std::make_unique<CpuMatrix>(src);
    }
    Buffer prepare_vector(const TensorInfo &t) override {
        Buffer b = alloc(static_cast<size_t>(t.numel()) * sizeof(float));
        convert_to_float(t, 0, t.numel(), b.f32());
        return b;
    }

    void embed(const Matrix &table, const int32_t *ids, int64_t n, float *out) override {
        const int64_t dim = table.cols;
#pragma omp parallel for num_threads(threads())
        for (int64_t i = 0; i < n; ++i) cpu(table).dequant_rows(ids[i], 1, out + i * dim);
    }

    void rms_norm(const float *x, const float *w, int64_t rows, int64_t dim, float eps, float *y) override {
#pragma omp parallel for num_threads(threads()) if (rows > 1)
        for (int64_t r = 0; r < rows; ++r) kernels::rms_norm_row(x + r * dim, w, dim, eps, y + r * dim);
    }

    void layer_norm(const float *x, const float *w, const float *b, int64_t rows, int64_t dim, float eps,
                    float *y) override {
#pragma omp parallel for num_threads(threads()) if (rows > 1)
        for (int64_t r = 0; r < rows; ++r) kernels::layer_norm_row(x + r * dim, w, b, dim, eps, y + r * dim);
    }

    void linear(const float *x, int64_t rows, const Matrix &w, float *y) override {
        const int64_t n_out = w.rows, k = w.cols;
        const int64_t tiles = (n_out + kTileRows - 1) / kTileRows;
#pragma omp parallel num_threads(threads()) if (rows * n_out * k >= kParallelWork)
        {
            std::vector<float> tile(static_cast<size_t>(kTileRows * k));
#pragma omp for schedule(dynamic)
            for (int64_t t = 0; t < tiles; ++t) {
                const int64_t r0 = t * kTileRows, nr = std::min(kTileRows, n_out - r0);
                cpu(w).dequant_rows(r0, nr, tile.data());
                for (int64_t i = 0; i < rows; ++i) {
                    const float *xi = x + i * k;
                    float *yi = y + i * n_out + r0;
                    int64_t r = 0;
                    for (; r + 4 <= nr; r += 4) kernels::dot4(xi, tile.data() + r * k, k, yi + r);
                    for (; r < nr; ++r) yi[r] = kernels::dot(xi, tile.data() + r * k, k);
                }
            }
        }
    }

    void add(float *y, const float *x, int64_t n) override {
        for (int64_t i = 0; i < n; ++i) y[i] += x[i];
    }

    void rope(const HeadView &v, int64_t rope_dim, RopeStyle style, const int32_t *positions,
              const RopeTable &table) override {
        for (int64_t r = 0; r < v.rows; ++r) {
            const float *c = table.cos + positions[r] * table.half_dim;
            const float *s = table.sin + positions[r] * table.half_dim;
            for (int64_t h = 0; h < v.heads; ++h) {
                float *p = v.x + r * v.row_stride + h * v.head_stride + v.offset;
                if (style == RopeStyle::Interleaved)
                    kernels::rope_interleaved(p, rope_dim, c, s);
                else
                    kernels::rope_half_split(p, rope_dim, c, s);
            }
        }
    }

    void copy_rows(const float *src, int64_t src_stride, int64_t rows, int64_t cols, float *dst,
                   int64_t dst_stride) override {
        for (int64_t r = 0; r < rows; ++r)
            std::memmove(dst + r * dst_stride, src + r * src_stride, static_cast<size_t>(cols) * sizeof(float));
    }

    void gather_rows(const float *src, const int32_t *index, int64_t n, int64_t cols, float *dst) override {
        for (int64_t i = 0; i < n; ++i)
            std::memcpy(dst + i * cols, src + index[i] * cols, static_cast<size_t>(cols) * sizeof(float));
    }

    void mla_absorb_q(const HeadView &q_nope, const Matrix &kv_b, int64_t nope_dim, int64_t v_dim,
                      float *q_latent) override {
        const int64_t rank = kv_b.cols;
#pragma omp parallel num_threads(threads()) if (q_nope.rows * q_nope.heads * nope_dim * rank >= kParallelWork)
        {
            std::vector<float> w_uk(static_cast<size_t>(nope_dim * rank));
#pragma omp for
            for (int64_t h = 0; h < q_nope.heads; ++h) {
                cpu(kv_b).dequant_rows(h * (nope_dim + v_dim), nope_dim, w_uk.data());
                for (int64_t t = 0; t < q_nope.rows; ++t) {
                    const float *q = q_nope.x + t * q_nope.row_stride + h * q_nope.head_stride + q_nope.offset;
                    float *out = q_latent + (t * q_nope.heads + h) * rank;
                    std::fill(out, out + rank, 0.0f);
                    for (int64_t i = 0; i < nope_dim; ++i) kernels::axpy(q[i], w_uk.data() + i * rank, out, rank);
                }
            }
        }
    }

    void mla_apply_v(const float *latent_out, int64_t tokens, int64_t heads, const Matrix &kv_b,
                     int64_t nope_dim, int64_t v_dim, float *out) override {
        const int64_t rank = kv_b.cols;
#pragma omp parallel num_threads(threads()) if (tokens * heads * v_dim * rank >= kParallelWork)
        {
            std::vector<float> w_uv(static_cast<size_t>(v_dim * rank));
#pragma omp for
            for (int64_t h = 0; h < heads; ++h) {
                cpu(kv_b).dequant_rows(h * (nope_dim + v_dim) + nope_dim, v_dim, w_uv.data());
                for (int64_t t = 0; t < tokens; ++t) {
                    const float *lat = latent_out + (t * heads + h) * rank;
                    for (int64_t j = 0; j < v_dim; ++j)
                        out[t * heads * v_dim + h * v_dim + j] = kernels::dot(lat, w_uv.data() + j * rank, rank);
                }
            }
        }
    }

    void sparse_mla(const SparseMlaParams &p) override {
        int64_t keys = 0;  // keys read over all rows (the parallel threshold)
        for (int64_t t = 0; t < p.tokens; ++t) keys += p.select ? p.select_stride : p.seqs.row_pos[t] + 1;
#pragma omp parallel num_threads(threads()) if (keys * p.heads * (p.kv_lora_rank + p.rope_dim) >= kParallelWork)
        {
            std::vector<float> probs;
            std::vector<int64_t> slots;
#pragma omp for collapse(2) schedule(dynamic)
            for (int64_t t = 0; t < p.tokens; ++t)
                for (int64_t h = 0; h < p.heads; ++h) kernels::mla_attend_one(p, t, h, probs, slots);
        }
    }

    void indexer_topk(const IndexerTopkParams &p) override {
        int64_t keys = 0;
        for (int64_t t = 0; t < p.tokens; ++t) keys += p.seqs.row_pos[t] + 1;
        // Parallel over query rows: a single decode row stays on one thread.
        const bool parallel = p.tokens > 1 && keys * p.heads * p.dim >= kParallelWork;
#pragma omp parallel num_threads(threads()) if (parallel)
        {
            std::vector<float> scores;
            std::vector<int32_t> order;
#pragma omp for schedule(dynamic)
            for (int64_t t = 0; t < p.tokens; ++t) kernels::indexer_select_one(p, t, scores, order);
        }
    }

    void moe_route(const MoeRouteParams &p) override {
        std::vector<float> logits(static_cast<size_t>(p.tokens * p.n_experts));
        linear(p.x, p.tokens, *p.gate, logits.data());
#pragma omp parallel for num_threads(threads()) if (p.tokens > 1)
        for (int64_t t = 0; t < p.tokens; ++t) kernels::route_one(p, logits.data() + t * p.n_experts, t);
    }

    void mlp(const float *x, int64_t tokens, const MlpWeights &w, float *y) override {
        const int64_t inter = w.gate->rows;
        std::vector<float> gate(static_cast<size_t>(tokens * inter)), up(gate.size());
        linear(x, tokens, *w.gate, gate.data());
        linear(x, tokens, *w.up, up.data());
        for (size_t i = 0; i < gate.size(); ++i) gate[i] = kernels::silu(gate[i]) * up[i];
        linear(gate.data(), tokens, *w.down, y);
    }

    void moe_experts(const float *x, int64_t tokens, int64_t hidden, const int32_t *expert_ids,
                     const float *expert_weights, int64_t top_k, const MlpWeights *experts,
                     int64_t n_experts, float *y) override {
        std::fill(y, y + tokens * hidden, 0.0f);
        // Gather the tokens of each expert so its weights are dequantised once per call.
        std::vector<std::vector<int64_t>> slots(static_cast<size_t>(n_experts));
        for (int64_t i = 0; i < tokens * top_k; ++i) slots[static_cast<size_t>(expert_ids[i])].push_back(i);
        std::vector<int64_t> active;
        for (int64_t e = 0; e < n_experts; ++e)
            if (!slots[static_cast<size_t>(e)].empty()) active.push_back(e);
        // With at least one expert per thread (decode, short prompts) the experts run in
        // parallel, each on one thread; otherwise each expert's matrices use every thread.
        // Either way outputs are summed in expert order, so results do not depend on it.
        const int64_t n_active = static_cast<int64_t>(active.size());
        std::vector<std::vector<float>> outputs(active.size());
#pragma omp parallel for num_threads(threads()) schedule(dynamic) if (n_active >= threads())
        for (int64_t i = 0; i < n_active; ++i) {
            const int64_t e = active[static_cast<size_t>(i)];
            const auto &s = slots[static_cast<size_t>(e)];
            const int64_t n = static_cast<int64_t>(s.size());
            std::vector<float> xs(static_cast<size_t>(n * hidden));
            for (int64_t j = 0; j < n; ++j)
                std::memcpy(&xs[j * hidden], x + (s[j] / top_k) * hidden, hidden * sizeof(float));
            outputs[static_cast<size_t>(i)].resize(xs.size());
            mlp(xs.data(), n, experts[e], outputs[static_cast<size_t>(i)].data());
        }
        for (int64_t i = 0; i < n_active; ++i) {
            const auto &s = slots[static_cast<size_t>(active[static_cast<size_t>(i)])];
            const float *ys = outputs[static_cast<size_t>(i)].data();
            for (size_t j = 0; j < s.size(); ++j)
                kernels::axpy(expert_weights[s[j]], ys + j * hidden, y + (s[j] / top_k) * hidden, hidden);
        }
    }

private:
    int default_threads_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int n_threads) { return std::make_unique<CpuBackend>(n_threads); }

}  // namespace dsi
