// Batched evaluation: several contexts of one session advanced by shared forward
// passes (continuous batching), with prefix reuse and copy-on-write of shared pages.
//
// A call validates every item, locks every context, then plans each context's pages:
// full pages of its new tokens that the prefix cache already holds are adopted, the
// partly filled last page is copied first if another context shares it, and the pages
// still missing are taken from the pool. Only then does any forward run, in chunks of
// at most kMaxRows rows. Everything is committed after the last chunk succeeds; any
// failure (pool full, cancelled) releases what the call took, so every context is left
// as it was. All arithmetic is per row, so a row's result does not depend on what else
// is in the batch: batched logits are bit-identical to evaluating each context alone.
#include "common/error.h"
#include "context_access.h"
#include "session.h"

#include <algorithm>
#include <cmath>
#include <memory>

namespace dsi {

namespace {

// Rows per forward pass: bounds the activations of long prompts.
constexpr int64_t kMaxRows = 256;

// What one item's context becomes if the call succeeds.
struct Plan {
    dsi_context *ctx = nullptr;
    const int32_t *tokens = nullptr;   // the tokens still to compute (after reused pages)
    int64_t n = 0;
    int64_t first = 0;                 // position of tokens[0]
    bool all_logits = false;
    std::vector<int32_t> pages;        // staged page table
    std::vector<uint64_t> hashes;      // staged page hashes
    std::vector<int32_t> taken;        // pages this call holds a reference to (fresh or adopted)
    int32_t replaced = -1;             // shared page swapped for its copy, released on commit
    int64_t reused = 0;                // tokens covered by adopted pages
    std::vector<float> logits;
};

// Finds where a forward pass first produced a non-finite value. Used only after the
// logits came out non-finite, so normal evaluation pays nothing for it.
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

std::string who(size_t i, size_t n_items) { return n_items > 1 ? strformat("item %zu: ", i) : std::string(); }

void validate(dsi_session *s, const EvalItem *items, size_t n_items) {
    for (size_t i = 0; i < n_items; ++i) {
        const EvalItem &it = items[i];
        const std::string w = who(i, n_items);
        if (!it.ctx) fail(DSI_ERR_INVALID_ARGUMENT, "%sctx is NULL", w.c_str());
        if (it.ctx->session.get() != s) fail(DSI_ERR_INVALID_ARGUMENT, "%sthe context belongs to another session", w.c_str());
        for (size_t j = 0; j < i; ++j)
            if (items[j].ctx == it.ctx) fail(DSI_ERR_INVALID_ARGUMENT, "items %zu and %zu name the same context", j, i);
        if (!it.tokens) fail(DSI_ERR_INVALID_ARGUMENT, "%stokens is NULL", w.c_str());
        if (it.n_tokens == 0) fail(DSI_ERR_INVALID_ARGUMENT, "%sn_tokens is 0: nothing to evaluate", w.c_str());
        if (it.flags & ~DSI_EVAL_LOGITS_ALL) fail(DSI_ERR_INVALID_ARGUMENT, "%sunknown eval flags 0x%x", w.c_str(), it.flags);
    }
}

// Capacity and ids, checked once the context is locked (its length is stable).
void validate_locked(const EvalItem &it, const std::string &w, int64_t vocab) {
    const int64_t first = static_cast<int64_t>(it.ctx->tokens.size());
    // Capacity first, compared unsigned: a huge n_tokens must not reach the id scan.
    if (it.n_tokens > static_cast<size_t>(it.ctx->n_ctx - first))
        fail(DSI_ERR_CONTEXT_FULL, "%s%zu tokens do not fit: the context holds %lld of n_ctx %lld", w.c_str(),
             it.n_tokens, (long long)first, (long long)it.ctx->n_ctx);
    for (size_t i = 0; i < it.n_tokens; ++i)
        if (it.tokens[i] < 0 || it.tokens[i] >= vocab)
            fail(DSI_ERR_INVALID_TOKEN, "%stoken id %d at position %zu is outside the vocabulary [0, %lld)", w.c_str(),
                 it.tokens[i], i, (long long)vocab);
}

class Batch {
public:
    Batch(dsi_session *s, const EvalItem *items, size_t n_items) : s_(s), items_(items), n_items_(n_items) {}

    ~Batch() {
        // Not committed: give back every page this call took.
        for (Plan &p : plans_) s_->pages->release(p.taken);
    }

    void run(ForwardObserver *observer) {
        validate(s_, items_, n_items_);
        std::vector<std::unique_ptr<ContextLock>> locks;
        for (size_t i = 0; i < n_items_; ++i) {
            try {
                locks.push_back(std::make_unique<ContextLock>(items_[i].ctx));
            } catch (const Error &e) {
                fail(e.status(), "%s%s", who(i, n_items_).c_str(), e.what());
            }
            validate_locked(items_[i], who(i, n_items_), s_->model->cfg.vocab_size);
        }
        plans_.resize(n_items_);
        for (size_t i = 0; i < n_items_; ++i) plan(i);
        compute(observer);
        commit();
    }

private:
    void plan(size_t i) {
        const EvalItem &it = items_[i];
        Plan &p = plans_[i];
        dsi_context *ctx = it.ctx;
        p.ctx = ctx;
        p.tokens = it.tokens;
        p.n = static_cast<int64_t>(it.n_tokens);
        p.first = static_cast<int64_t>(ctx->tokens.size());
        p.all_logits = (it.flags & DSI_EVAL_LOGITS_ALL) != 0;
        p.pages = ctx->pages;
        p.hashes = ctx->page_hashes;
        PageAllocator &pa = *s_->pages;

        // Prefix reuse: whole pages of new tokens already cached. One token is always
        // left to compute, so that the call has logits.
        if (!p.all_logits) {
            while (p.first % kPageTokens == 0 && static_cast<int64_t>(p.pages.size()) * kPageTokens == p.first &&
                   p.n > kPageTokens) {
                const uint64_t parent = p.hashes.empty() ? 0 : p.hashes.back();
                const uint64_t h = PageAllocator::chain_hash(parent, p.tokens);
                const int32_t page = pa.lookup(h, parent, p.tokens);
                if (page < 0) break;
                p.taken.push_back(page);
                p.pages.push_back(page);
                p.hashes.push_back(h);
                p.tokens += kPageTokens;
                p.n -= kPageTokens;
                p.first += kPageTokens;
                p.reused += kPageTokens;
            }
        }
        std::vector<int32_t> fresh;
        // Then the positions of a partly shared page, from a copy of that page.
        int32_t partial_src = -1;
        int64_t partial_len = 0;
        if (!p.all_logits && p.first % kPageTokens == 0 && static_cast<int64_t>(p.pages.size()) * kPageTokens == p.first &&
            p.n > 1) {
            const uint64_t parent = p.hashes.empty() ? 0 : p.hashes.back();
            partial_src = pa.lookup_partial(parent, p.tokens, std::min<int64_t>(kPageTokens - 1, p.n - 1), &partial_len);
            if (partial_src >= 0) p.taken.push_back(partial_src);  // held until the copy is made
        }

        if (partial_src >= 0) {
            if (!pa.allocate(1, fresh)) no_memory(i, 1);
            p.taken.push_back(fresh.back());
            s_->model->backend->copy_page(*s_->cache_pool, partial_src, fresh.back());
            p.pages.push_back(fresh.back());
            fresh.clear();
            p.taken.erase(std::find(p.taken.begin(), p.taken.end(), partial_src));
            pa.release(partial_src);
            p.tokens += partial_len;
            p.n -= partial_len;
            p.first += partial_len;
            p.reused += partial_len;
        }

        // The partly filled last page is written in place only if this context alone
        // holds it and nobody can find it in the prefix cache.
        const int64_t partial = p.first / kPageTokens;
        const bool cow = p.first % kPageTokens != 0 && !pa.claim_for_write(p.pages[static_cast<size_t>(partial)]);
        const int64_t need = (p.first + p.n + kPageTokens - 1) / kPageTokens - static_cast<int64_t>(p.pages.size());
        if (!pa.allocate(need + (cow ? 1 : 0), fresh)) no_memory(i, need + (cow ? 1 : 0));
        p.taken.insert(p.taken.end(), fresh.begin(), fresh.end());
        if (cow) {
            const int32_t copy = fresh.back();
            fresh.pop_back();
            s_->model->backend->copy_page(*s_->cache_pool, p.pages[static_cast<size_t>(partial)], copy);
            p.replaced = p.pages[static_cast<size_t>(partial)];
            p.pages[static_cast<size_t>(partial)] = copy;
        }
        p.pages.insert(p.pages.end(), fresh.begin(), fresh.end());
    }

    [[noreturn]] void no_memory(size_t i, int64_t need) {
        const PageAllocatorStats st = s_->pages->stats();
        fail(DSI_ERR_NO_MEMORY,
             "%sthe cache pool is full: %lld more page(s) of %zu bytes needed; the session's cache_budget of %zu bytes "
             "holds %lld pages: %lld in use by %lld context(s) (%lld shared), %lld cached prefix pages, %lld free",
             who(i, n_items_).c_str(), (long long)need, s_->cache_page_bytes, s_->cache_budget, (long long)st.n_pages,
             (long long)st.in_use, (long long)s_->n_contexts.load(), (long long)st.shared, (long long)st.cached,
             (long long)st.free);
    }

    void compute(ForwardObserver *observer) {
        const Model &m = *s_->model;
        const int64_t vocab = m.cfg.vocab_size;
        int64_t stride = 1;
        int threads = 0;
        for (Plan &p : plans_) {
            stride = std::max<int64_t>(stride, static_cast<int64_t>(p.pages.size()));
            threads = std::max(threads, p.ctx->n_threads);
            p.logits.assign(static_cast<size_t>((p.all_logits ? p.n : 1) * vocab), 0.0f);
        }
        std::vector<int32_t> table(static_cast<size_t>(n_items_ * stride), -1);
        for (size_t i = 0; i < n_items_; ++i)
            std::copy(plans_[i].pages.begin(), plans_[i].pages.end(), table.begin() + static_cast<int64_t>(i) * stride);
        set_thread_compute_threads(threads);

        ForwardBatch b;
        b.page_table = table.data();
        b.n_seqs = static_cast<int64_t>(n_items_);
        b.page_table_stride = stride;
        b.observer = observer;
        b.should_abort = [this] {
            for (const Plan &p : plans_)
                if (p.ctx->should_abort()) return true;
            return false;
        };
        std::vector<int32_t> ids, pos, seq, slots, logit_rows;
        std::vector<float *> logit_dst;
        std::vector<float> logits;
        // Rows in item order; each chunk takes up to kMaxRows of them.
        size_t item = 0;
        int64_t done = 0;  // rows of plans_[item] already issued
        while (item < n_items_) {
            ids.clear(), pos.clear(), seq.clear(), slots.clear(), logit_rows.clear(), logit_dst.clear();
            while (item < n_items_ && static_cast<int64_t>(ids.size()) < kMaxRows) {
                Plan &p = plans_[item];
                const int64_t take = std::min(p.n - done, kMaxRows - static_cast<int64_t>(ids.size()));
                for (int64_t k = done; k < done + take; ++k) {
                    const int64_t position = p.first + k;
                    if (p.all_logits || k == p.n - 1) {
                        logit_rows.push_back(static_cast<int32_t>(ids.size()));
                        logit_dst.push_back(p.logits.data() + (p.all_logits ? k : 0) * vocab);
                    }
                    ids.push_back(p.tokens[k]);
                    pos.push_back(static_cast<int32_t>(position));
                    seq.push_back(static_cast<int32_t>(item));
                    slots.push_back(p.pages[static_cast<size_t>(position / kPageTokens)] * static_cast<int32_t>(kPageTokens) +
                                    static_cast<int32_t>(position % kPageTokens));
                }
                done += take;
                if (done == p.n) ++item, done = 0;
            }
            logits.resize(logit_rows.size() * static_cast<size_t>(vocab));
            b.ids = ids.data();
            b.row_pos = pos.data();
            b.row_seq = seq.data();
            b.slots = slots.data();
            b.rows = static_cast<int64_t>(ids.size());
            b.logit_rows = logit_rows.data();
            b.n_logits = static_cast<int64_t>(logit_rows.size());
            b.logits = logits.data();
            forward(m, *s_->cache_pool, b);
            check_finite(m, b, logits);
            for (size_t r = 0; r < logit_dst.size(); ++r)
                std::copy(logits.begin() + static_cast<int64_t>(r) * vocab, logits.begin() + static_cast<int64_t>(r + 1) * vocab,
                          logit_dst[r]);
        }
    }

    // NaN or inf logits come from the weights (or activations overflowing float32): an
    // error naming the first layer whose output holds them, never DSI_OK with garbage.
    // The pass is repeated with an observer to find that layer; it rewrites the same
    // cache entries with the same values.
    void check_finite(const Model &m, const ForwardBatch &b, const std::vector<float> &logits) {
        const auto bad = std::find_if(logits.begin(), logits.end(), [](float v) { return !std::isfinite(v); });
        if (bad == logits.end()) return;
        const int64_t vocab = m.cfg.vocab_size, at = bad - logits.begin();
        const int32_t row = b.logit_rows[at / vocab];
        NonFiniteFinder finder;
        ForwardBatch again = b;
        again.observer = &finder;
        again.should_abort = nullptr;
        std::vector<float> scratch(logits.size());
        again.logits = scratch.data();
        forward(m, *s_->cache_pool, again);
        fail(DSI_ERR_CHECKPOINT,
             "%sthe logit of token id %lld at position %d is %g: non-finite values first appear in the output of %s "
             "(NaN or inf in the weights, or activations overflowing float32)",
             who(static_cast<size_t>(b.row_seq[row]), n_items_).c_str(), (long long)(at % vocab), b.row_pos[row],
             static_cast<double>(*bad), finder.where.empty() ? "the lm_head" : finder.where.c_str());
    }

    void commit() {
        PageAllocator &pa = *s_->pages;
        for (size_t i = 0; i < n_items_; ++i) {
            Plan &p = plans_[i];
            dsi_context *ctx = p.ctx;
            const EvalItem &it = items_[i];
            ctx->tokens.insert(ctx->tokens.end(), it.tokens, it.tokens + it.n_tokens);
            ctx->pages = std::move(p.pages);
            ctx->logits = std::move(p.logits);
            ctx->logits_rows = p.all_logits ? p.n : 1;
            ctx->reused_tokens += p.reused;
            if (p.replaced >= 0) pa.release(p.replaced);
            p.taken.clear();
            ctx->page_hashes = std::move(p.hashes);
            publish_full_pages(ctx);
        }
    }

    dsi_session *s_;
    const EvalItem *items_;
    size_t n_items_;
    std::vector<Plan> plans_;
};

}  // namespace

void eval_batch(dsi_session *session, const EvalItem *items, size_t n_items, ForwardObserver *observer) {
    if (!items && n_items) fail(DSI_ERR_INVALID_ARGUMENT, "items is NULL");
    if (n_items == 0) fail(DSI_ERR_INVALID_ARGUMENT, "n_items is 0: nothing to evaluate");
    const double start_ms = now_ms();
    Batch batch(session, items, n_items);
    batch.run(observer);
    const double ms = now_ms() - start_ms;
    for (size_t i = 0; i < n_items; ++i) count_eval(items[i].ctx, static_cast<int64_t>(items[i].n_tokens), ms);
    session->logf(DSI_LOG_DEBUG, "eval: %zu token(s) at position %lld in %.2f ms (%zu context(s) in the batch)",
                  items[0].n_tokens, (long long)(items[0].ctx->tokens.size() - items[0].n_tokens), ms, n_items);
}

void context_eval(dsi_context *ctx, const int32_t *tokens, size_t n_tokens, unsigned flags,
                  ForwardObserver *observer) {
    EvalItem it;
    it.ctx = ctx;
    it.tokens = tokens;
    it.n_tokens = n_tokens;
    it.flags = flags;
    eval_batch(ctx->session.get(), &it, 1, observer);
}

}  // namespace dsi
