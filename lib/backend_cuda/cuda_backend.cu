// The CUDA backend: the Backend interface on kernels/ and cuBLASLt.
//
// Devices: every entry point makes the session's GPU (dsi_session_params.gpu_device)
// current on the calling thread for its duration (DeviceScope), so any thread may call.
// Streams and memory: every op is issued on the calling thread's per-thread default
// stream (cudaStreamPerThread) of that GPU, so contexts evaluated from different threads of one
// session run concurrently, and scratch comes from the stream-ordered allocator
// (cudaMallocAsync / cudaFreeAsync, its pool kept), so a decode step issues kernels and
// copies only: no cudaMalloc, no host synchronisation, until to_host() reads results.
// Weights and the cache pool are plain cudaMalloc (allocated once per session).
// Errors: every CUDA call and launch is checked; allocation failures are
// DSI_ERR_NO_MEMORY naming the bytes asked and free, and leave the session usable;
// anything else is DSI_ERR_BACKEND with CUDA's message.
#include "backend_cuda/cuda_backend.h"

#include "common/error.h"
#include "gemm/fp8_gemm.h"
#include "gemm/gemm.h"
#include "indexer/indexer.h"
#include "mla/mla.h"
#include "moe/moe.h"
#include "norm_rope/norm_rope.h"
#include "topk/topk.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <map>
#include <utility>
#include <mutex>
#include <vector>

namespace dsi {
namespace {

using cuda::WeightRef;
using cuda::WeightType;

void check(cudaError_t e, const char *what) {
    if (e == cudaSuccess) return;
    cudaGetLastError();  // clear a non-sticky error so the session stays usable
    fail(DSI_ERR_BACKEND, "CUDA error in %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}
#define CK(expr) check((expr), #expr)

[[noreturn]] void out_of_memory(size_t bytes, const char *what) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    fail(DSI_ERR_NO_MEMORY, "GPU out of memory: %s asked for %zu bytes, %zu of %zu bytes free", what, bytes, free_b,
         total_b);
}

void *device_alloc(size_t bytes, const char *what) {
    void *p = nullptr;
    const cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 1));
    if (e == cudaErrorMemoryAllocation) out_of_memory(bytes, what);
    check(e, what);
    return p;
}
// Makes `device` current on the calling thread for one backend call and gives the caller
// its own current device back afterwards: whichever thread calls into a session (the
// opener, a context's thread, a Buffer's release) works on the session's GPU, and the
// application's CUDA state is left as it was. cudaGetDevice is a thread-local read; the
// switch costs only where the thread's device differs.
class DeviceScope {
public:
    // Throws DSI_ERR_BACKEND if the device cannot be made current, unless `quiet`
    // (releases, which run in destructors).
    explicit DeviceScope(int device, bool quiet = false) {
        if (cudaGetDevice(&prev_) != cudaSuccess) {
            cudaGetLastError();
            prev_ = -1;
        }
        if (prev_ == device) return;
        const cudaError_t e = cudaSetDevice(device);
        if (e == cudaSuccess)
            set_ = true;
        else if (quiet)
            cudaGetLastError();
        else
            check(e, "cudaSetDevice");
    }
    ~DeviceScope() {
        if (set_ && prev_ >= 0) cudaSetDevice(prev_);
    }
    DeviceScope(const DeviceScope &) = delete;
    DeviceScope &operator=(const DeviceScope &) = delete;

private:
    int prev_ = -1;
    bool set_ = false;
};

// A Buffer's release is a plain function pointer, so the device it frees on is part of
// the function: one instance per device ordinal.
using Release = void (*)(void *);
constexpr int kMaxDevices = 64;
template <int D>
void release_sync_on(void *p) {
    const DeviceScope scope(D, true);
    cudaFree(p);
}
template <int D>
void release_async_on(void *p) {
    const DeviceScope scope(D, true);
    cudaFreeAsync(p, cudaStreamPerThread);
}
template <int... D>
constexpr std::array<Release, sizeof...(D)> sync_releases(std::integer_sequence<int, D...>) {
    return {&release_sync_on<D>...};
}
template <int... D>
constexpr std::array<Release, sizeof...(D)> async_releases(std::integer_sequence<int, D...>) {
    return {&release_async_on<D>...};
}
constexpr auto kReleaseSync = sync_releases(std::make_integer_sequence<int, kMaxDevices>());
constexpr auto kReleaseAsync = async_releases(std::make_integer_sequence<int, kMaxDevices>());

cudaStream_t stream() { return cudaStreamPerThread; }

class CudaMatrix : public Matrix {
public:
    Buffer data, scale;
    WeightRef ref;
};

const WeightRef &wref(const Matrix &m) { return static_cast<const CudaMatrix &>(m).ref; }

class CudaCachePool : public CachePool {
public:
    Buffer storage;
};

// Row-chunk limit of the indexer's score scratch [rows, max_len] float32.
constexpr size_t kScoreScratchBytes = size_t(256) << 20;

class CudaBackend : public Backend {
public:
    CudaBackend(int device, GpuPrecision precision) : device_(device), precision_(precision) {
        const DeviceScope scope(device_);
        CK(cudaGetDeviceProperties(&props_, device));
        // Keep freed scratch in the pool instead of returning it to the driver per call.
        cudaMemPool_t pool;
        CK(cudaDeviceGetDefaultMemPool(&pool, device));
        uint64_t threshold = UINT64_MAX;
        CK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
        workspace_ = Buffer(device_alloc(kWorkspaceBytes, "cuBLASLt workspace"), kWorkspaceBytes, kReleaseSync[device_]);
        if (fp8_.init(workspace_.f32(), kWorkspaceBytes) != CUBLAS_STATUS_SUCCESS)
            fail(DSI_ERR_BACKEND, "cuBLASLt initialisation failed");
        name_ = strformat("cuda:%d %s (%s)", device, props_.name, precision == GpuPrecision::F32 ? "f32" : "fast");
    }

    const char *name() const override { return name_.c_str(); }

    // ---- memory ----
    Buffer alloc(size_t bytes) override {
        const DeviceScope scope(device_);
        void *p = nullptr;
        const cudaError_t e = cudaMallocAsync(&p, std::max<size_t>(bytes, 1), stream());
        if (e == cudaErrorMemoryAllocation) out_of_memory(bytes, "a scratch buffer");
        check(e, "cudaMallocAsync");
        return Buffer(p, bytes, kReleaseAsync[device_]);
    }
    void to_host(const void *src, size_t bytes, void *dst) override {
        const DeviceScope scope(device_);
        if (bytes == 0) return;
        CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream()));
        CK(cudaStreamSynchronize(stream()));
    }
    void from_host(const void *src, size_t bytes, void *dst) override {
        const DeviceScope scope(device_);
        // Pageable source: staged before return, so the caller may free it at once.
        if (bytes) CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream()));
    }
    void copy(const void *src, size_t bytes, void *dst) override {
        const DeviceScope scope(device_);
        if (bytes) CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream()));
    }

    // ---- the paged cache pool ----
    bool f32() const { return precision_ == GpuPrecision::F32; }
    cuda::KeyFormat key_format() const { return f32() ? cuda::KeyFormat::F32 : cuda::KeyFormat::FP8; }
    // FP8 keys (and queries) are Hadamard-rotated as in DeepSeek's reference where the
    // transform exists: index dims that are powers of two up to 1024 (128 when released).
    bool rotate_index(int64_t dim) const {
        return !f32() && hadamard_ && dim > 0 && dim <= 1024 && (dim & (dim - 1)) == 0;
    }
    // DSI_CUDA_INDEXER_HADAMARD=0 leaves FP8 index keys unrotated: a measurement switch
    // (tests/cuda/test_cuda_fast.cpp, docs/ACCURACY.md), not a product setting.
    const bool hadamard_ = [] {
        const char *v = std::getenv("DSI_CUDA_INDEXER_HADAMARD");
        return !(v && std::strcmp(v, "0") == 0);
    }();
    size_t mla_page_bytes(const CacheDims &d) const {
        return static_cast<size_t>(kPageTokens * (d.kv_lora_rank + d.rope_dim) * (f32() ? 4 : 2));
    }
    size_t index_page_bytes(const CacheDims &d) const {
        return d.index_dim ? static_cast<size_t>(cuda::index_key_page_bytes(key_format(), d.index_dim)) : 0;
    }
    size_t cache_page_bytes(const CacheDims &d) const override {
        return static_cast<size_t>(d.layers) * (mla_page_bytes(d) + index_page_bytes(d));
    }
    // Half of the free GPU memory at the time of asking (after the weights are loaded),
    // leaving the rest for activations, cuBLASLt and other processes.
    size_t default_cache_budget() const override {
        const DeviceScope scope(device_);
        size_t free_b = 0, total_b = 0;
        CK(cudaMemGetInfo(&free_b, &total_b));
        return free_b / 2;
    }
    std::unique_ptr<CachePool> alloc_cache_pool(const CacheDims &d, int64_t n_pages) override {
        const DeviceScope scope(device_);
        auto pool = std::make_unique<CudaCachePool>();
        pool->dims = d;
        pool->n_pages = n_pages;
        pool->mla_page_bytes = mla_page_bytes(d);
        pool->index_page_bytes = index_page_bytes(d);
        const size_t layer_bytes = static_cast<size_t>(n_pages) * (pool->mla_page_bytes + pool->index_page_bytes);
        const size_t bytes = layer_bytes * static_cast<size_t>(d.layers);
        pool->storage = Buffer(device_alloc(bytes, "the cache pool"), bytes, kReleaseSync[device_]);
        auto *base = static_cast<uint8_t *>(static_cast<void *>(pool->storage.f32()));
        for (int64_t l = 0; l < d.layers; ++l) {
            uint8_t *layer = base + static_cast<size_t>(l) * layer_bytes;
            pool->mla.push_back(layer);
            if (d.index_dim) pool->index.push_back(layer + static_cast<size_t>(n_pages) * pool->mla_page_bytes);
        }
        return pool;
    }
    void copy_page(CachePool &pool, int64_t src, int64_t dst) override {
        const DeviceScope scope(device_);
        for (size_t l = 0; l < pool.mla.size(); ++l) {
            auto *m = static_cast<uint8_t *>(pool.mla[l]);
            copy(m + src * pool.mla_page_bytes, pool.mla_page_bytes, m + dst * pool.mla_page_bytes);
            if (!pool.index.empty()) {
                auto *x = static_cast<uint8_t *>(pool.index[l]);
                copy(x + src * pool.index_page_bytes, pool.index_page_bytes, x + dst * pool.index_page_bytes);
            }
        }
    }
    void cache_store(const CacheStoreParams &p) override {
        const DeviceScope scope(device_);
        cuda::MlaStoreParams m;
        m.latent = p.latent; m.latent_stride = p.latent_stride;
        m.k_rope = p.k_rope; m.k_rope_stride = p.k_rope_stride;
        m.slots = p.slots; m.T = p.rows; m.rank = p.kv_lora_rank; m.rope_dim = p.rope_dim;
        m.cache = p.mla_pages; m.cache_bf16 = !f32();
        CK(cuda::launch_mla_store(m, stream()));
        if (!p.index_pages || p.rows == 0) return;
        cuda::IndexerStoreParams ix;
        ix.k = p.index_key; ix.T = p.rows; ix.dim = p.index_dim; ix.slots = p.slots;
        ix.keys = p.index_pages; ix.format = key_format();
        Buffer rotated;
        if (rotate_index(p.index_dim)) {
            // DeepSeek's FP8 indexer rotates keys (and queries) by a Hadamard transform
            // before quantising; q.k is unchanged, the quantisation error is not.
            rotated = alloc(static_cast<size_t>(p.rows * p.index_dim) * sizeof(float));
            copy(p.index_key, rotated.bytes(), rotated.f32());
            CK(cuda::launch_hadamard(rotated.f32(), p.rows, p.index_dim, stream()));
            ix.k = rotated.f32();
        }
        CK(cuda::launch_indexer_store(ix, stream()));
    }
    void cache_gather(const CacheGatherParams &p) override {
        const DeviceScope scope(device_);
        cuda::MlaGatherParams m;
        m.cache = p.mla_pages; m.cache_bf16 = !f32(); m.slots = p.slots; m.T = p.rows;
        m.rank = p.kv_lora_rank; m.rope_dim = p.rope_dim; m.latent = p.latent; m.k_rope = p.k_rope;
        CK(cuda::launch_mla_gather(m, stream()));
        if (!p.index_pages) return;
        CK(cuda::launch_indexer_gather(p.index_pages, key_format(), p.slots, p.rows, p.index_dim, p.index_key, stream()));
        // FP8 keys are stored rotated: rotating again undoes it (H H = I for the
        // normalised transform).
        if (rotate_index(p.index_dim)) CK(cuda::launch_hadamard(p.index_key, p.rows, p.index_dim, stream()));
    }

    // ---- weights ----
    std::unique_ptr<Matrix> prepare_matrix(const MatrixSource &src) override {
        const DeviceScope scope(device_);
        const TensorInfo &w = *src.weight;
        if (w.shape.size() != 2) fail(DSI_ERR_CHECKPOINT, "%s: a weight matrix must be 2-D", w.name.c_str());
        auto m = std::make_unique<CudaMatrix>();
        m->rows = w.shape[0];
        m->cols = w.shape[1];
        const size_t n = static_cast<size_t>(m->rows * m->cols);
        m->ref.rows = m->rows;
        m->ref.cols = m->cols;
        const bool fp8_blocks = w.dtype == DType::F8_E4M3 && src.scale_inv && src.block_rows == cuda::kFp8Block &&
                                src.block_cols == cuda::kFp8Block;
        if (fp8_blocks) {
            m->data = upload(w.data, n, w.name.c_str());
            // Scales in cuBLASLt's BLK128x128 layout: column stride rounded up to 4.
            const int64_t sr = src.scale_inv->shape[0], sc = src.scale_inv->shape[1];
            const int64_t stride = cuda::fp8_scale_stride(m->cols);
            std::vector<float> s(static_cast<size_t>(sr * sc)), padded(static_cast<size_t>(sr * stride), 0.0f);
            convert_to_float(*src.scale_inv, 0, sr * sc, s.data());
            for (int64_t r = 0; r < sr; ++r) std::copy(&s[r * sc], &s[r * sc] + sc, &padded[r * stride]);
            m->scale = upload(padded.data(), padded.size() * sizeof(float), w.name.c_str());
            m->ref.type = WeightType::FP8;
            m->ref.scale = m->scale.f32();
            m->ref.scale_stride = stride;
        } else if (w.dtype == DType::BF16) {
            m->data = upload(w.data, n * 2, w.name.c_str());
            m->ref.type = WeightType::BF16;
        } else {
            // F32 / F16, or FP8 with another block shape: float32 on the host, once.
            std::vector<float> f(n);
            if (w.dtype == DType::F8_E4M3) {
                if (!src.scale_inv) fail(DSI_ERR_CHECKPOINT, "%s: FP8 weight without scales", w.name.c_str());
                std::vector<float> s(static_cast<size_t>(src.scale_inv->numel()));
                convert_to_float(*src.scale_inv, 0, src.scale_inv->numel(), s.data());
                const int64_t sc = src.scale_inv->shape[1];
                for (int64_t r = 0; r < m->rows; ++r)
                    for (int64_t c = 0; c < m->cols; ++c)
                        f[r * m->cols + c] = e4m3_to_float(w.data[r * m->cols + c]) *
                                             s[(r / src.block_rows) * sc + c / src.block_cols];
            } else {
                convert_to_float(w, 0, static_cast<int64_t>(n), f.data());
            }
            m->data = upload(f.data(), n * 4, w.name.c_str());
            m->ref.type = WeightType::F32;
        }
        m->ref.data = m->data.f32();
        return m;
    }
    Buffer prepare_vector(const TensorInfo &t) override {
        const DeviceScope scope(device_);
        std::vector<float> f(static_cast<size_t>(t.numel()));
        convert_to_float(t, 0, t.numel(), f.data());
        return upload(f.data(), f.size() * sizeof(float), t.name.c_str());
    }

    // ---- ops ----
    void embed(const Matrix &table, const int32_t *ids, int64_t n, float *out) override {
        const DeviceScope scope(device_);
        CK(cuda::launch_embed(wref(table), ids, n, out, stream()));
    }
    void rms_norm(const float *x, const float *w, int64_t rows, int64_t dim, float eps, float *y) override {
        const DeviceScope scope(device_);
        norm(x, w, nullptr, rows, dim, eps, y);
    }
    void layer_norm(const float *x, const float *w, const float *b, int64_t rows, int64_t dim, float eps,
                    float *y) override {
        const DeviceScope scope(device_);
        norm(x, w, b, rows, dim, eps, y);
    }
    void linear(const float *x, int64_t rows, const Matrix &w, float *y) override {
        const DeviceScope scope(device_);
        if (rows == 0) return;
        if (!f32() && fp8_linear(x, rows, w, y)) return;
        cuda::GemmParams p;
        p.x = x; p.ldx = w.cols; p.M = rows; p.w = wref(w); p.N = w.rows; p.K = w.cols; p.y = y; p.ldy = w.rows;
        CK(cuda::launch_gemm(p, stream()));
    }
    void add(float *y, const float *x, int64_t n) override {
        const DeviceScope scope(device_);
        CK(cuda::launch_add(y, x, n, stream()));
    }
    void rope(const HeadView &v, int64_t rope_dim, RopeStyle style, const int32_t *positions,
              const RopeTable &table) override {
        const DeviceScope scope(device_);
        cuda::RopeParams p;
        p.x = v.x; p.rows = v.rows; p.row_stride = v.row_stride; p.heads = v.heads; p.head_stride = v.head_stride;
        p.offset = v.offset; p.rope_dim = rope_dim; p.interleaved = style == RopeStyle::Interleaved;
        p.positions = positions; p.cos = table.cos; p.sin = table.sin;
        CK(cuda::launch_rope(p, stream()));
    }
    void copy_rows(const float *src, int64_t src_stride, int64_t rows, int64_t cols, float *dst,
                   int64_t dst_stride) override {
        const DeviceScope scope(device_);
        if (rows == 0 || cols == 0) return;
        CK(cudaMemcpy2DAsync(dst, dst_stride * sizeof(float), src, src_stride * sizeof(float), cols * sizeof(float),
                             rows, cudaMemcpyDeviceToDevice, stream()));
    }
    void gather_rows(const float *src, const int32_t *index, int64_t n, int64_t cols, float *dst) override {
        const DeviceScope scope(device_);
        CK(cuda::launch_gather_rows(src, index, n, cols, dst, stream()));
    }
    // Per head: q_latent[t,h] = W_UK[h]^T q_nope[t,h], W_UK[h] = kv_b rows [h(nope+v), +nope).
    void mla_absorb_q(const HeadView &q, const Matrix &kv_b, int64_t nope_dim, int64_t v_dim,
                      float *q_latent) override {
        const DeviceScope scope(device_);
        const int64_t rank = kv_b.cols;
        cuda::GemmParams p;
        p.x = q.x + q.offset; p.ldx = q.row_stride; p.M = q.rows; p.w = wref(kv_b); p.w_transposed = true;
        p.N = rank; p.K = nope_dim; p.y = q_latent; p.ldy = q.heads * rank;
        p.batches = q.heads; p.x_batch_stride = q.head_stride; p.y_batch_stride = rank;
        p.w_row_offset = 0; p.w_row_batch_stride = nope_dim + v_dim;
        CK(cuda::launch_gemm(p, stream()));
    }
    // Per head: out[t, h*v + j] = W_UV[h] latent_out[t,h], W_UV[h] = kv_b rows [h(nope+v)+nope, +v).
    void mla_apply_v(const float *latent_out, int64_t tokens, int64_t heads, const Matrix &kv_b, int64_t nope_dim,
                     int64_t v_dim, float *out) override {
        const DeviceScope scope(device_);
        const int64_t rank = kv_b.cols;
        cuda::GemmParams p;
        p.x = latent_out; p.ldx = heads * rank; p.M = tokens; p.w = wref(kv_b);
        p.N = v_dim; p.K = rank; p.y = out; p.ldy = heads * v_dim;
        p.batches = heads; p.x_batch_stride = rank; p.y_batch_stride = v_dim;
        p.w_row_offset = nope_dim; p.w_row_batch_stride = nope_dim + v_dim;
        CK(cuda::launch_gemm(p, stream()));
    }
    void sparse_mla(const SparseMlaParams &s) override {
        const DeviceScope scope(device_);
        cuda::MlaParams p;
        p.q_latent = s.q_latent; p.q_rope = s.q_rope; p.cache = s.mla_pages; p.cache_bf16 = !f32();
        p.pages = cuda::PageTable{s.seqs.page_table, s.seqs.page_table_stride};
        p.rows = cuda::RowInfo{s.seqs.row_seq, s.seqs.row_pos};
        p.select = s.select; p.select_stride = s.select_stride;
        p.T = s.tokens; p.heads = s.heads; p.rank = s.kv_lora_rank; p.rope_dim = s.rope_dim; p.scale = s.scale;
        p.out = s.out;
        // One or two query rows per sequence (decode, MTP): too few rows to fill the GPU,
        // so the decode kernel splits each row's keys; more rows: the prefill kernel.
        if (s.seqs.n_seqs == 0 || s.tokens > 2 * s.seqs.n_seqs) {
            CK(cuda::launch_mla_prefill(p, stream()));
            return;
        }
        p.splits = cuda::mla_decode_splits(p, props_.multiProcessorCount);
        Buffer partial;
        if (p.splits > 1) {
            partial = alloc(cuda::mla_decode_partial_floats(p) * sizeof(float));
            p.partial = partial.f32();
        }
        CK(cuda::launch_mla_decode(p, stream()));
    }
    void indexer_topk(const IndexerTopkParams &ip) override {
        const DeviceScope scope(device_);
        if (ip.tokens == 0) return;
        // The longest sequence a row can have is what its page-table row can address;
        // rows past their own position skip the work.
        const int64_t max_len = ip.seqs.page_table_stride * kPageTokens;
        const cuda::PageTable pages{ip.seqs.page_table, ip.seqs.page_table_stride};
        const float *q = ip.q;
        Buffer rotated;
        if (rotate_index(ip.dim)) {
            rotated = alloc(static_cast<size_t>(ip.tokens * ip.heads * ip.dim) * sizeof(float));
            copy(ip.q, rotated.bytes(), rotated.f32());
            CK(cuda::launch_hadamard(rotated.f32(), ip.tokens * ip.heads, ip.dim, stream()));
            q = rotated.f32();
        }
        const int64_t chunk = std::max<int64_t>(1, static_cast<int64_t>(kScoreScratchBytes / (max_len * sizeof(float))));
        Buffer scores = alloc(static_cast<size_t>(std::min(chunk, ip.tokens) * max_len) * sizeof(float));
        for (int64_t t0 = 0; t0 < ip.tokens; t0 += chunk) {
            const int64_t n = std::min(chunk, ip.tokens - t0);
            const cuda::RowInfo rows{ip.seqs.row_seq + t0, ip.seqs.row_pos + t0};
            cuda::IndexerScoreParams p;
            p.q = q + t0 * ip.heads * ip.dim; p.w = ip.weights + t0 * ip.heads;
            p.weight_scale = ip.weight_scale; p.scale = ip.scale;
            p.keys = ip.index_pages; p.format = key_format(); p.pages = pages; p.rows = rows;
            p.T = n; p.heads = ip.heads; p.dim = ip.dim; p.max_len = max_len;
            p.scores = scores.f32(); p.score_stride = max_len;
            CK(cuda::launch_indexer_scores(p, stream()));
            cuda::TopkParams k;
            k.scores = scores.f32(); k.score_stride = max_len; k.rows = rows; k.T = n; k.k = ip.topk;
            k.select = ip.select + t0 * ip.topk;
            k.pages = pages;
            k.select_slots = ip.select_slots ? ip.select_slots + t0 * ip.topk : nullptr;
            CK(cuda::launch_topk(k, stream()));
        }
    }
    void moe_route(const MoeRouteParams &r) override {
        const DeviceScope scope(device_);
        if (r.tokens == 0) return;
        Buffer logits = alloc(static_cast<size_t>(r.tokens * r.n_experts) * sizeof(float));
        // The router runs in float32 in both precisions (DeepSeek's gate is float32).
        gemm_f32(r.x, r.tokens, *r.gate, logits.f32());
        cuda::MoeRouteParams p;
        p.logits = logits.f32(); p.bias = r.bias; p.T = r.tokens; p.n_experts = r.n_experts; p.n_group = r.n_group;
        p.topk_group = r.topk_group; p.top_k = r.top_k; p.norm_topk_prob = r.norm_topk_prob;
        p.routed_scaling_factor = r.routed_scaling_factor; p.expert_ids = r.expert_ids;
        p.expert_weights = r.expert_weights;
        CK(cuda::launch_moe_route(p, stream()));
    }
    void moe_experts(const float *x, int64_t tokens, int64_t hidden, const int32_t *expert_ids,
                     const float *expert_weights, int64_t top_k, const MlpWeights *experts, int64_t n_experts,
                     float *y) override {
        const DeviceScope scope(device_);
        if (tokens == 0) return;
        const ExpertTables &tab = expert_tables(experts, n_experts);
        const int64_t n = tokens * top_k, inter = experts[0].gate->rows;
        Buffer index = alloc(static_cast<size_t>(2 * n + 2 * (n_experts + 1)) * sizeof(int32_t));
        int32_t *sorted_pos = index.i32(), *sorted_token = sorted_pos + n, *group_rows = sorted_token + n,
                *group_tiles = group_rows + n_experts + 1;
        cuda::MoeSortParams sp;
        sp.expert_ids = expert_ids; sp.T = tokens; sp.top_k = top_k; sp.n_experts = n_experts;
        sp.sorted_pos = sorted_pos; sp.sorted_token = sorted_token; sp.group_rows = group_rows;
        sp.group_tiles = group_tiles;
        CK(cuda::launch_moe_sort(sp, stream()));
        Buffer act = alloc(static_cast<size_t>(n * inter) * sizeof(float));
        Buffer out = alloc(static_cast<size_t>(n * hidden) * sizeof(float));
        // One grouped launch per projection: gate and up fused (SwiGLU epilogue), then down.
        cuda::GemmParams g;
        g.x = x; g.ldx = hidden; g.x_rows = sorted_token; g.M = n; g.N = inter; g.K = hidden; g.gated = true;
        g.group_w = tab.gate; g.group_w_up = tab.up; g.group_rows = group_rows; g.group_tiles = group_tiles;
        g.groups = static_cast<int32_t>(n_experts); g.max_tiles = (n + 63) / 64 + n_experts;
        g.y = act.f32(); g.ldy = inter;
        CK(cuda::launch_gemm(g, stream()));
        cuda::GemmParams d = g;
        d.x = act.f32(); d.ldx = inter; d.x_rows = nullptr; d.N = hidden; d.K = inter; d.gated = false;
        d.group_w = tab.down; d.group_w_up = nullptr; d.y = out.f32(); d.ldy = hidden;
        CK(cuda::launch_gemm(d, stream()));
        cuda::MoeCombineParams c;
        c.expert_out = out.f32(); c.sorted_pos = sorted_pos; c.expert_weights = expert_weights; c.T = tokens;
        c.top_k = top_k; c.hidden = hidden; c.y = y;
        CK(cuda::launch_moe_combine(c, stream()));
    }
    void mlp(const float *x, int64_t tokens, const MlpWeights &w, float *y) override {
        const DeviceScope scope(device_);
        if (tokens == 0) return;
        const int64_t inter = w.gate->rows;
        Buffer act = alloc(static_cast<size_t>(tokens * inter) * sizeof(float));
        if (!f32() && fp8_ok(*w.gate, tokens) && fp8_ok(*w.up, tokens)) {
            Buffer up = alloc(act.bytes());
            linear(x, tokens, *w.gate, act.f32());
            linear(x, tokens, *w.up, up.f32());
            CK(cuda::launch_silu_mul(act.f32(), up.f32(), tokens * inter, stream()));
        } else {
            cuda::GemmParams g;
            g.x = x; g.ldx = w.gate->cols; g.M = tokens; g.N = inter; g.K = w.gate->cols; g.gated = true;
            g.w = wref(*w.gate); g.w_up = wref(*w.up); g.y = act.f32(); g.ldy = inter;
            CK(cuda::launch_gemm(g, stream()));
        }
        linear(act.f32(), tokens, *w.down, y);
    }

private:
    static constexpr size_t kWorkspaceBytes = size_t(32) << 20;

    struct ExpertTables {
        Buffer storage;
        const WeightRef *gate = nullptr, *up = nullptr, *down = nullptr;
    };

    Buffer upload(const void *host, size_t bytes, const char *what) {
        Buffer b(device_alloc(bytes, what), bytes, kReleaseSync[device_]);
        CK(cudaMemcpy(b.f32(), host, bytes, cudaMemcpyHostToDevice));
        return b;
    }

    void norm(const float *x, const float *w, const float *b, int64_t rows, int64_t dim, float eps, float *y) {
        cuda::NormParams p;
        p.x = x; p.w = w; p.b = b; p.rows = rows; p.dim = dim; p.ldx = dim; p.ldy = dim; p.eps = eps;
        p.layer_norm = b != nullptr; p.y = y;
        CK(cuda::launch_norm(p, stream()));
    }

    void gemm_f32(const float *x, int64_t rows, const Matrix &w, float *y) {
        cuda::GemmParams p;
        p.x = x; p.ldx = w.cols; p.M = rows; p.w = wref(w); p.N = w.rows; p.K = w.cols; p.y = y; p.ldy = w.rows;
        CK(cuda::launch_gemm(p, stream()));
    }

    bool fp8_ok(const Matrix &w, int64_t rows) const {
        return rows > 0 && wref(w).type == WeightType::FP8 && cuda::Fp8Gemm::shape_ok(w.rows, w.cols);
    }

    // cuBLASLt's block-scaled FP8 GEMM; false when the shape or the library declines it.
    // Any token count: the quantised activations are padded to cuBLASLt's multiple.
    bool fp8_linear(const float *x, int64_t rows, const Matrix &w, float *y) {
        if (!fp8_ok(w, rows)) return false;
        const int64_t K = w.cols, kb = (K + 127) / 128, padded = cuda::Fp8Gemm::padded_tokens(rows);
        Buffer q = alloc(static_cast<size_t>(padded * K));
        auto *xq = static_cast<uint8_t *>(static_cast<void *>(q.f32()));
        Buffer scales = alloc(static_cast<size_t>(padded * kb) * sizeof(float));
        CK(cuda::launch_quantize_fp8(x, rows, padded, K, K, xq, scales.f32(), stream()));
        const WeightRef &r = wref(w);
        std::lock_guard<std::mutex> lock(fp8_mutex_);
        const cublasStatus_t st = fp8_.run(static_cast<const uint8_t *>(r.data), r.scale, w.rows, K, xq,
                                           scales.f32(), rows, y, stream());
        if (st == CUBLAS_STATUS_NOT_SUPPORTED) return false;
        if (st == CUBLAS_STATUS_ALLOC_FAILED)
            out_of_memory(static_cast<size_t>(kWorkspaceBytes + padded * w.rows * 4), "cuBLASLt FP8 scratch");
        if (st != CUBLAS_STATUS_SUCCESS) fail(DSI_ERR_BACKEND, "cuBLASLt FP8 matmul failed (status %d)", static_cast<int>(st));
        return true;
    }

    const ExpertTables &expert_tables(const MlpWeights *experts, int64_t n) {
        std::lock_guard<std::mutex> lock(experts_mutex_);
        auto it = expert_tables_.find(experts);
        if (it != expert_tables_.end()) return it->second;
        std::vector<WeightRef> refs(static_cast<size_t>(3 * n));
        for (int64_t e = 0; e < n; ++e) {
            refs[e] = wref(*experts[e].gate);
            refs[n + e] = wref(*experts[e].up);
            refs[2 * n + e] = wref(*experts[e].down);
        }
        ExpertTables t;
        t.storage = upload(refs.data(), refs.size() * sizeof(WeightRef), "the expert table");
        auto *base = reinterpret_cast<const WeightRef *>(t.storage.f32());
        t.gate = base;
        t.up = base + n;
        t.down = base + 2 * n;
        return expert_tables_.emplace(experts, std::move(t)).first->second;
    }

    int device_;
    GpuPrecision precision_;
    cudaDeviceProp props_{};
    std::string name_;
    Buffer workspace_;
    cuda::Fp8Gemm fp8_;
    std::mutex fp8_mutex_, experts_mutex_;
    std::map<const MlpWeights *, ExpertTables> expert_tables_;
};

}  // namespace

bool cuda_backend_available(int device, std::string *why) {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        if (why) *why = strformat("no usable CUDA driver or GPU (%s)", cudaGetErrorString(e));
        return false;
    }
    if (device < 0 || device >= n || device >= kMaxDevices) {
        if (why) *why = strformat("CUDA device %d does not exist (%d found)", device, n);
        return false;
    }
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
        cudaGetLastError();
        if (why) *why = "cannot query the CUDA device";
        return false;
    }
    if (prop.major != 9) {
        if (why) *why = strformat("%s (sm_%d%d) is not a Hopper GPU; dsinfer's kernels are built for sm_90a", prop.name,
                                  prop.major, prop.minor);
        return false;
    }
    return true;
}

std::unique_ptr<Backend> make_cuda_backend(int device, GpuPrecision precision) {
    std::string why;
    if (!cuda_backend_available(device, &why)) fail(DSI_ERR_UNSUPPORTED, "CUDA backend unavailable: %s", why.c_str());
    return std::make_unique<CudaBackend>(device, precision);
}

}  // namespace dsi
