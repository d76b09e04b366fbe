// The C API of serving (include/dsinfer.h, "Serving"): batched evaluation, fork and
// the cache pool's statistics.
#include "dsinfer.h"

#include "common/error.h"
#include "session.h"

#include <memory>
#include <vector>

using dsi::fail;
using dsi::guard;

extern "C" {

dsi_status dsi_session_eval_batch(dsi_session *session, const dsi_batch_item *items, size_t n_items) {
    return guard([&] {
        if (!session) fail(DSI_ERR_INVALID_ARGUMENT, "session is NULL");
        if (!items && n_items) fail(DSI_ERR_INVALID_ARGUMENT, "items is NULL");
        std::vector<dsi::EvalItem> list(n_items);
        for (size_t i = 0; i < n_items; ++i) {
            list[i].ctx = items[i].ctx;
            list[i].tokens = items[i].tokens;
            list[i].n_tokens = items[i].n_tokens;
            list[i].flags = items[i].flags;
        }
        dsi::eval_batch(session, list.data(), n_items, nullptr);
    });
}

dsi_status dsi_context_fork(dsi_context *ctx, dsi_context **out) {
    if (out) *out = nullptr;
    return guard([&] {
        if (!out) fail(DSI_ERR_INVALID_ARGUMENT, "out is NULL");
        if (!ctx) fail(DSI_ERR_INVALID_ARGUMENT, "ctx is NULL");
        dsi::ContextLock lock(ctx);
        *out = dsi::fork_context(ctx).release();
    });
}

int32_t dsi_context_reused_tokens(const dsi_context *ctx) {
    return ctx ? static_cast<int32_t>(ctx->reused_tokens) : 0;
}

dsi_status dsi_session_cache_stats(const dsi_session *session, dsi_cache_stats *out) {
    return guard([&] {
        if (!session) fail(DSI_ERR_INVALID_ARGUMENT, "session is NULL");
        if (!out) fail(DSI_ERR_INVALID_ARGUMENT, "out is NULL");
        const dsi::PageAllocatorStats st = session->pages->stats();
        out->budget_bytes = session->cache_budget;
        out->page_bytes = session->cache_page_bytes;
        out->page_tokens = static_cast<int32_t>(dsi::kPageTokens);
        out->n_pages = st.n_pages;
        out->pages_in_use = st.in_use;
        out->pages_shared = st.shared;
        out->pages_cached = st.cached;
        out->pages_free = st.free;
        out->n_contexts = session->n_contexts.load();
    });
}

}  // extern "C"
