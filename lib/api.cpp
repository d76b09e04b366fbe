// The C API of sessions and contexts: argument checks, then the C++ objects of
// session.h; every exception becomes a status code plus the thread's message.
#include "dsinfer.h"

#include "common/error.h"
#include "common/params.h"
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

void dsi_session_free(dsi_session *session) { delete session; }

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
        *out = dsi::make_context(session, p).release();
    });
}

void dsi_context_free(dsi_context *ctx) { delete ctx; }

dsi_status dsi_context_eval(dsi_context *ctx, const int32_t *tokens, size_t n_tokens, unsigned flags) {
    return guard([&] { dsi::context_eval(need(ctx, "ctx"), tokens, n_tokens, flags, nullptr); });
}

const float *dsi_context_logits(dsi_context *ctx, int32_t index) {
    const float *result = nullptr;
    guard([&] {
        need(ctx, "ctx");
        if (ctx->logits_rows == 0) fail(DSI_ERR_INVALID_ARGUMENT, "no logits: evaluate tokens first");
        const int64_t row = index < 0 ? ctx->logits_rows + index : index;
        if (row < 0 || row >= ctx->logits_rows)
            fail(DSI_ERR_INVALID_ARGUMENT, "logits index %d is outside the %lld row(s) kept by the last eval%s", index,
                 (long long)ctx->logits_rows, ctx->logits_rows == 1 ? " (use DSI_EVAL_LOGITS_ALL for every row)" : "");
        result = ctx->logits.data() + row * ctx->session->model->cfg.vocab_size;
    });
    return result;
}

int32_t dsi_context_length(const dsi_context *ctx) { return ctx ? static_cast<int32_t>(ctx->tokens.size()) : 0; }
int32_t dsi_context_n_ctx(const dsi_context *ctx) { return ctx ? static_cast<int32_t>(ctx->n_ctx) : 0; }

int32_t dsi_context_tokens(const dsi_context *ctx, int32_t *tokens, size_t cap) {
    if (!ctx) return 0;
    const size_t n = ctx->tokens.size();
    if (tokens) std::memcpy(tokens, ctx->tokens.data(), std::min(n, cap) * sizeof(int32_t));
    return static_cast<int32_t>(n);
}

dsi_status dsi_context_clear(dsi_context *ctx) { return dsi_context_truncate(ctx, 0); }

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
