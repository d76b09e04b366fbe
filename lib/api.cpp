// The C API of sessions and contexts: argument checks, then the C++ objects of
// session.h; every exception becomes a status code plus the thread's message.
#include "dsinfer.h"

#include "backend_cuda/cuda_backend.h"
#include "common/error.h"
#include "common/log.h"
#include "common/params.h"
#include "context_access.h"
#include "session.h"
#include "text/tokenizer.h"

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>

using dsi::fail;
using dsi::guard;

namespace {

// The v1 sizes of the params structs (their last v1 field's end).
constexpr size_t kSessionParamsV1 = offsetof(dsi_session_params, log_level) + sizeof(dsi_log_level);
constexpr size_t kContextParamsV1 = offsetof(dsi_context_params, abort_user_data) + sizeof(void *);

template <class T>
T *need(T *handle, const char *what) {
    if (!handle) fail(DSI_ERR_INVALID_ARGUMENT, "%s is NULL", what);
    return handle;
}

}  // namespace

extern "C" {

const char *dsi_version(void) { return DSI_VERSION; }
int dsi_version_number(void) { return DSI_VERSION_NUMBER; }

int dsi_backend_available(dsi_backend backend) {
    const auto b = dsi::enum_value(backend);
    if (b == DSI_BACKEND_CUDA) return dsi::cuda_backend_available(0, nullptr) ? 1 : 0;
    return b == DSI_BACKEND_AUTO || b == DSI_BACKEND_CPU ? 1 : 0;
}

const char *dsi_status_name(dsi_status status) {
    switch (status) {
    case DSI_OK: return "DSI_OK";
    case DSI_ERR_INVALID_ARGUMENT: return "DSI_ERR_INVALID_ARGUMENT";
    case DSI_ERR_IO: return "DSI_ERR_IO";
    case DSI_ERR_FORMAT: return "DSI_ERR_FORMAT";
    case DSI_ERR_CONFIG: return "DSI_ERR_CONFIG";
    case DSI_ERR_CHECKPOINT: return "DSI_ERR_CHECKPOINT";
    case DSI_ERR_UNSUPPORTED: return "DSI_ERR_UNSUPPORTED";
    case DSI_ERR_NO_MEMORY: return "DSI_ERR_NO_MEMORY";
    case DSI_ERR_CONTEXT_FULL: return "DSI_ERR_CONTEXT_FULL";
    case DSI_ERR_INVALID_TOKEN: return "DSI_ERR_INVALID_TOKEN";
    case DSI_ERR_CANCELLED: return "DSI_ERR_CANCELLED";
    case DSI_ERR_BUSY: return "DSI_ERR_BUSY";
    case DSI_ERR_BUFFER_TOO_SMALL: return "DSI_ERR_BUFFER_TOO_SMALL";
    case DSI_ERR_PARSE: return "DSI_ERR_PARSE";
    case DSI_ERR_BACKEND: return "DSI_ERR_BACKEND";
    case DSI_ERR_INTERNAL: return "DSI_ERR_INTERNAL";
    default: return "DSI_ERR_UNKNOWN";
    }
}

void dsi_free(void *ptr) { std::free(ptr); }

/* ---- session ---- */

dsi_session_params dsi_session_default_params(void) {
    dsi_session_params p;
    std::memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    p.backend = DSI_BACKEND_AUTO;
    p.log_level = DSI_LOG_WARN;
    return p;
}

dsi_status dsi_session_open(const char *model_dir, const dsi_session_params *params, dsi_session **out) {
    if (out) *out = nullptr;
    return guard([&] {
        need(out, "out");
        need(model_dir, "model_dir");
        const dsi_session_params p = dsi::read_params(params, dsi_session_default_params(), kSessionParamsV1, "dsi_session");
        *out = dsi::open_session(model_dir, p).release();
    });
}

void dsi_session_free(dsi_session *session) { dsi::release_session(session); }

int32_t dsi_session_n_vocab(const dsi_session *s) { return s ? static_cast<int32_t>(s->model->cfg.vocab_size) : 0; }
int32_t dsi_session_n_ctx_train(const dsi_session *s) {
    return s ? static_cast<int32_t>(s->model->cfg.max_position_embeddings) : 0;
}
int32_t dsi_session_n_layers(const dsi_session *s) {
    return s ? static_cast<int32_t>(s->model->cfg.num_hidden_layers) : 0;
}
int32_t dsi_session_bos_token(const dsi_session *s) { return s ? static_cast<int32_t>(s->model->cfg.bos_token_id) : -1; }
int32_t dsi_session_eos_token(const dsi_session *s) { return s ? static_cast<int32_t>(s->model->cfg.eos_token_id) : -1; }
int dsi_session_is_sparse(const dsi_session *s) { return s && s->model->cfg.is_sparse() ? 1 : 0; }
dsi_backend dsi_session_backend(const dsi_session *s) { return s ? s->backend : DSI_BACKEND_AUTO; }
const char *dsi_session_describe(const dsi_session *s) { return s ? s->description.c_str() : nullptr; }
const dsi_tokenizer *dsi_session_tokenizer(const dsi_session *s) { return s ? s->tokenizer.get() : nullptr; }

int64_t dsi_session_config_value(const dsi_session *s, dsi_config_key key) {
    if (!s) return -1;
    const dsi::ModelConfig &c = s->model->cfg;
    switch (dsi::enum_value(key)) {
    case DSI_CONFIG_VOCAB_SIZE: return c.vocab_size;
    case DSI_CONFIG_HIDDEN_SIZE: return c.hidden_size;
    case DSI_CONFIG_NUM_HIDDEN_LAYERS: return c.num_hidden_layers;
    case DSI_CONFIG_FIRST_K_DENSE_REPLACE: return c.first_k_dense_replace;
    case DSI_CONFIG_NUM_ATTENTION_HEADS: return c.num_attention_heads;
    case DSI_CONFIG_Q_LORA_RANK: return c.q_lora_rank;
    case DSI_CONFIG_KV_LORA_RANK: return c.kv_lora_rank;
    case DSI_CONFIG_QK_NOPE_HEAD_DIM: return c.qk_nope_head_dim;
    case DSI_CONFIG_QK_ROPE_HEAD_DIM: return c.qk_rope_head_dim;
    case DSI_CONFIG_V_HEAD_DIM: return c.v_head_dim;
    case DSI_CONFIG_INTERMEDIATE_SIZE: return c.intermediate_size;
    case DSI_CONFIG_MOE_INTERMEDIATE_SIZE: return c.moe_intermediate_size;
    case DSI_CONFIG_N_ROUTED_EXPERTS: return c.n_routed_experts;
    case DSI_CONFIG_N_SHARED_EXPERTS: return c.n_shared_experts;
    case DSI_CONFIG_NUM_EXPERTS_PER_TOK: return c.num_experts_per_tok;
    case DSI_CONFIG_INDEX_N_HEADS: return c.index_n_heads;
    case DSI_CONFIG_INDEX_HEAD_DIM: return c.index_head_dim;
    case DSI_CONFIG_INDEX_TOPK: return c.index_topk;
    case DSI_CONFIG_MAX_POSITION_EMBEDDINGS: return c.max_position_embeddings;
    }
    return -1;
}

int64_t dsi_session_n_params(const dsi_session *s) { return s ? s->model->weights.n_params : 0; }
int64_t dsi_session_weight_bytes(const dsi_session *s) { return s ? s->model->weights.bytes : 0; }

int64_t dsi_session_cache_bytes(const dsi_session *s, int32_t n_ctx) {
    if (!s || n_ctx < 1 || n_ctx > s->model->cfg.max_position_embeddings) return -1;
    const int64_t pages = (n_ctx + dsi::kPageTokens - 1) / dsi::kPageTokens;
    return pages * static_cast<int64_t>(s->cache_page_bytes);
}

int32_t dsi_session_eog_tokens(const dsi_session *s, int32_t *ids, size_t cap) {
    if (!s) return 0;
    const std::vector<int32_t> &eog = s->eog_tokens;
    if (ids) std::copy_n(eog.begin(), std::min(cap, eog.size()), ids);
    return static_cast<int32_t>(eog.size());
}

uint32_t dsi_session_token_attr(const dsi_session *s, int32_t id) {
    if (!s) return DSI_TOKEN_ATTR_NONE;
    uint32_t attr = dsi_tokenizer_token_attr(s->tokenizer.get(), id);
    if (std::find(s->eog_tokens.begin(), s->eog_tokens.end(), id) != s->eog_tokens.end()) attr |= DSI_TOKEN_ATTR_EOG;
    return attr;
}

/* ---- context ---- */

dsi_context_params dsi_context_default_params(void) {
    dsi_context_params p;
    std::memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    return p;
}

dsi_status dsi_context_create(dsi_session *session, const dsi_context_params *params, dsi_context **out) {
    if (out) *out = nullptr;
    return guard([&] {
        need(out, "out");
        need(session, "session");
        const dsi_context_params p = dsi::read_params(params, dsi_context_default_params(), kContextParamsV1, "dsi_context");
        auto ctx = dsi::make_context(session, p);
        session->logf(DSI_LOG_INFO, "context: n_ctx %lld (at most %lld cache bytes), %d threads", (long long)ctx->n_ctx,
                      (long long)dsi_session_cache_bytes(session, static_cast<int32_t>(ctx->n_ctx)), ctx->n_threads);
        *out = ctx.release();
    });
}

void dsi_context_free(dsi_context *ctx) { delete ctx; }

dsi_status dsi_context_set_abort_callback(dsi_context *ctx, dsi_abort_fn fn, void *user_data) {
    return guard([&] {
        need(ctx, "ctx");
        std::lock_guard<std::mutex> lock(ctx->abort_mutex);
        ctx->abort_callback = fn;
        ctx->abort_user_data = user_data;
    });
}

dsi_status dsi_context_eval(dsi_context *ctx, const int32_t *tokens, size_t n_tokens, unsigned flags) {
    return guard([&] { dsi::context_eval(need(ctx, "ctx"), tokens, n_tokens, flags, nullptr); });
}

const float *dsi_context_logits(dsi_context *ctx, int32_t index) {
    const float *result = nullptr;
    guard([&] {
        need(ctx, "ctx");
        dsi::ContextLock lock(ctx);
        result = dsi::context_logits_row(ctx, index);
    });
    return result;
}

int32_t dsi_context_length(const dsi_context *ctx) { return ctx ? static_cast<int32_t>(ctx->tokens.size()) : 0; }
int32_t dsi_context_n_ctx(const dsi_context *ctx) { return ctx ? static_cast<int32_t>(ctx->n_ctx) : 0; }

int32_t dsi_context_tokens(const dsi_context *ctx, int32_t *tokens, size_t cap) {
    if (!ctx) return 0;
    const size_t n = ctx->tokens.size();
    // An empty history's data() may be NULL, which memcpy may not be given even for 0 bytes.
    if (tokens && n > 0) std::memcpy(tokens, ctx->tokens.data(), std::min(n, cap) * sizeof(int32_t));
    return static_cast<int32_t>(n);
}

dsi_status dsi_context_clear(dsi_context *ctx) { return dsi_context_truncate(ctx, 0); }

int64_t dsi_context_cache_bytes(const dsi_context *ctx) {
    return ctx ? static_cast<int64_t>(ctx->pages.size()) * static_cast<int64_t>(ctx->session->cache_page_bytes) : 0;
}

dsi_context_perf dsi_context_perf_get(const dsi_context *ctx) {
    dsi_context_perf p{};
    if (!ctx) return p;
    p.load_ms = ctx->session->load_ms;
    p.prompt_ms = static_cast<double>(ctx->prompt_us.load(std::memory_order_relaxed)) / 1000.0;
    p.prompt_tokens = ctx->prompt_tokens.load(std::memory_order_relaxed);
    p.decode_ms = static_cast<double>(ctx->decode_us.load(std::memory_order_relaxed)) / 1000.0;
    p.decode_tokens = ctx->decode_tokens.load(std::memory_order_relaxed);
    return p;
}

void dsi_context_perf_reset(dsi_context *ctx) {
    if (!ctx) return;
    for (std::atomic<int64_t> *counter : {&ctx->prompt_us, &ctx->prompt_tokens, &ctx->decode_us, &ctx->decode_tokens})
        counter->store(0, std::memory_order_relaxed);
}

dsi_status dsi_context_truncate(dsi_context *ctx, int32_t length) {
    return guard([&] {
        need(ctx, "ctx");
        dsi::ContextLock lock(ctx);
        if (length < 0 || static_cast<size_t>(length) > ctx->tokens.size())
            fail(DSI_ERR_INVALID_ARGUMENT, "cannot truncate to %d tokens: the context holds %zu", length,
                 ctx->tokens.size());
        dsi::truncate_context(ctx, length);
    });
}

}  // extern "C"
