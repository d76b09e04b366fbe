#include "common/error.h"
#include "context_access.h"
#include "session.h"

#include <algorithm>
#include <chrono>

dsi_context::~dsi_context() {
    if (!session.get()) return;
    session->pages->release(pages);
    session->n_contexts.fetch_sub(1);
}

namespace dsi {

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

void count_eval(dsi_context *ctx, int64_t n_tokens, double ms) {
    const auto us = static_cast<int64_t>(ms * 1000.0);
    if (n_tokens == 1) {
        ctx->decode_tokens.fetch_add(1, std::memory_order_relaxed);
        ctx->decode_us.fetch_add(us, std::memory_order_relaxed);
    } else {
        ctx->prompt_tokens.fetch_add(n_tokens, std::memory_order_relaxed);
        ctx->prompt_us.fetch_add(us, std::memory_order_relaxed);
    }
}

std::unique_ptr<dsi_context> make_context(dsi_session *session, const dsi_context_params &p) {
    const int64_t n_train = session->model->cfg.max_position_embeddings;
    if (p.n_ctx < 0 || p.n_ctx > n_train)
        fail(DSI_ERR_INVALID_ARGUMENT, "n_ctx %d is outside [0, %lld] (the model's max_position_embeddings)", p.n_ctx,
             (long long)n_train);
    check_n_threads(p.n_threads, "dsi_context_params");
    auto ctx = std::make_unique<dsi_context>();
    ctx->n_ctx = p.n_ctx == 0 ? n_train : p.n_ctx;
    ctx->n_threads = p.n_threads > 0 ? p.n_threads : session->n_threads;
    ctx->abort_callback = p.abort_callback;
    ctx->abort_user_data = p.abort_user_data;
    ctx->session = SessionRef(session);
    session->n_contexts.fetch_add(1);
    return ctx;
}

std::unique_ptr<dsi_context> fork_context(dsi_context *ctx) {
    auto copy = std::make_unique<dsi_context>();
    copy->n_ctx = ctx->n_ctx;
    copy->tokens = ctx->tokens;
    copy->pages = ctx->pages;
    copy->page_hashes = ctx->page_hashes;
    copy->reused_tokens = ctx->reused_tokens;
    copy->logits = ctx->logits;
    copy->logits_rows = ctx->logits_rows;
    copy->n_threads = ctx->n_threads;
    {
        std::lock_guard<std::mutex> lock(ctx->abort_mutex);
        copy->abort_callback = ctx->abort_callback;
        copy->abort_user_data = ctx->abort_user_data;
    }
    ctx->session->pages->retain(copy->pages);
    copy->session = ctx->session;
    ctx->session->n_contexts.fetch_add(1);
    return copy;
}

void publish_full_pages(dsi_context *ctx) {
    PageAllocator &pa = *ctx->session->pages;
    const size_t full = ctx->tokens.size() / static_cast<size_t>(kPageTokens);
    while (ctx->page_hashes.size() < full) {
        const size_t k = ctx->page_hashes.size();
        const uint64_t parent = k == 0 ? 0 : ctx->page_hashes.back();
        const int32_t *page_tokens = ctx->tokens.data() + k * static_cast<size_t>(kPageTokens);
        const uint64_t h = PageAllocator::chain_hash(parent, page_tokens);
        pa.publish(ctx->pages[k], h, parent, page_tokens);
        ctx->page_hashes.push_back(h);
    }
}

void truncate_context(dsi_context *ctx, int64_t length) {
    ctx->tokens.resize(static_cast<size_t>(length));
    const size_t keep = static_cast<size_t>((length + kPageTokens - 1) / kPageTokens);
    if (ctx->pages.size() > keep) {
        ctx->session->pages->release(std::vector<int32_t>(ctx->pages.begin() + static_cast<int64_t>(keep), ctx->pages.end()));
        ctx->pages.resize(keep);
    }
    ctx->page_hashes.resize(std::min(ctx->page_hashes.size(), static_cast<size_t>(length / kPageTokens)));
    ctx->reused_tokens = std::min<int64_t>(ctx->reused_tokens, length);
    ctx->logits.clear();
    ctx->logits_rows = 0;
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
