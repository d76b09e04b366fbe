// A loaded DeepSeek-V3/V3.2 model (immutable; shared by every context of a session),
// the layout of its paged caches, and the batched forward pass.
#pragma once

#include "backend/backend.h"
#include "checkpoint/safetensors.h"
#include "model/config.h"
#include "model/weights.h"

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace dsi {

struct Model {
    ModelConfig cfg;
    std::unique_ptr<Checkpoint> checkpoint;  // owns the mapped files the weights point into
    std::unique_ptr<Backend> backend;
    ModelWeights weights;
    float mla_scale = 0.0f;                  // softmax scale incl. YaRN mscale^2
    float index_scale = 0.0f;                // index_head_dim^-0.5 (no mscale)
    float index_weight_scale = 0.0f;         // index_n_heads^-0.5
    Buffer rope_cos, rope_sin;               // [max_position_embeddings, qk_rope_head_dim/2]
    RopeTable rope;
};

// Opens config + checkpoint from `dir` and binds the weights onto `backend`.
std::unique_ptr<Model> load_model(const std::string &dir, std::unique_ptr<Backend> backend,
                                  const std::function<bool(float)> &progress);

// What the cache pool must hold per token and layer: the MLA latent after
// kv_a_layernorm, the rotated rope key, and the indexer's key (after k_norm + rope).
CacheDims cache_dims(const ModelConfig &c);

// Receives intermediate results (host memory, valid during the call). Used by tests
// and debugging tools; the forward downloads them only when an observer is given.
class ForwardObserver {
public:
    virtual ~ForwardObserver() = default;
    virtual void embedding(const float *x, int64_t tokens, int64_t hidden) {}
    virtual void layer_output(int64_t layer, const float *x, int64_t tokens, int64_t hidden) {}
    // Row t lists count[t] selected logical positions (ascending) of batch row t.
    virtual void indexer_selection(int64_t layer, const int32_t *select, const int32_t *count,
                                   int64_t tokens, int64_t stride) {}
    virtual void experts(int64_t layer, const int32_t *ids, int64_t tokens, int64_t top_k) {}
    virtual void final_norm(const float *x, int64_t tokens, int64_t hidden) {}
};

// One forward over a batch of rows from one or more sequences (all host memory; the
// forward uploads it once). Row r is token ids[r] at logical position row_pos[r] of
// sequence row_seq[r]; its cache entries go to slots[r] (backend.h conventions). Every
// position [0, row_pos[r]) of the row's sequence must already be in the pool or be an
// earlier row of this batch.
struct ForwardBatch {
    const int32_t *ids = nullptr;         // [rows] validated ids
    const int32_t *row_pos = nullptr;     // [rows]
    const int32_t *row_seq = nullptr;     // [rows]
    const int32_t *slots = nullptr;       // [rows]
    int64_t rows = 0;
    const int32_t *page_table = nullptr;  // [n_seqs, page_table_stride]
    int64_t n_seqs = 0, page_table_stride = 0;
    const int32_t *logit_rows = nullptr;  // [n_logits] rows whose logits are wanted, in order
    int64_t n_logits = 0;
    float *logits = nullptr;              // [n_logits, vocab]
    ForwardObserver *observer = nullptr;
    std::function<bool()> should_abort;   // polled between layers; true -> DSI_ERR_CANCELLED
};

// Runs the model over the batch, storing every row's cache entries in `pool`.
void forward(const Model &m, CachePool &pool, const ForwardBatch &b);

// The batch description in backend memory: one upload per forward.
struct BatchArrays {
    Buffer storage;
    const int32_t *ids, *row_pos, *row_seq, *slots, *page_table, *logit_rows;
    BatchArrays(Backend &be, const ForwardBatch &b);
};

// forward() without its two host transfers: the batch already uploaded (`a`), the logits
// [n_logits, vocab] left in backend memory at `logits` (unused when n_logits is 0). It
// issues device work only, with no host synchronisation unless b.observer is set, so a
// caller can capture it into a CUDA graph (tests/cuda/test_cuda_session.cpp does).
void forward_device(const Model &m, CachePool &pool, const ForwardBatch &b, const BatchArrays &a, float *logits);

}  // namespace dsi
