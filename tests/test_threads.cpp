// labels: cpu tsan
// Many threads, each with its own context on one shared session (one OpenMP thread per
// context), plus a shared tokenizer and concurrent chat rendering: every thread must get
// exactly what a sequential run gets. CI also runs this under ThreadSanitizer
// (scripts/ci-tsan.sh), where any data race between the contexts fails it.
#include <doctest/doctest.h>

#include "dsinfer.h"

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

const std::string kModel = std::string(DSI_TEST_DATA_DIR) + "/golden/tiny-fp8";
const std::string kTokenizer = std::string(DSI_TEST_DATA_DIR) + "/tokenizer/bytelevel_bpe.json";

constexpr int kThreads = 8;
constexpr int kGenerated = 4;

struct Run {
    std::vector<int32_t> tokens;  // prompt + generated
    std::vector<float> logits;    // the logits of every step, concatenated
    dsi_status status = DSI_OK;
    std::string error;
};

std::vector<int32_t> prompt_of(int k) {
    std::vector<int32_t> p;
    for (int i = 0; i < 3 + 5 * k; ++i) p.push_back((17 * k + 31 * i + 2) % 1000 + 2);
    return p;
}

// Prompt k, then kGenerated tokens drawn by a seeded sampler; one context, one thread.
Run generate(dsi_session *s, int k) {
    Run r;
    dsi_context_params cp = dsi_context_default_params();
    cp.n_ctx = 64;
    cp.n_threads = 1;
    dsi_context *c = nullptr;
    dsi_sampler_params sp = dsi_sampler_default_params();
    sp.seed = 1000 + static_cast<uint64_t>(k);
    dsi_sampler *smp = nullptr;
    r.status = dsi_context_create(s, &cp, &c);
    if (r.status == DSI_OK) r.status = dsi_sampler_create(&sp, &smp);
    r.tokens = prompt_of(k);
    std::vector<int32_t> next = r.tokens;
    const int32_t n_vocab = dsi_session_n_vocab(s);
    for (int step = 0; step <= kGenerated && r.status == DSI_OK; ++step) {
        r.status = dsi_context_eval(c, next.data(), next.size(), DSI_EVAL_LOGITS_LAST);
        if (r.status != DSI_OK) break;
        const float *logits = dsi_context_logits(c, -1);
        r.logits.insert(r.logits.end(), logits, logits + n_vocab);
        if (step == kGenerated) break;
        int32_t tok = -1;
        r.status = dsi_sampler_sample(smp, c, &tok);
        next.assign(1, tok);
        r.tokens.push_back(tok);
    }
    if (r.status != DSI_OK) r.error = dsi_last_error();
    dsi_sampler_free(smp);
    dsi_context_free(c);
    return r;
}

bool same(const Run &a, const Run &b) {
    return a.status == b.status && a.tokens == b.tokens && a.logits.size() == b.logits.size() &&
           std::memcmp(a.logits.data(), b.logits.data(), a.logits.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("contexts on one session in many threads match a sequential run exactly") {
    dsi_session_params p = dsi_session_default_params();
    p.backend = DSI_BACKEND_CPU;
    p.n_threads = 1;
    dsi_session *s = nullptr;
    REQUIRE_MESSAGE(dsi_session_open(kModel.c_str(), &p, &s) == DSI_OK, dsi_last_error());

    std::vector<Run> sequential;
    for (int k = 0; k < kThreads; ++k) {
        sequential.push_back(generate(s, k));
        REQUIRE_MESSAGE(sequential.back().status == DSI_OK, sequential.back().error);
    }

    // Each thread runs its own prompt and then its neighbour's, so contexts overlap in time.
    std::vector<std::vector<Run>> parallel(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
        threads.emplace_back([&, t] {
            parallel[t].push_back(generate(s, t));
            parallel[t].push_back(generate(s, (t + 1) % kThreads));
        });
    for (std::thread &th : threads) th.join();
    for (int t = 0; t < kThreads; ++t) {
        INFO("thread " << t << ": " << parallel[t][0].error << parallel[t][1].error);
        CHECK(same(parallel[t][0], sequential[t]));
        CHECK(same(parallel[t][1], sequential[(t + 1) % kThreads]));
    }
    dsi_session_free(s);
}

TEST_CASE("a shared tokenizer and chat rendering from many threads match a sequential run") {
    dsi_tokenizer *tok = nullptr;
    REQUIRE(dsi_tokenizer_load(kTokenizer.c_str(), &tok) == DSI_OK);
    auto text_of = [](int t) {
        return "thread " + std::to_string(t) + ": Hello, world! <|endoftext|> 12345 \xc3\xa9t\xc3\xa9  \n";
    };
    auto encode = [&](int t) {
        const std::string text = text_of(t);
        std::vector<int32_t> ids(256);
        size_t n = 0;
        if (dsi_tokenize(tok, text.data(), text.size(), 1, ids.data(), ids.size(), &n) != DSI_OK) return std::string();
        std::vector<char> back(1024);
        size_t len = 0;
        if (dsi_detokenize(tok, ids.data(), n, 0, back.data(), back.size(), &len) != DSI_OK) return std::string();
        return std::to_string(n) + "|" + std::string(back.data(), len);
    };
    auto render = [](int t) {
        const std::string conv =
            R"({"messages": [{"role": "user", "content": "question )" + std::to_string(t) + R"("}]})";
        char *prompt = nullptr;
        if (dsi_chat_render(conv.data(), conv.size(), DSI_CHAT_THINKING, &prompt, nullptr) != DSI_OK)
            return std::string();
        std::string out(prompt);
        dsi_free(prompt);
        return out;
    };
    std::vector<std::string> want(kThreads), got(kThreads);
    for (int t = 0; t < kThreads; ++t) want[t] = encode(t) + render(t);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
        threads.emplace_back([&, t] {
            for (int rep = 0; rep < 20; ++rep) got[t] = encode(t) + render(t);
        });
    for (std::thread &th : threads) th.join();
    for (int t = 0; t < kThreads; ++t) {
        CHECK(!want[t].empty());
        CHECK(got[t] == want[t]);
    }
    dsi_tokenizer_free(tok);
}

TEST_CASE("two threads on one context: one evaluates, the other gets DSI_ERR_BUSY or waits its turn") {
    dsi_session_params p = dsi_session_default_params();
    p.backend = DSI_BACKEND_CPU;
    p.n_threads = 1;
    dsi_session *s = nullptr;
    REQUIRE(dsi_session_open(kModel.c_str(), &p, &s) == DSI_OK);
    dsi_context_params cp = dsi_context_default_params();
    cp.n_ctx = 256;
    cp.n_threads = 1;
    dsi_context *c = nullptr;
    REQUIRE(dsi_context_create(s, &cp, &c) == DSI_OK);
    std::atomic<int> ok{0}, busy{0}, other{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t)
        threads.emplace_back([&] {
            const int32_t ids[4] = {5, 6, 7, 8};
            for (int rep = 0; rep < 10; ++rep) {
                const dsi_status st = dsi_context_eval(c, ids, 4, 0);
                (st == DSI_OK ? ok : st == DSI_ERR_BUSY ? busy : other)++;
            }
        });
    for (std::thread &th : threads) th.join();
    CHECK(other == 0);
    CHECK(ok + busy == 20);
    CHECK(dsi_context_length(c) == 4 * ok);
    dsi_context_free(c);
    dsi_session_free(s);
}
