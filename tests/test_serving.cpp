// labels: cpu serving badinput
// Serving many contexts on one session (include/dsinfer.h, "Serving"), on the demo
// model: batched evaluation is bit-identical to evaluating each context alone, prefix
// reuse and fork give the same logits as computing from scratch, a bad item or a
// cancelled / out-of-memory batch leaves every context as it was.
#include <doctest/doctest.h>

#include "dsinfer.h"

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

const std::string kDemo = std::string(DSI_SOURCE_DIR) + "/models/demo";

struct Session {
    dsi_session *s = nullptr;
    explicit Session(size_t budget = 0) {
        dsi_session_params p = dsi_session_default_params();
        p.backend = DSI_BACKEND_CPU;
        p.n_threads = 2;
        p.cache_budget = budget;
        REQUIRE_MESSAGE(dsi_session_open(kDemo.c_str(), &p, &s) == DSI_OK, dsi_last_error());
    }
    ~Session() { dsi_session_free(s); }
    int32_t vocab() const { return dsi_session_n_vocab(s); }
};

struct Context {
    dsi_context *c = nullptr;
    explicit Context(dsi_session *s, int32_t n_ctx = 0, dsi_abort_fn abort = nullptr, void *user = nullptr) {
        dsi_context_params p = dsi_context_default_params();
        p.n_ctx = n_ctx;
        p.abort_callback = abort;
        p.abort_user_data = user;
        REQUIRE_MESSAGE(dsi_context_create(s, &p, &c) == DSI_OK, dsi_last_error());
    }
    explicit Context(dsi_context *adopt) : c(adopt) {}
    Context(Context &&o) noexcept : c(o.c) { o.c = nullptr; }
    ~Context() { dsi_context_free(c); }
};

std::vector<int32_t> random_tokens(std::mt19937 &g, size_t n, int32_t vocab) {
    std::uniform_int_distribution<int32_t> U(2, vocab - 1);
    std::vector<int32_t> v(n);
    for (int32_t &t : v) t = U(g);
    return v;
}

std::vector<float> logits_of(dsi_context *c, int32_t vocab, int32_t index = -1) {
    const float *l = dsi_context_logits(c, index);
    REQUIRE_MESSAGE(l != nullptr, dsi_last_error());
    return std::vector<float>(l, l + vocab);
}

bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

int32_t argmax(const std::vector<float> &l) {
    int32_t best = 0;
    for (int32_t i = 1; i < static_cast<int32_t>(l.size()); ++i)
        if (l[i] > l[best]) best = i;
    return best;
}

// The logits of `tokens` evaluated from scratch, alone, in a fresh session.
std::vector<float> alone(const std::vector<int32_t> &tokens, unsigned flags = 0) {
    Session s;
    Context c(s.s);
    REQUIRE_MESSAGE(dsi_context_eval(c.c, tokens.data(), tokens.size(), flags) == DSI_OK, dsi_last_error());
    if (!(flags & DSI_EVAL_LOGITS_ALL)) return logits_of(c.c, s.vocab());
    const float *l = dsi_context_logits(c.c, 0);
    return std::vector<float>(l, l + tokens.size() * static_cast<size_t>(s.vocab()));
}

dsi_batch_item item(dsi_context *c, const std::vector<int32_t> &t, size_t from = 0, size_t n = 0, unsigned flags = 0) {
    return dsi_batch_item{c, t.data() + from, n ? n : t.size() - from, flags};
}

}  // namespace

TEST_CASE("batched prefills and decodes are bit-identical to each context alone") {
    Session s;
    const int32_t V = s.vocab();
    std::mt19937 g(11);
    // Lengths across page (64) and chunk (256) edges and the indexer's top-k (64).
    const std::vector<size_t> lens = {1, 63, 64, 65, 130, 300, 7, 200};
    std::vector<std::vector<int32_t>> prompts;
    for (size_t n : lens) prompts.push_back(random_tokens(g, n, V));
    std::vector<Context> ctx;
    for (size_t i = 0; i < lens.size(); ++i) ctx.emplace_back(s.s);

    // Prefill all in one call, then 6 greedy decode steps with every context in each.
    std::vector<dsi_batch_item> items;
    for (size_t i = 0; i < lens.size(); ++i) items.push_back(item(ctx[i].c, prompts[i]));
    REQUIRE_MESSAGE(dsi_session_eval_batch(s.s, items.data(), items.size()) == DSI_OK, dsi_last_error());
    std::vector<std::vector<int32_t>> seqs = prompts;
    for (int step = 0; step < 6; ++step) {
        std::vector<int32_t> next(lens.size());
        items.clear();
        for (size_t i = 0; i < lens.size(); ++i) {
            next[i] = argmax(logits_of(ctx[i].c, V));
            seqs[i].push_back(next[i]);
            items.push_back(dsi_batch_item{ctx[i].c, &next[i], 1, 0});
        }
        REQUIRE(dsi_session_eval_batch(s.s, items.data(), items.size()) == DSI_OK);
    }
    for (size_t i = 0; i < lens.size(); ++i) {
        CAPTURE(i);
        CHECK(dsi_context_length(ctx[i].c) == static_cast<int32_t>(seqs[i].size()));
        // The reference recomputes the whole sequence in one prefill: same bits.
        CHECK(same_bits(logits_of(ctx[i].c, V), alone(seqs[i])));
    }
}

TEST_CASE("a batch mixing a prefill chunk, decode steps and all-logits equals separate evals") {
    Session s;
    const int32_t V = s.vocab();
    std::mt19937 g(12);
    const auto a = random_tokens(g, 90, V), b = random_tokens(g, 40, V), c = random_tokens(g, 20, V);
    Context ca(s.s), cb(s.s), cc(s.s);
    REQUIRE(dsi_context_eval(ca.c, a.data(), 80, 0) == DSI_OK);
    REQUIRE(dsi_context_eval(cb.c, b.data(), 39, 0) == DSI_OK);
    const dsi_batch_item items[] = {item(ca.c, a, 80), item(cb.c, b, 39), item(cc.c, c, 0, 0, DSI_EVAL_LOGITS_ALL)};
    REQUIRE(dsi_session_eval_batch(s.s, items, 3) == DSI_OK);
    CHECK(same_bits(logits_of(ca.c, V), alone(a)));
    CHECK(same_bits(logits_of(cb.c, V), alone(b)));
    const auto all = alone(c, DSI_EVAL_LOGITS_ALL);
    for (int32_t t = 0; t < 20; ++t) {
        CAPTURE(t);
        CHECK(same_bits(logits_of(cc.c, V, t), std::vector<float>(all.begin() + t * V, all.begin() + (t + 1) * V)));
    }
}

TEST_CASE("a bad item is named and no context changes") {
    Session s, other;
    const int32_t V = s.vocab();
    std::mt19937 g(13);
    const auto a = random_tokens(g, 30, V), b = random_tokens(g, 30, V);
    Context ca(s.s), cb(s.s, 40), foreign(other.s);
    REQUIRE(dsi_context_eval(ca.c, a.data(), 10, 0) == DSI_OK);
    REQUIRE(dsi_context_eval(cb.c, b.data(), 10, 0) == DSI_OK);
    const auto la = logits_of(ca.c, V), lb = logits_of(cb.c, V);
    auto unchanged = [&] {
        CHECK(dsi_context_length(ca.c) == 10);
        CHECK(dsi_context_length(cb.c) == 10);
        CHECK(same_bits(logits_of(ca.c, V), la));
        CHECK(same_bits(logits_of(cb.c, V), lb));
    };
    std::vector<int32_t> bad = {5, 6, V + 3};
    struct Case {
        std::vector<dsi_batch_item> items;
        dsi_status status;
        const char *needle;
    };
    const std::vector<int32_t> many(31, 7);
    const Case cases[] = {
        {{item(ca.c, a, 10), item(cb.c, bad)}, DSI_ERR_INVALID_TOKEN, "item 1: token id"},
        {{item(ca.c, a, 10), item(cb.c, many)}, DSI_ERR_CONTEXT_FULL, "item 1: 31 tokens do not fit"},
        {{item(ca.c, a, 10), item(ca.c, a, 10)}, DSI_ERR_INVALID_ARGUMENT, "items 0 and 1 name the same context"},
        {{item(ca.c, a, 10), dsi_batch_item{nullptr, a.data(), 1, 0}}, DSI_ERR_INVALID_ARGUMENT, "item 1: ctx is NULL"},
        {{item(foreign.c, a), item(ca.c, a, 10)}, DSI_ERR_INVALID_ARGUMENT, "item 0: the context belongs to another session"},
        {{item(ca.c, a, 10), dsi_batch_item{cb.c, a.data(), 0, 0}}, DSI_ERR_INVALID_ARGUMENT, "item 1: n_tokens is 0"},
        {{item(ca.c, a, 10, 0, 8u), item(cb.c, b, 10)}, DSI_ERR_INVALID_ARGUMENT, "item 0: unknown eval flags"},
    };
    for (const Case &c : cases) {
        CAPTURE(c.needle);
        CHECK(dsi_session_eval_batch(s.s, c.items.data(), c.items.size()) == c.status);
        CHECK(std::string(dsi_last_error()).find(c.needle) != std::string::npos);
        unchanged();
    }
    CHECK(dsi_session_eval_batch(nullptr, nullptr, 0) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(dsi_session_eval_batch(s.s, nullptr, 0) == DSI_ERR_INVALID_ARGUMENT);
}

TEST_CASE("prefix reuse: shared pages give identical logits, also from freed contexts") {
    Session s;
    const int32_t V = s.vocab();
    std::mt19937 g(14);
    const auto prefix = random_tokens(g, 400, V);
    auto with_tail = [&](size_t n) {
        auto t = prefix;
        const auto tail = random_tokens(g, n, V);
        t.insert(t.end(), tail.begin(), tail.end());
        return t;
    };
    const auto first = with_tail(20), second = with_tail(30), third = with_tail(5);
    {
        Context a(s.s);
        REQUIRE(dsi_context_eval(a.c, first.data(), first.size(), 0) == DSI_OK);
        CHECK(dsi_context_reused_tokens(a.c) == 0);
        Context b(s.s);
        REQUIRE(dsi_context_eval(b.c, second.data(), second.size(), 0) == DSI_OK);
        CHECK(dsi_context_reused_tokens(b.c) == 384);  // 6 whole pages of the 400 shared tokens
        CHECK(same_bits(logits_of(b.c, V), alone(second)));
        dsi_cache_stats st;
        REQUIRE(dsi_session_cache_stats(s.s, &st) == DSI_OK);
        CHECK(st.pages_shared == 6);
        CHECK(st.n_contexts == 2);
    }
    // Both freed: the full pages stay cached for the next context with that prefix.
    dsi_cache_stats st;
    REQUIRE(dsi_session_cache_stats(s.s, &st) == DSI_OK);
    CHECK(st.pages_in_use == 0);
    CHECK(st.pages_cached >= 6);
    Context c(s.s);
    REQUIRE(dsi_context_eval(c.c, third.data(), third.size(), 0) == DSI_OK);
    CHECK(dsi_context_reused_tokens(c.c) == 384);
    CHECK(same_bits(logits_of(c.c, V), alone(third)));
}

TEST_CASE("prefix reuse inside a page: the shared positions of a copied page") {
    Session s;
    const int32_t V = s.vocab();
    std::mt19937 g(18);
    const auto prefix = random_tokens(g, 400, V);
    auto a = prefix, b = prefix;
    const auto ta = random_tokens(g, 100, V), tb = random_tokens(g, 9, V);
    a.insert(a.end(), ta.begin(), ta.end());
    b.insert(b.end(), tb.begin(), tb.end());
    Context ca(s.s), cb(s.s), cc(s.s);
    REQUIRE(dsi_context_eval(ca.c, a.data(), a.size(), 0) == DSI_OK);  // page 6 (384..447) is full
    REQUIRE(dsi_context_eval(cb.c, b.data(), b.size(), 0) == DSI_OK);
    CHECK(dsi_context_reused_tokens(cb.c) == 400);  // 6 pages + 16 positions of a copy of page 6
    CHECK(same_bits(logits_of(cb.c, V), alone(b)));
    // Exactly the prefix: all but the last token (which must be computed for its logits).
    REQUIRE(dsi_context_eval(cc.c, prefix.data(), prefix.size(), 0) == DSI_OK);
    CHECK(dsi_context_reused_tokens(cc.c) == 399);
    CHECK(same_bits(logits_of(cc.c, V), alone(prefix)));
    // The source page was copied, not changed: a still continues exactly.
    const int32_t next = 3;
    REQUIRE(dsi_context_eval(ca.c, &next, 1, 0) == DSI_OK);
    a.push_back(next);
    CHECK(same_bits(logits_of(ca.c, V), alone(a)));
}

TEST_CASE("fork shares pages; both branches continue exactly") {
    Session s;
    const int32_t V = s.vocab();
    std::mt19937 g(15);
    const auto prompt = random_tokens(g, 100, V), x = random_tokens(g, 10, V), y = random_tokens(g, 40, V);
    Context a(s.s);
    REQUIRE(dsi_context_eval(a.c, prompt.data(), prompt.size(), 0) == DSI_OK);
    dsi_context *forked = nullptr;
    REQUIRE(dsi_context_fork(a.c, &forked) == DSI_OK);
    Context b(forked);
    CHECK(dsi_context_length(b.c) == 100);
    CHECK(same_bits(logits_of(b.c, V), logits_of(a.c, V)));
    dsi_cache_stats st;
    REQUIRE(dsi_session_cache_stats(s.s, &st) == DSI_OK);
    CHECK(st.pages_shared == 2);  // the full page and the partly filled one
    // Both write into the shared partial page: each gets its own copy.
    const dsi_batch_item items[] = {item(a.c, x), item(b.c, y)};
    REQUIRE(dsi_session_eval_batch(s.s, items, 2) == DSI_OK);
    auto ax = prompt, by = prompt;
    ax.insert(ax.end(), x.begin(), x.end());
    by.insert(by.end(), y.begin(), y.end());
    CHECK(same_bits(logits_of(a.c, V), alone(ax)));
    CHECK(same_bits(logits_of(b.c, V), alone(by)));
    // Truncating back into the shared prefix and continuing is exact too.
    REQUIRE(dsi_context_truncate(b.c, 70) == DSI_OK);
    REQUIRE(dsi_context_eval(b.c, x.data(), x.size(), 0) == DSI_OK);
    std::vector<int32_t> bx(prompt.begin(), prompt.begin() + 70);
    bx.insert(bx.end(), x.begin(), x.end());
    CHECK(same_bits(logits_of(b.c, V), alone(bx)));
    CHECK(same_bits(logits_of(a.c, V), alone(ax)));
    CHECK(dsi_context_fork(nullptr, &forked) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(dsi_context_fork(a.c, nullptr) == DSI_ERR_INVALID_ARGUMENT);
}

TEST_CASE("an exhausted pool is DSI_ERR_NO_MEMORY naming the budget; nothing changes") {
    Session probe;
    dsi_cache_stats st;
    REQUIRE(dsi_session_cache_stats(probe.s, &st) == DSI_OK);
    CHECK(st.page_tokens == 64);
    Session s(3 * st.page_bytes);  // 3 pages: 192 tokens
    const int32_t V = s.vocab();
    std::mt19937 g(16);
    const auto a = random_tokens(g, 100, V), b = random_tokens(g, 100, V);
    Context ca(s.s), cb(s.s);
    REQUIRE(dsi_context_eval(ca.c, a.data(), a.size(), 0) == DSI_OK);  // 2 pages
    const auto la = logits_of(ca.c, V);
    const dsi_batch_item items[] = {item(ca.c, a, 0, 20), item(cb.c, b)};
    CHECK(dsi_session_eval_batch(s.s, items, 2) == DSI_ERR_NO_MEMORY);
    const std::string msg = dsi_last_error();
    CHECK(msg.find("item 1") != std::string::npos);
    CHECK(msg.find("cache_budget") != std::string::npos);
    CHECK(msg.find("2 context(s)") != std::string::npos);
    CHECK(dsi_context_length(ca.c) == 100);
    CHECK(dsi_context_length(cb.c) == 0);
    CHECK(same_bits(logits_of(ca.c, V), la));
    REQUIRE(dsi_session_cache_stats(s.s, &st) == DSI_OK);
    CHECK(st.pages_in_use == 2);
    // Once ca lets go, cb fits.
    REQUIRE(dsi_context_clear(ca.c) == DSI_OK);
    REQUIRE_MESSAGE(dsi_context_eval(cb.c, b.data(), b.size(), 0) == DSI_OK, dsi_last_error());
    CHECK(same_bits(logits_of(cb.c, V), alone(b)));
    dsi_session *tiny = nullptr;
    dsi_session_params p = dsi_session_default_params();
    p.cache_budget = 1000;
    CHECK(dsi_session_open(kDemo.c_str(), &p, &tiny) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(std::string(dsi_last_error()).find("less than one cache page") != std::string::npos);
}

TEST_CASE("cancelling a batch leaves every context as it was") {
    Session s;
    const int32_t V = s.vocab();
    std::mt19937 g(17);
    const auto a = random_tokens(g, 300, V), b = random_tokens(g, 50, V);
    int polls = 0, stop_after = 3;
    auto abort_fn = [](void *u) -> int {
        auto *st = static_cast<std::pair<int *, int *> *>(u);
        return ++*st->first > *st->second ? 1 : 0;
    };
    std::pair<int *, int *> state{&polls, &stop_after};
    Context ca(s.s), cb(s.s, 0, abort_fn, &state);
    REQUIRE(dsi_context_eval(ca.c, a.data(), 10, 0) == DSI_OK);
    const auto la = logits_of(ca.c, V);
    // 290 + 50 rows: two chunks; the abort comes in the first one's layers.
    const dsi_batch_item items[] = {item(ca.c, a, 10), item(cb.c, b)};
    CHECK(dsi_session_eval_batch(s.s, items, 2) == DSI_ERR_CANCELLED);
    CHECK(dsi_context_length(ca.c) == 10);
    CHECK(dsi_context_length(cb.c) == 0);
    CHECK(same_bits(logits_of(ca.c, V), la));
    stop_after = 1 << 30;
    REQUIRE(dsi_session_eval_batch(s.s, items, 2) == DSI_OK);
    CHECK(same_bits(logits_of(ca.c, V), alone(a)));
    CHECK(same_bits(logits_of(cb.c, V), alone(b)));
}
