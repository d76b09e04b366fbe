// The operations the DeepSeek-V3.2 forward pass needs, cut at the granularity that
// GPU kernels will implement (FlashMLA-style sparse MLA, DeepGEMM-style indexer
// logits + top-k, grouped MoE), so the CUDA backend slots in without touching
// lib/model. A backend owns its memory: every float* / int32_t* argument below is a
// pointer into memory from Backend::alloc (device memory on a GPU), except where a
// parameter says "host".
//
// Shapes are written [rows, cols], row-major, rows contiguous unless a stride is given.
#pragma once

#include "checkpoint/safetensors.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dsi {

// Where a weight matrix comes from: a checkpoint tensor [rows=out, cols=in], with
// F8_E4M3 block scales `scale_inv` [ceil(rows/block_rows), ceil(cols/block_cols)].
struct MatrixSource {
    const TensorInfo *weight = nullptr;
    const TensorInfo *scale_inv = nullptr;  // F8_E4M3 only
    int64_t block_rows = 128;
    int64_t block_cols = 128;
};

// A weight matrix prepared by a backend (kept as stored, dequantised on use on CPU).
class Matrix {
public:
    virtual ~Matrix() = default;
    int64_t rows = 0;  // output features
    int64_t cols = 0;  // input features
};

// A block of backend memory. Moving transfers ownership.
class Buffer {
public:
    Buffer() = default;
    Buffer(void *ptr, size_t bytes, void (*release)(void *)) : ptr_(ptr), bytes_(bytes), release_(release) {}
    Buffer(Buffer &&o) noexcept { *this = std::move(o); }
    Buffer &operator=(Buffer &&o) noexcept {
        if (this != &o) {
            reset();
            ptr_ = o.ptr_; bytes_ = o.bytes_; release_ = o.release_;
            o.ptr_ = nullptr; o.bytes_ = 0;
        }
        return *this;
    }
    Buffer(const Buffer &) = delete;
    Buffer &operator=(const Buffer &) = delete;
    ~Buffer() { reset(); }

    float *f32() const { return static_cast<float *>(ptr_); }
    int32_t *i32() const { return static_cast<int32_t *>(ptr_); }
    size_t bytes() const { return bytes_; }

private:
    void reset() { if (ptr_ && release_) release_(ptr_); ptr_ = nullptr; }
    void *ptr_ = nullptr;
    size_t bytes_ = 0;
    void (*release_)(void *) = nullptr;
};

// Per-token rotary angles: cos/sin [n_positions, rope_dim/2], already multiplied by
// YaRN's attention factor.
struct RopeTable {
    const float *cos = nullptr;
    const float *sin = nullptr;
    int64_t half_dim = 0;
};

// Rotary layout. MLA rotates interleaved pairs (x0,x1),(x2,x3)... on the LAST rope
// dims of each head; the indexer rotates half-split pairs (x_i, x_{i+d/2}) on the
// FIRST rope dims.
enum class RopeStyle { Interleaved, HalfSplit };

// A strided set of heads inside a [rows, row_stride] buffer: head h of row r starts
// at x + r*row_stride + h*head_stride + offset.
struct HeadView {
    float *x = nullptr;
    int64_t rows = 0;
    int64_t row_stride = 0;
    int64_t heads = 1;
    int64_t head_stride = 0;
    int64_t offset = 0;
};

// ==================================================================================
// Paged caches
//
// A session owns ONE cache pool: n_pages pages, allocated once by the backend
// (alloc_cache_pool) from the session's byte budget. A page holds the cache entries of
// kPageTokens consecutive logical positions of one sequence, for every layer: page p of
// layer l lives at CachePool::mla[l] + p * mla_page_bytes (and index[l] + p *
// index_page_bytes for the DSA indexer keys), so one page id addresses the same
// positions in all layers (as vLLM's block tables and FlashMLA's paged KV cache).
// Which bytes a page holds per token is the backend's choice and never seen outside it:
//   CPU:  MLA page   = [64, kv_lora_rank] float32 latent, then [64, rope_dim] float32
//                      rotated rope key;
//         index page = [64, index_dim] float32 indexer key (after k_norm + RoPE).
//   GPU (planned): bf16 latent+rope [64, 576] or FlashMLA's 656-byte FP8 record per
//         token; FP8 indexer keys with one fp32 scale per token (132 B/token), in
//         DeepGEMM's paged layout.
// The model never writes cache memory itself: cache_store() puts a batch's rows into
// their slots, cache_gather() reads them back as float32 (saved state).
//
// Index conventions (all int32, all in backend memory):
//   slot          = page * kPageTokens + offset: the physical address of one token's
//                   entries; -1 = no token (FlashMLA's convention).
//   logical pos   = the token's position in its own sequence, 0-based.
//   page table    = [n_seqs, page_table_stride]: entry i of sequence s is the page that
//                   holds its positions [64 i, 64 i + 64); unused entries are -1.
//   rows          = the batch's query rows (tokens evaluated in this forward), each with
//                   row_seq[r] (its sequence, an index into the page table) and
//                   row_pos[r] (its logical position). A row sees exactly the positions
//                   [0, row_pos[r]] of its own sequence, whose entries must all be in the
//                   pool when the op runs (earlier evals, shared prefix pages, or the
//                   cache_store of this same forward).
// Batch invariance: the CPU backend computes every row with arithmetic that does not
// depend on the other rows of the batch (tests/test_serving.cpp checks batched logits
// bit for bit against each context alone). A GPU backend may split work by batch size;
// its tolerance against the CPU twin is then stated per op.
// Ownership: page allocation, reference counts, prefix sharing and copy-on-write are
// host bookkeeping above the backend (lib/serving). A backend op never allocates pages
// and never reads host memory (except where a parameter says "host"), so a decode step
// issues kernels only, with no host synchronisation.
// ==================================================================================

constexpr int64_t kPageTokens = 64;

// What a pool's pages must hold, per token and layer.
struct CacheDims {
    int64_t layers = 0;
    int64_t kv_lora_rank = 0;  // 512 in the released model
    int64_t rope_dim = 0;      // 64
    int64_t index_dim = 0;     // 128; 0 = no indexer (dense MLA model)
};

// The pages of one session, in backend memory. Created by Backend::alloc_cache_pool.
class CachePool {
public:
    virtual ~CachePool() = default;
    CacheDims dims;
    int64_t n_pages = 0;
    size_t mla_page_bytes = 0;    // one layer's MLA entries of one page
    size_t index_page_bytes = 0;  // one layer's indexer entries of one page (0 if dense)
    std::vector<void *> mla;      // [layers] base of [n_pages] pages
    std::vector<void *> index;    // [layers] base of [n_pages] pages; empty if dense
};

// Writes rows [0, rows) into the cache entries at slots[r] of one layer.
struct CacheStoreParams {
    void *mla_pages = nullptr;         // CachePool::mla[layer]
    void *index_pages = nullptr;       // CachePool::index[layer]; NULL = no indexer key
    const int32_t *slots = nullptr;    // [rows] physical slots; -1 = skip the row
    int64_t rows = 0;
    const float *latent = nullptr;     // row r at latent + r * latent_stride [kv_lora_rank]
    int64_t latent_stride = 0;
    const float *k_rope = nullptr;     // row r at k_rope + r * k_rope_stride [rope_dim]
    int64_t k_rope_stride = 0;
    const float *index_key = nullptr;  // [rows, index_dim] contiguous
    int64_t kv_lora_rank = 0, rope_dim = 0, index_dim = 0;
};

// Reads the entries at slots[r] back as float32 (the inverse of cache_store; exact on
// CPU, the stored precision on GPU). Used to save state, not on the decode path.
struct CacheGatherParams {
    const void *mla_pages = nullptr;
    const void *index_pages = nullptr;  // NULL = skip index keys
    const int32_t *slots = nullptr;     // [rows]
    int64_t rows = 0;
    float *latent = nullptr;            // [rows, kv_lora_rank]
    float *k_rope = nullptr;            // [rows, rope_dim]
    float *index_key = nullptr;         // [rows, index_dim]
    int64_t kv_lora_rank = 0, rope_dim = 0, index_dim = 0;
};

// The batch's rows and sequences, shared by the ops that read a row's own sequence.
struct RowSequences {
    const int32_t *row_seq = nullptr;     // [rows] sequence of each row
    const int32_t *row_pos = nullptr;     // [rows] logical position of each row
    const int32_t *page_table = nullptr;  // [n_seqs, page_table_stride]
    int64_t page_table_stride = 0;
    int64_t n_seqs = 0;                   // host: sequences in the batch (0 = not given)
};

// Sparse (or dense) MLA in absorbed MQA form over the latent cache:
//   score[t,h,s] = scale * (q_latent[t,h] . latent[s] + q_rope[t,h] . k_rope[s])
//   out[t,h]     = sum_s softmax_s(score) * latent[s]
// over s in row t's selection: the physical slots select[t, 0..select_stride) (-1
// entries are skipped; valid entries come first), as FlashMLA's sparse kernels take
// them. With select == NULL (a dense model) row t attends to every position
// [0, row_pos[t]] of its sequence, read through the page table.
struct SparseMlaParams {
    const float *q_latent = nullptr;   // [T, heads, kv_lora_rank]
    const float *q_rope = nullptr;     // [T, heads, rope_dim] contiguous
    const void *mla_pages = nullptr;   // CachePool::mla[layer]
    const int32_t *select = nullptr;   // [T, select_stride] slots; NULL = dense causal
    int64_t select_stride = 0;
    RowSequences seqs;                 // the rows' positions bound each selection; dense:
                                       // the keys; n_seqs: decode (<= 2 rows a sequence)
                                       // or prefill kernels on a GPU
    int64_t tokens = 0;                // T
    int64_t heads = 0, kv_lora_rank = 0, rope_dim = 0;
    float scale = 0.0f;
    float *out = nullptr;              // [T, heads, kv_lora_rank]
};

// The lightning indexer's scores and causal top-k selection over each row's sequence:
//   I[t,s] = sum_h w[t,h] * ReLU(scale * q[t,h] . k[s]),   s in [0, row_pos[t]]
// Row t keeps min(topk, row_pos[t]+1) logical positions, ascending; ties go to the
// earlier position; the rest of the row is -1. When select_slots is non-NULL the same
// selection is also written as physical slots (the input of sparse_mla), so the
// conversion costs no extra launch.
struct IndexerTopkParams {
    const float *q = nullptr;          // [T, index_heads, index_dim]
    const float *weights = nullptr;    // [T, index_heads] from weights_proj
    float weight_scale = 1.0f;         // index_heads^-0.5, applied to weights
    const void *index_pages = nullptr; // CachePool::index[layer]
    RowSequences seqs;
    int64_t tokens = 0;
    int64_t heads = 0, dim = 0, topk = 0;
    float scale = 0.0f;
    int32_t *select = nullptr;         // [T, topk] logical positions
    int32_t *select_slots = nullptr;   // [T, topk] physical slots, or NULL
};

// DeepSeekMoE routing: sigmoid scores + e_score_correction_bias, group-limited top-k.
struct MoeRouteParams {
    const float *x = nullptr;          // [T, hidden]
    const Matrix *gate = nullptr;      // [n_experts, hidden], applied in float32
    const float *bias = nullptr;       // [n_experts] e_score_correction_bias
    int64_t tokens = 0;
    int64_t n_experts = 0, n_group = 1, topk_group = 1, top_k = 0;
    bool norm_topk_prob = true;
    float routed_scaling_factor = 1.0f;
    int32_t *expert_ids = nullptr;     // [T, top_k]
    float *expert_weights = nullptr;   // [T, top_k]
};

// A SwiGLU MLP: y = down(silu(gate(x)) * up(x)).
struct MlpWeights {
    const Matrix *gate = nullptr, *up = nullptr, *down = nullptr;
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual const char *name() const = 0;

    // ---- memory ----
    virtual Buffer alloc(size_t bytes) = 0;
    virtual void to_host(const void *src, size_t bytes, void *host_dst) = 0;
    virtual void from_host(const void *host_src, size_t bytes, void *dst) = 0;
    virtual void copy(const void *src, size_t bytes, void *dst) = 0;

    // ---- the paged cache pool ----
    // Bytes one page takes in this backend's layout, all layers together (for budgets).
    virtual size_t cache_page_bytes(const CacheDims &d) const = 0;
    // The cache budget when the application gives none: a stated share of free memory.
    virtual size_t default_cache_budget() const = 0;
    // A pool of n_pages pages; DSI_ERR_NO_MEMORY (naming the bytes) if it cannot be had.
    // Page contents start undefined.
    virtual std::unique_ptr<CachePool> alloc_cache_pool(const CacheDims &d, int64_t n_pages) = 0;
    // Copies page src to page dst in every layer (copy-on-write of a shared page). Page
    // ids are launch parameters, not data a kernel reads.
    virtual void copy_page(CachePool &pool, int64_t src, int64_t dst) = 0;
    virtual void cache_store(const CacheStoreParams &p) = 0;
    virtual void cache_gather(const CacheGatherParams &p) = 0;

    // ---- weights ----
    virtual std::unique_ptr<Matrix> prepare_matrix(const MatrixSource &src) = 0;
    // A float vector (norm weight, bias) converted to float32 in backend memory.
    virtual Buffer prepare_vector(const TensorInfo &t) = 0;

    // ---- ops ----
    // out[i] = table[ids[i]]; ids [n] in backend memory, already validated.
    virtual void embed(const Matrix &table, const int32_t *ids, int64_t n, float *out) = 0;
    // y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w; x, y [rows, dim]; y may alias x.
    virtual void rms_norm(const float *x, const float *w, int64_t rows, int64_t dim, float eps,
                          float *y) = 0;
    // LayerNorm with weight and bias; y may alias x.
    virtual void layer_norm(const float *x, const float *w, const float *b, int64_t rows,
                            int64_t dim, float eps, float *y) = 0;
    // y[rows, w.rows] = x[rows, w.cols] . W^T
    virtual void linear(const float *x, int64_t rows, const Matrix &w, float *y) = 0;
    // y += x, n elements.
    virtual void add(float *y, const float *x, int64_t n) = 0;
    // Rotates rope_dim dims of each head in place; row r has position positions[r].
    virtual void rope(const HeadView &v, int64_t rope_dim, RopeStyle style, const int32_t *positions,
                      const RopeTable &table) = 0;
    // Copies `rows` rows of `cols` floats from a strided source into dst rows.
    virtual void copy_rows(const float *src, int64_t src_stride, int64_t rows, int64_t cols,
                           float *dst, int64_t dst_stride) = 0;
    // dst[i] = src[index[i]] for n rows of `cols` floats (src rows contiguous).
    virtual void gather_rows(const float *src, const int32_t *index, int64_t n, int64_t cols, float *dst) = 0;
    // MLA absorption with kv_b = [heads*(nope+v), kv_lora]:
    //   q_latent[t,h] = W_UK[h]^T q_nope[t,h]           (q_nope strided: HeadView)
    virtual void mla_absorb_q(const HeadView &q_nope, const Matrix &kv_b, int64_t nope_dim,
                              int64_t v_dim, float *q_latent) = 0;
    //   out[t,h] = W_UV[h] latent_out[t,h]   -> [T, heads*v]
    virtual void mla_apply_v(const float *latent_out, int64_t tokens, int64_t heads,
                             const Matrix &kv_b, int64_t nope_dim, int64_t v_dim, float *out) = 0;
    virtual void sparse_mla(const SparseMlaParams &p) = 0;
    virtual void indexer_topk(const IndexerTopkParams &p) = 0;
    virtual void moe_route(const MoeRouteParams &p) = 0;
    // y[T, hidden] = sum_j w[t,j] * MLP_{ids[t,j]}(x[t])  (overwrites y)
    virtual void moe_experts(const float *x, int64_t tokens, int64_t hidden,
                             const int32_t *expert_ids, const float *expert_weights, int64_t top_k,
                             const MlpWeights *experts, int64_t n_experts, float *y) = 0;
    // y[T, hidden] = MLP(x)  (overwrites y)
    virtual void mlp(const float *x, int64_t tokens, const MlpWeights &w, float *y) = 0;
};

// The float32 reference backend (OpenMP). `n_threads` 0 = all hardware threads.
std::unique_ptr<Backend> make_cpu_backend(int n_threads);

// Threads for CPU ops issued from the calling thread (0 = the backend's default).
// Lets each context run with its own thread count on a shared session.
void set_thread_compute_threads(int n_threads);

}  // namespace dsi
