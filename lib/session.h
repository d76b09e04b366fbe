// The objects behind the dsi_session and dsi_context handles.
#pragma once

#include "dsinfer.h"
#include "model/model.h"
#include "serving/page_allocator.h"
#include "state/state.h"

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

struct dsi_tokenizer;

// A session lives while anyone refers to it: the application's handle (until
// dsi_session_free) and every context created from it. The last release deletes it, so
// handles may be freed in any order, as SQLite's sqlite3_close_v2 keeps a "zombie"
// connection until its statements are finalised. Nothing here depends on how a context
// stores its caches.
struct dsi_session {
    std::unique_ptr<dsi::Model> model;
    std::unique_ptr<dsi_tokenizer> tokenizer;  // NULL when the model has none
    dsi_backend backend = DSI_BACKEND_CPU;
    int32_t n_threads = 0;
    std::string description;
    dsi::ModelIdentity identity{};  // what a saved state must match (state/state.h)
    dsi_log_fn log = nullptr;
    void *log_user_data = nullptr;
    dsi_log_level log_level = DSI_LOG_WARN;
    // The paged caches of every context (backend.h): memory, then its bookkeeping.
    std::unique_ptr<dsi::CachePool> cache_pool;
    std::unique_ptr<dsi::PageAllocator> pages;
    size_t cache_budget = 0;      // bytes asked for
    size_t cache_page_bytes = 0;  // bytes of one page, all layers
    std::atomic<int64_t> n_contexts{0};
    std::vector<int32_t> eog_tokens;  // dsi_session_eog_tokens
    double load_ms = 0;
    std::atomic<int32_t> refs{1};

    ~dsi_session();
    void logf(dsi_log_level level, const char *fmt, ...) const __attribute__((format(printf, 3, 4)));
};

namespace dsi {

// Drops one reference and deletes the session with the last. NULL is a no-op.
void release_session(dsi_session *s);

// One counted reference to a session; copying adds one, destruction drops one.
class SessionRef {
public:
    SessionRef() = default;
    explicit SessionRef(dsi_session *s) : s_(s) { retain(); }
    SessionRef(const SessionRef &o) : s_(o.s_) { retain(); }
    SessionRef &operator=(const SessionRef &o) {
        SessionRef copy(o);
        std::swap(s_, copy.s_);
        return *this;
    }
    ~SessionRef() { release_session(s_); }

    dsi_session *get() const { return s_; }
    dsi_session *operator->() const { return s_; }
    dsi_session &operator*() const { return *s_; }

private:
    void retain() {
        if (s_) s_->refs.fetch_add(1, std::memory_order_relaxed);
    }
    dsi_session *s_ = nullptr;
};

// Wall-clock milliseconds since an arbitrary fixed point (steady clock).
double now_ms();

}  // namespace dsi

struct dsi_context {
    // First member, so destroyed last: ~dsi_context returns its pages to the session.
    dsi::SessionRef session;
    int64_t n_ctx = 0;             // the most tokens this context may hold
    std::vector<int32_t> tokens;   // the sequence; cache entries of [0, tokens.size()) are valid
    std::vector<int32_t> pages;    // page table: pages[i] holds positions [64 i, 64 i + 64)
    std::vector<uint64_t> page_hashes;  // prefix hash of each full page (page_allocator.h)
    int64_t reused_tokens = 0;     // tokens of `tokens` taken from cached pages, not computed
    std::vector<float> logits;     // [logits_rows, n_vocab] of the last eval
    int64_t logits_rows = 0;
    int32_t n_threads = 0;
    // The abort callback can be replaced from any thread, also during an eval.
    std::mutex abort_mutex;
    dsi_abort_fn abort_callback = nullptr;
    void *abort_user_data = nullptr;
    std::atomic_flag in_use = ATOMIC_FLAG_INIT;
    // Performance counters (dsi_context_perf): atomics so that reading them races nothing.
    std::atomic<int64_t> prompt_tokens{0}, prompt_us{0}, decode_tokens{0}, decode_us{0};

    // Polled by the forward pass between layers.
    bool should_abort();

    ~dsi_context();
};

namespace dsi {

// More threads than this is a mistake, not a machine: libgomp aborts the process when it
// cannot create a team of 16384.
constexpr int32_t kMaxThreads = 1024;

// Checks a session or context n_threads: 0 (the default) or in [1, kMaxThreads].
void check_n_threads(int32_t n_threads, const char *which);

// Opens a session (the body of dsi_session_open). Throws dsi::Error.
std::unique_ptr<dsi_session> open_session(const char *model_dir, const dsi_session_params &params);

// One context's share of a batched evaluation.
struct EvalItem {
    dsi_context *ctx = nullptr;
    const int32_t *tokens = nullptr;
    size_t n_tokens = 0;
    unsigned flags = 0;
};

// Advances every item's context in shared forward passes (lib/serving/batch.cpp): all
// succeed or none changes. Throws dsi::Error naming the bad item.
void eval_batch(dsi_session *session, const EvalItem *items, size_t n_items, ForwardObserver *observer);

// The body of dsi_context_eval (a batch of one), with an optional observer of
// intermediate results (used by the golden-data tests). Throws dsi::Error.
void context_eval(dsi_context *ctx, const int32_t *tokens, size_t n_tokens, unsigned flags,
                  ForwardObserver *observer);

// A new empty context on `session` (the body of dsi_context_create).
std::unique_ptr<dsi_context> make_context(dsi_session *session, const dsi_context_params &p);

// A context sharing every page of ctx (which the caller has locked).
std::unique_ptr<dsi_context> fork_context(dsi_context *ctx);

// Publishes ctx's full pages that are not yet in the prefix cache (page_allocator.h).
void publish_full_pages(dsi_context *ctx);

// Drops tokens [length, end) of ctx and the pages that held only them.
void truncate_context(dsi_context *ctx, int64_t length);

// Marks a context busy for the lifetime of the guard; DSI_ERR_BUSY if another thread
// holds it.
class ContextLock {
public:
    explicit ContextLock(dsi_context *ctx);
    ~ContextLock();
    ContextLock(const ContextLock &) = delete;
    ContextLock &operator=(const ContextLock &) = delete;

private:
    dsi_context *ctx_;
};

}  // namespace dsi
