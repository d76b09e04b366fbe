// labels: cpu
// The sampling chain through the public API (dsi_sampler_sample_logits), plus the
// penalty step directly, where exact logit values are observable.
#include "dsinfer.h"
#include "sampler.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace {

// RAII owner so that a failing CHECK does not leak the sampler.
struct Sampler {
    dsi_sampler *s = nullptr;
    explicit Sampler(const dsi_sampler_params &p) { REQUIRE(dsi_sampler_create(&p, &s) == DSI_OK); }
    ~Sampler() { dsi_sampler_free(s); }

    int32_t sample(const std::vector<float> &logits, const std::vector<int32_t> &history = {}) {
        int32_t tok = -1;
        REQUIRE(dsi_sampler_sample_logits(s, logits.data(), static_cast<int32_t>(logits.size()),
                                          history.data(), history.size(), &tok) == DSI_OK);
        return tok;
    }
    std::vector<int32_t> sequence(const std::vector<float> &logits, int n) {
        std::vector<int32_t> out;
        for (int i = 0; i < n; ++i) out.push_back(sample(logits));
        return out;
    }
};

// Plain softmax sampling: every filter off.
dsi_sampler_params plain(float temperature = 1.0f, uint64_t seed = 1) {
    dsi_sampler_params p = dsi_sampler_default_params();
    p.temperature = temperature;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = seed;
    return p;
}

dsi_sampler_params greedy() {
    dsi_sampler_params p = plain();
    p.temperature = 0.0f;
    return p;
}

std::vector<float> ramp(int n) {
    std::vector<float> l(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) l[static_cast<size_t>(i)] = 0.1f * static_cast<float>((i * 7) % n);
    return l;
}

std::vector<double> frequencies(Sampler &s, const std::vector<float> &logits, int draws) {
    std::vector<int> counts(logits.size(), 0);
    for (int i = 0; i < draws; ++i) ++counts[static_cast<size_t>(s.sample(logits))];
    std::vector<double> f;
    for (int c : counts) f.push_back(static_cast<double>(c) / draws);
    return f;
}

std::vector<float> logs_of(const std::vector<double> &probs) {
    std::vector<float> l;
    for (double p : probs) l.push_back(static_cast<float>(std::log(p)));
    return l;
}

dsi_status create_status(const dsi_sampler_params &p) {
    dsi_sampler *s = reinterpret_cast<dsi_sampler *>(1);
    const dsi_status st = dsi_sampler_create(&p, &s);
    CHECK(s == nullptr);
    dsi_sampler_free(s);
    return st;
}

}  // namespace

TEST_CASE("defaults are the documented ones") {
    const dsi_sampler_params p = dsi_sampler_default_params();
    CHECK(p.struct_size == sizeof(dsi_sampler_params));
    CHECK(p.temperature == 0.8f);
    CHECK(p.top_k == 40);
    CHECK(p.top_p == 0.95f);
    CHECK(p.min_p == 0.05f);
    CHECK(p.repeat_penalty == 1.0f);
    CHECK(p.frequency_penalty == 0.0f);
    CHECK(p.presence_penalty == 0.0f);
    CHECK(p.penalty_last_n == 64);
    CHECK(p.seed == 0x5EEDu);
    dsi_sampler *s = nullptr;
    CHECK(dsi_sampler_create(nullptr, &s) == DSI_OK);
    CHECK(s != nullptr);
    dsi_sampler_free(s);
}

TEST_CASE("greedy is the argmax, lowest id on ties") {
    Sampler s(greedy());
    CHECK(s.sample({0.5f, 2.0f, -1.0f, 1.9f}) == 1);
    CHECK(s.sample({1.0f, 3.0f, 3.0f, 2.0f, 3.0f}) == 1);
    CHECK(s.sample({-INFINITY, -5.0f, -INFINITY}) == 1);
    const std::vector<float> l = ramp(1000);
    int32_t best = 0;
    for (int32_t i = 1; i < 1000; ++i)
        if (l[static_cast<size_t>(i)] > l[static_cast<size_t>(best)]) best = i;
    CHECK(s.sample(l) == best);

    dsi_sampler_params negative = greedy();
    negative.temperature = -3.0f;
    Sampler n(negative);
    CHECK(n.sample({0.0f, 0.0f, 4.0f}) == 2);
}

TEST_CASE("top_k = 1 is greedy at any temperature") {
    for (float t : {0.1f, 1.0f, 5.0f, 100.0f}) {
        dsi_sampler_params p = plain(t);
        p.top_k = 1;
        Sampler s(p);
        for (int i = 0; i < 200; ++i) {
            CHECK(s.sample({0.5f, 2.0f, -1.0f, 1.9f}) == 1);
            CHECK(s.sample({1.0f, 3.0f, 3.0f}) == 1);
        }
    }
}

TEST_CASE("same seed, same sequence; different seeds differ; reset restores") {
    const std::vector<float> l(64, 0.0f);
    Sampler a(plain(1.0f, 42)), b(plain(1.0f, 42)), c(plain(1.0f, 43));
    const std::vector<int32_t> first = a.sequence(l, 500);
    CHECK(first == b.sequence(l, 500));
    CHECK(first != c.sequence(l, 500));

    REQUIRE(dsi_sampler_reset(a.s, 42) == DSI_OK);
    CHECK(a.sequence(l, 500) == first);

    // Resetting to another seed is the same as having been created with it.
    REQUIRE(dsi_sampler_reset(a.s, 43) == DSI_OK);
    Sampler fresh(plain(1.0f, 43));
    CHECK(a.sequence(l, 500) == fresh.sequence(l, 500));
}

TEST_CASE("the draws of a seed are pinned (the same on every platform)") {
    // Recorded once; a change here breaks the documented reproducibility of a seed.
    Sampler uniform(plain(1.0f, 0x5EED));
    CHECK(uniform.sequence(std::vector<float>(1000, 0.0f), 8) ==
          std::vector<int32_t>{934, 882, 846, 974, 685, 527, 305, 422});
    Sampler defaults(dsi_sampler_default_params());
    std::vector<float> l(1000);
    for (int i = 0; i < 1000; ++i) l[static_cast<size_t>(i)] = 0.01f * static_cast<float>((i * 7) % 1000);
    CHECK(defaults.sequence(l, 8) == std::vector<int32_t>{995, 281, 567, 709, 425, 426, 570, 998});

    // xoshiro256** seeded by splitmix64: from seed 0 the second splitmix64 output
    // (published: 0x6e789e6aa1b965f4) is s[1], and the first output is rotl(s[1]*5, 7)*9.
    dsi::Rng zero(0);
    const uint64_t x = 0x6e789e6aa1b965f4ull * 5;
    CHECK(zero.next() == ((x << 7) | (x >> 57)) * 9);
}

TEST_CASE("draws follow the softmax with temperature") {
    const std::vector<float> l = {0.0f, 1.0f, 2.0f, 0.5f};
    for (float t : {1.0f, 0.5f, 2.0f}) {
        Sampler s(plain(t, 99));
        const std::vector<double> f = frequencies(s, l, 100000);
        double sum = 0.0;
        std::vector<double> expected;
        for (float x : l) expected.push_back(std::exp(x / t)), sum += expected.back();
        for (size_t i = 0; i < l.size(); ++i) {
            CAPTURE(t);
            CAPTURE(i);
            CHECK(std::fabs(f[i] - expected[i] / sum) < 0.01);
        }
    }
}

TEST_CASE("-inf logits are never drawn") {
    Sampler s(plain(1.0f, 5));
    const std::vector<double> f = frequencies(s, {-INFINITY, 0.0f, -INFINITY, 0.0f}, 2000);
    CHECK(f[0] == 0.0);
    CHECK(f[2] == 0.0);
}

TEST_CASE("top-k keeps the k best") {
    dsi_sampler_params p = plain(1.0f, 3);
    p.top_k = 2;
    Sampler s(p);
    const std::vector<double> f = frequencies(s, logs_of({0.1, 0.4, 0.2, 0.3}), 20000);
    CHECK(f[0] == 0.0);
    CHECK(f[2] == 0.0);
    CHECK(std::fabs(f[1] - 0.4 / 0.7) < 0.02);
}

TEST_CASE("top-p keeps the smallest prefix reaching p") {
    const std::vector<float> l = logs_of({0.5, 0.3, 0.15, 0.05});
    dsi_sampler_params p = plain(1.0f, 11);
    p.top_p = 0.75f;  // 0.5 < 0.75 <= 0.8: tokens 0 and 1
    Sampler s(p);
    const std::vector<double> f = frequencies(s, l, 20000);
    CHECK(f[2] == 0.0);
    CHECK(f[3] == 0.0);
    CHECK(std::fabs(f[0] - 0.5 / 0.8) < 0.02);

    p.top_p = 0.4f;  // the best token alone already reaches it
    Sampler one(p);
    CHECK(frequencies(one, l, 2000)[0] == 1.0);

    p.top_p = 0.0f;
    Sampler zero(p);
    CHECK(frequencies(zero, l, 2000)[0] == 1.0);
}

TEST_CASE("min-p keeps tokens at least min_p times as likely as the best") {
    const std::vector<float> l = logs_of({0.5, 0.3, 0.15, 0.05});
    dsi_sampler_params p = plain(1.0f, 13);
    p.min_p = 0.2f;  // threshold 0.1: token 3 goes
    Sampler s(p);
    const std::vector<double> f = frequencies(s, l, 20000);
    CHECK(f[3] == 0.0);
    CHECK(f[2] > 0.1);

    p.min_p = 1.0f;
    Sampler best(p);
    CHECK(frequencies(best, l, 2000)[0] == 1.0);
}

TEST_CASE("the filters run after the temperature") {
    // At temperature 0.25 the probabilities are {0.5,0.3,0.15,0.05}^4 normalised:
    // about {0.86, 0.11, 0.007, 0.0001}. top_p 0.9 then keeps tokens 0 and 1 only,
    // whereas at temperature 1 it would keep three.
    dsi_sampler_params p = plain(0.25f, 17);
    p.top_p = 0.9f;
    Sampler s(p);
    const std::vector<double> f = frequencies(s, logs_of({0.5, 0.3, 0.15, 0.05}), 20000);
    CHECK(f[2] == 0.0);
    CHECK(f[3] == 0.0);
    CHECK(f[1] > 0.05);
}

TEST_CASE("penalties change the logits as documented, within the window only") {
    dsi_sampler_params p = plain();
    p.repeat_penalty = 2.0f;
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    p.penalty_last_n = 4;
    std::vector<int32_t> scratch;
    // Token 4 is outside the window of the last 4; token 0 occurs twice in it.
    const std::vector<int32_t> history = {4, 0, 1, 0, 2};
    std::vector<float> l = {3.0f, -1.0f, 0.0f, 5.0f, 7.0f};
    dsi::apply_penalties(p, l.data(), history.data(), history.size(), scratch);
    CHECK(l[0] == 3.0f / 2.0f - 2 * 0.5f - 0.25f);
    CHECK(l[1] == -1.0f * 2.0f - 0.5f - 0.25f);
    CHECK(l[2] == 0.0f - 0.5f - 0.25f);
    CHECK(l[3] == 5.0f);
    CHECK(l[4] == 7.0f);

    SUBCASE("penalty_last_n -1 is the whole history, 0 is none") {
        std::vector<float> all = {0.0f, 0.0f, 0.0f, 0.0f, 7.0f};
        p.penalty_last_n = -1;
        dsi::apply_penalties(p, all.data(), history.data(), history.size(), scratch);
        CHECK(all[4] == 7.0f / 2.0f - 0.5f - 0.25f);
        std::vector<float> none = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f};
        p.penalty_last_n = 0;
        dsi::apply_penalties(p, none.data(), history.data(), history.size(), scratch);
        CHECK(none == std::vector<float>(5, 1.0f));
    }
}

TEST_CASE("penalties steer the chosen token through the public API") {
    dsi_sampler_params p = greedy();
    p.repeat_penalty = 2.0f;
    p.penalty_last_n = 2;
    Sampler s(p);
    CHECK(s.sample({2.0f, 1.5f}, {0}) == 1);      // 2/2 = 1 < 1.5
    CHECK(s.sample({2.0f, 1.5f}, {0, 1, 1}) == 0);  // token 0 left the window
    CHECK(s.sample({-1.0f, -1.5f}, {0}) == 1);    // -1*2 = -2 < -1.5
    CHECK(s.sample({2.0f, 1.5f}) == 0);

    dsi_sampler_params f = greedy();
    f.frequency_penalty = 0.3f;
    Sampler freq(f);
    CHECK(freq.sample({1.0f, 0.5f}, {0}) == 0);     // 0.7 > 0.5
    CHECK(freq.sample({1.0f, 0.5f}, {0, 0}) == 1);  // 0.4 < 0.5

    dsi_sampler_params pr = greedy();
    pr.presence_penalty = 0.3f;
    Sampler pres(pr);
    CHECK(pres.sample({1.0f, 0.8f}, {0}) == 1);           // 0.7 < 0.8
    CHECK(pres.sample({1.0f, 0.6f}, {0, 0, 0, 0}) == 0);  // 0.7 > 0.6: once only
}

TEST_CASE("invalid parameters name the field") {
    struct Case {
        const char *field;
        void (*set)(dsi_sampler_params &);
    };
    const Case cases[] = {
        {"struct_size", [](dsi_sampler_params &p) { p.struct_size = 0; }},
        {"struct_size", [](dsi_sampler_params &p) { p.struct_size = sizeof p - 1; }},
        {"struct_size", [](dsi_sampler_params &p) { p.struct_size = sizeof p + 8; }},
        {"temperature", [](dsi_sampler_params &p) { p.temperature = NAN; }},
        {"temperature", [](dsi_sampler_params &p) { p.temperature = INFINITY; }},
        {"top_k", [](dsi_sampler_params &p) { p.top_k = -1; }},
        {"top_p", [](dsi_sampler_params &p) { p.top_p = 1.5f; }},
        {"top_p", [](dsi_sampler_params &p) { p.top_p = -0.1f; }},
        {"top_p", [](dsi_sampler_params &p) { p.top_p = NAN; }},
        {"min_p", [](dsi_sampler_params &p) { p.min_p = -0.1f; }},
        {"min_p", [](dsi_sampler_params &p) { p.min_p = NAN; }},
        {"repeat_penalty", [](dsi_sampler_params &p) { p.repeat_penalty = 0.0f; }},
        {"repeat_penalty", [](dsi_sampler_params &p) { p.repeat_penalty = -1.0f; }},
        {"repeat_penalty", [](dsi_sampler_params &p) { p.repeat_penalty = NAN; }},
        {"frequency_penalty", [](dsi_sampler_params &p) { p.frequency_penalty = NAN; }},
        {"presence_penalty", [](dsi_sampler_params &p) { p.presence_penalty = -INFINITY; }},
        {"penalty_last_n", [](dsi_sampler_params &p) { p.penalty_last_n = -2; }},
    };
    for (const Case &c : cases) {
        dsi_sampler_params p = dsi_sampler_default_params();
        c.set(p);
        CAPTURE(c.field);
        CHECK(create_status(p) == DSI_ERR_INVALID_ARGUMENT);
        CHECK(std::string(dsi_last_error()).find(c.field) != std::string::npos);
    }
}

TEST_CASE("bad logits and history") {
    Sampler s(plain());
    int32_t tok = 77;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const std::vector<float> with_nan = {0.0f, nan, 1.0f};
    CHECK(dsi_sampler_sample_logits(s.s, with_nan.data(), 3, nullptr, 0, &tok) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(std::string(dsi_last_error()).find("logit 1") != std::string::npos);
    const std::vector<float> with_inf = {0.0f, INFINITY};
    CHECK(dsi_sampler_sample_logits(s.s, with_inf.data(), 2, nullptr, 0, &tok) == DSI_ERR_INVALID_ARGUMENT);
    const std::vector<float> all_masked = {-INFINITY, -INFINITY};
    CHECK(dsi_sampler_sample_logits(s.s, all_masked.data(), 2, nullptr, 0, &tok) == DSI_ERR_INVALID_ARGUMENT);

    const std::vector<float> l = {0.0f, 1.0f, 2.0f};
    const int32_t too_big[] = {0, 3};
    CHECK(dsi_sampler_sample_logits(s.s, l.data(), 3, too_big, 2, &tok) == DSI_ERR_INVALID_TOKEN);
    CHECK(std::string(dsi_last_error()).find("history token 1") != std::string::npos);
    const int32_t negative[] = {-1};
    CHECK(dsi_sampler_sample_logits(s.s, l.data(), 3, negative, 1, &tok) == DSI_ERR_INVALID_TOKEN);
    CHECK(dsi_sampler_sample_logits(s.s, l.data(), 0, nullptr, 0, &tok) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(dsi_sampler_sample_logits(s.s, l.data(), -3, nullptr, 0, &tok) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(dsi_sampler_sample_logits(s.s, l.data(), 3, nullptr, 2, &tok) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(tok == 77);  // untouched on failure

    dsi_sampler_params p = greedy();
    p.repeat_penalty = 1e-30f;
    Sampler overflow(p);
    const std::vector<float> big = {1e20f, 0.0f};
    const int32_t seen[] = {0};
    CHECK(dsi_sampler_sample_logits(overflow.s, big.data(), 2, seen, 1, &tok) == DSI_ERR_INVALID_ARGUMENT);
}

TEST_CASE("NULL handles and pointers") {
    const std::vector<float> l = {0.0f, 1.0f};
    int32_t tok = 0;
    CHECK(dsi_sampler_sample_logits(nullptr, l.data(), 2, nullptr, 0, &tok) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(std::string(dsi_last_error()).find("sampler") != std::string::npos);
    CHECK(dsi_sampler_sample(nullptr, nullptr, &tok) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(dsi_sampler_reset(nullptr, 1) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(dsi_sampler_create(nullptr, nullptr) == DSI_ERR_INVALID_ARGUMENT);
    dsi_sampler_free(nullptr);

    Sampler s(plain());
    CHECK(dsi_sampler_sample(s.s, nullptr, &tok) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(std::string(dsi_last_error()).find("ctx") != std::string::npos);
    CHECK(dsi_sampler_sample_logits(s.s, nullptr, 2, nullptr, 0, &tok) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(dsi_sampler_sample_logits(s.s, l.data(), 2, nullptr, 0, nullptr) == DSI_ERR_INVALID_ARGUMENT);
}

TEST_CASE("dsi_sampler_sample uses the context's last logits and its history") {
    dsi_session_params sp = dsi_session_default_params();
    sp.backend = DSI_BACKEND_CPU;
    dsi_session *session = nullptr;
    REQUIRE(dsi_session_open(DSI_TEST_DATA_DIR "/golden/tiny-bf16", &sp, &session) == DSI_OK);
    dsi_context_params cp = dsi_context_default_params();
    cp.n_ctx = 16;
    dsi_context *ctx = nullptr;
    REQUIRE(dsi_context_create(session, &cp, &ctx) == DSI_OK);
    const int32_t n_vocab = dsi_session_n_vocab(session);

    Sampler g(greedy());
    int32_t tok = -1;
    CHECK(dsi_sampler_sample(g.s, ctx, &tok) == DSI_ERR_INVALID_ARGUMENT);  // nothing evaluated yet

    const std::vector<int32_t> prompt = {1, 2, 3, 2};
    REQUIRE(dsi_context_eval(ctx, prompt.data(), prompt.size(), DSI_EVAL_LOGITS_LAST) == DSI_OK);
    const float *logits = dsi_context_logits(ctx, -1);
    REQUIRE(logits != nullptr);
    const std::vector<float> last(logits, logits + n_vocab);
    REQUIRE(dsi_sampler_sample(g.s, ctx, &tok) == DSI_OK);
    CHECK(tok == g.sample(last));

    // With penalties the context's tokens act as the history.
    dsi_sampler_params p = plain(1.0f, 21);
    p.repeat_penalty = 1.5f;
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.5f;
    Sampler from_ctx(p), from_logits(p);
    for (int i = 0; i < 50; ++i) {
        REQUIRE(dsi_sampler_sample(from_ctx.s, ctx, &tok) == DSI_OK);
        CHECK(tok == from_logits.sample(last, prompt));
    }
    dsi_context_free(ctx);
    dsi_session_free(session);
}
