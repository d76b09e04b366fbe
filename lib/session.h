// The objects behind the dsi_session and dsi_context handles.
#pragma once

#include "dsinfer.h"
#include "model/model.h"

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
    dsi_log_fn log = nullptr;
    void *log_user_data = nullptr;
    dsi_log_level log_level = DSI_LOG_WARN;
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
    // First member, so destroyed last: the caches below belong to the session's backend.
    dsi::SessionRef session;
    dsi::KvCache cache;
    std::vector<int32_t> tokens;   // the sequence; cache rows [0, tokens.size()) are valid
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
};

namespace dsi {

// Opens a session (the body of dsi_session_open). Throws dsi::Error.
std::unique_ptr<dsi_session> open_session(const char *model_dir, const dsi_session_params &params);

// The body of dsi_context_eval, with an optional observer of intermediate results
// (used by the golden-data tests). Throws dsi::Error.
void context_eval(dsi_context *ctx, const int32_t *tokens, size_t n_tokens, unsigned flags,
                  ForwardObserver *observer);

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
