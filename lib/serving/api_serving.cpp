// The C API of serving (include/dsinfer.h, "Serving" and "Saved state"): batched
// evaluation, fork, the cache pool's statistics, saving and loading a context.
#include "dsinfer.h"

#include "common/error.h"
#include "common/file.h"
#include "session.h"
#include "state/state.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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

dsi_status dsi_context_save_state(dsi_context *ctx, const dsi_sampler *sampler, void **data, size_t *size) {
    if (data) *data = nullptr;
    if (size) *size = 0;
    return guard([&] {
        if (!ctx) fail(DSI_ERR_INVALID_ARGUMENT, "ctx is NULL");
        if (!data || !size) fail(DSI_ERR_INVALID_ARGUMENT, "%s is NULL", data ? "size" : "data");
        dsi::ContextLock lock(ctx);
        const std::vector<uint8_t> bytes = dsi::save_state(ctx, sampler);
        void *out = std::malloc(bytes.size());
        if (!out) fail(DSI_ERR_NO_MEMORY, "cannot allocate %zu bytes for the saved state", bytes.size());
        std::memcpy(out, bytes.data(), bytes.size());
        *data = out;
        *size = bytes.size();
    });
}

dsi_status dsi_context_load_state(dsi_context *ctx, const void *data, size_t size, dsi_sampler *sampler) {
    return guard([&] {
        if (!ctx) fail(DSI_ERR_INVALID_ARGUMENT, "ctx is NULL");
        if (!data) fail(DSI_ERR_INVALID_ARGUMENT, "data is NULL");
        dsi::ContextLock lock(ctx);
        dsi::load_state(ctx, static_cast<const uint8_t *>(data), size, sampler);
    });
}

dsi_status dsi_context_save_state_file(dsi_context *ctx, const dsi_sampler *sampler, const char *path) {
    return guard([&] {
        if (!ctx) fail(DSI_ERR_INVALID_ARGUMENT, "ctx is NULL");
        if (!path) fail(DSI_ERR_INVALID_ARGUMENT, "path is NULL");
        dsi::ContextLock lock(ctx);
        const std::vector<uint8_t> bytes = dsi::save_state(ctx, sampler);
        FILE *f = std::fopen(path, "wb");
        if (!f) fail(DSI_ERR_IO, "cannot create %s: %s", path, std::strerror(errno));
        const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
        if (std::fclose(f) != 0 || !ok) fail(DSI_ERR_IO, "cannot write %zu bytes to %s", bytes.size(), path);
    });
}

dsi_status dsi_context_load_state_file(dsi_context *ctx, const char *path, dsi_sampler *sampler) {
    return guard([&] {
        if (!ctx) fail(DSI_ERR_INVALID_ARGUMENT, "ctx is NULL");
        if (!path) fail(DSI_ERR_INVALID_ARGUMENT, "path is NULL");
        const std::string bytes = dsi::read_text_file(path, "saved state");
        dsi::ContextLock lock(ctx);
        dsi::load_state(ctx, reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size(), sampler);
    });
}

}  // extern "C"
