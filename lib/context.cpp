#include "common/error.h"
#include "context_access.h"
#include "session.h"

#include <algorithm>
#include <chrono>

namespace dsi {

// Long prompts are evaluated in chunks so that activations stay bounded; the caches
// make the result identical to one pass.
static constexpr int64_t kPrefillChunk = 256;

ContextLock::ContextLock(dsi_context *ctx) : ctx_(ctx) {
    if (ctx_->in_use.test_and_set(std::memory_order_acquire))
        fail(DSI_ERR_BUSY, "the context is being used by another thread");
}

ContextLock::~ContextLock() { ctx_->in_use.clear(std::memory_order_release); }

double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int32_t context_n_vocab(const dsi_context *ctx) {
    return static_cast<int32_t>(ctx->session->model->cfg.vocab_size);
}

const float *context_logits_row(const dsi_context *ctx, int32_t index) {
    if (ctx->logits_rows == 0) fail(DSI_ERR_INVALID_ARGUMENT, "no logits: evaluate tokens first");
    const int64_t row = index < 0 ? ctx->logits_rows + index : index;
    if (row < 0 || row >= ctx->logits_rows)
        fail(DSI_ERR_INVALID_ARGUMENT, "logits index %d is outside the %lld row(s) kept by the last eval%s", index,
             (long long)ctx->logits_rows, ctx->logits_rows == 1 ? " (use DSI_EVAL_LOGITS_ALL for every row)" : "");
    return ctx->logits.data() + row * ctx->session->model->cfg.vocab_size;
}

void context_eval(dsi_context *ctx, const int32_t *tokens, size_t n_tokens, unsigned flags,
                  ForwardObserver *observer) {
    if (!tokens) fail(DSI_ERR_INVALID_ARGUMENT, "tokens is NULL");
    if (n_tokens == 0) fail(DSI_ERR_INVALID_ARGUMENT, "n_tokens is 0: nothing to evaluate");
    if (flags & ~DSI_EVAL_LOGITS_ALL) fail(DSI_ERR_INVALID_ARGUMENT, "unknown eval flags 0x%x", flags);
    ContextLock lock(ctx);
    const Model &m = *ctx->session->model;
    const int64_t vocab = m.cfg.vocab_size;
    const int64_t first = static_cast<int64_t>(ctx->tokens.size());
    // Capacity first, compared unsigned: a huge n_tokens must not reach the id scan.
    if (n_tokens > static_cast<size_t>(ctx->cache.n_ctx - first))
        fail(DSI_ERR_CONTEXT_FULL, "%zu tokens do not fit: the context holds %lld of n_ctx %lld", n_tokens,
             (long long)first, (long long)ctx->cache.n_ctx);
    for (size_t i = 0; i < n_tokens; ++i)
        if (tokens[i] < 0 || tokens[i] >= vocab)
            fail(DSI_ERR_INVALID_TOKEN, "token id %d at position %zu is outside the vocabulary [0, %lld)", tokens[i],
                 i, (long long)vocab);

    const double start_ms = now_ms();
    set_thread_compute_threads(ctx->n_threads);
    const bool all = (flags & DSI_EVAL_LOGITS_ALL) != 0;
    const int64_t n = static_cast<int64_t>(n_tokens);
    std::vector<float> logits(static_cast<size_t>((all ? n : 1) * vocab));
    ForwardRequest r;
    r.observer = observer;
    r.should_abort = [ctx] { return ctx->should_abort(); };
    for (int64_t done = 0; done < n;) {
        const int64_t chunk = std::min(kPrefillChunk, n - done);
        r.ids = tokens + done;
        r.tokens = chunk;
        r.first_pos = first + done;
        r.all_logits = all;
        // Without DSI_EVAL_LOGITS_ALL only the last chunk's last row is needed.
        r.logits = all ? logits.data() + done * vocab : logits.data();
        forward(m, ctx->cache, r);
        done += chunk;
    }
    // Commit only after every chunk succeeded: a failed call leaves the context as it was.
    ctx->tokens.insert(ctx->tokens.end(), tokens, tokens + n_tokens);
    ctx->logits = std::move(logits);
    ctx->logits_rows = all ? n : 1;
    const double ms = now_ms() - start_ms;
    const auto us = static_cast<int64_t>(ms * 1000.0);
    if (n_tokens == 1) {
        ctx->decode_tokens.fetch_add(1, std::memory_order_relaxed);
        ctx->decode_us.fetch_add(us, std::memory_order_relaxed);
    } else {
        ctx->prompt_tokens.fetch_add(n, std::memory_order_relaxed);
        ctx->prompt_us.fetch_add(us, std::memory_order_relaxed);
    }
    ctx->session->logf(DSI_LOG_DEBUG, "eval: %zu token(s) at position %lld in %.2f ms (context %lld/%lld)", n_tokens,
                       (long long)first, ms, (long long)ctx->tokens.size(), (long long)ctx->cache.n_ctx);
}

}  // namespace dsi

// Copied under the lock and called outside it, so that a callback may itself replace
// the callback without deadlocking.
bool dsi_context::should_abort() {
    dsi_abort_fn fn;
    void *user_data;
    {
        std::lock_guard<std::mutex> lock(abort_mutex);
        fn = abort_callback;
        user_data = abort_user_data;
    }
    return fn && fn(user_data) != 0;
}
