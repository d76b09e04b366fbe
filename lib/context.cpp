#include "common/error.h"
#include "context_access.h"
#include "session.h"

#include <algorithm>
#include <cmath>

namespace dsi {

// Long prompts are evaluated in chunks so that activations stay bounded; the caches
// make the result identical to one pass.
static constexpr int64_t kPrefillChunk = 256;

ContextLock::ContextLock(dsi_context *ctx) : ctx_(ctx) {
    if (ctx_->in_use.test_and_set(std::memory_order_acquire))
        fail(DSI_ERR_BUSY, "the context is being used by another thread");
}

ContextLock::~ContextLock() { ctx_->in_use.clear(std::memory_order_release); }

namespace {

// Finds where a forward pass first produced a non-finite value (used only after the
// logits came out non-finite, so normal evals pay nothing for it).
class NonFiniteFinder : public ForwardObserver {
public:
    std::string where;  // empty: every observed value was finite

    void embedding(const float *x, int64_t tokens, int64_t hidden) override { check(x, tokens * hidden, "the embedding"); }
    void layer_output(int64_t layer, const float *x, int64_t tokens, int64_t hidden) override {
        check(x, tokens * hidden, strformat("layer %lld", (long long)layer));
    }
    void final_norm(const float *x, int64_t tokens, int64_t hidden) override { check(x, tokens * hidden, "the final norm"); }

private:
    void check(const float *x, int64_t n, const std::string &stage) {
        if (!where.empty()) return;
        for (int64_t i = 0; i < n; ++i)
            if (!std::isfinite(x[i])) {
                where = stage;
                return;
            }
    }
};

// The first non-finite value in `n` floats, or -1.
int64_t first_non_finite(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; ++i)
        if (!std::isfinite(x[i])) return i;
    return -1;
}

}  // namespace

int32_t context_n_vocab(const dsi_context *ctx) {
    return static_cast<int32_t>(ctx->session->model->cfg.vocab_size);
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

    set_thread_compute_threads(ctx->n_threads);
    const bool all = (flags & DSI_EVAL_LOGITS_ALL) != 0;
    const int64_t n = static_cast<int64_t>(n_tokens);
    std::vector<float> logits(static_cast<size_t>((all ? n : 1) * vocab));
    ForwardRequest r;
    r.observer = observer;
    if (ctx->abort_callback) r.should_abort = [ctx] { return ctx->abort_callback(ctx->abort_user_data) != 0; };
    for (int64_t done = 0; done < n;) {
        const int64_t chunk = std::min(kPrefillChunk, n - done);
        r.ids = tokens + done;
        r.tokens = chunk;
        r.first_pos = first + done;
        r.all_logits = all;
        // Without DSI_EVAL_LOGITS_ALL only the last chunk's last row is needed.
        r.logits = all ? logits.data() + done * vocab : logits.data();
        forward(m, ctx->cache, r);
        // NaN or inf logits come from the weights (or activations overflowing): an error
        // naming the layer where they first appeared, never DSI_OK with garbage.
        const int64_t rows = all ? chunk : (done + chunk == n ? 1 : 0);
        if (const int64_t bad = first_non_finite(r.logits, rows * vocab); bad >= 0) {
            NonFiniteFinder finder;
            ForwardRequest again = r;
            again.observer = &finder;
            again.should_abort = nullptr;
            std::vector<float> scratch(static_cast<size_t>((all ? chunk : 1) * vocab));
            again.logits = scratch.data();
            forward(m, ctx->cache, again);
            fail(DSI_ERR_CHECKPOINT,
                 "the logit of token id %lld for input position %lld is %g: non-finite values first appear in the "
                 "output of %s (NaN or inf in the weights, or activations overflowing float32)",
                 (long long)(bad % vocab), (long long)(first + done + (all ? bad / vocab : chunk - 1)),
                 static_cast<double>(r.logits[bad]), finder.where.empty() ? "the lm_head" : finder.where.c_str());
        }
        done += chunk;
    }
    // Commit only after every chunk succeeded: a failed call leaves the context as it was.
    ctx->tokens.insert(ctx->tokens.end(), tokens, tokens + n_tokens);
    ctx->logits = std::move(logits);
    ctx->logits_rows = all ? n : 1;
}

}  // namespace dsi
