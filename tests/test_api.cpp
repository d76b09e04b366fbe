// labels: cpu badinput
// The C API of sessions and contexts: lifecycle, state, threading and bad input.
// Every error case asserts the exact status code and that the message names the problem.
#include <doctest/doctest.h>

#include "dsinfer.h"
#include "test_handles.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

const std::string kBf16 = std::string(DSI_TEST_DATA_DIR) + "/golden/tiny-bf16";
const std::string kFp8 = std::string(DSI_TEST_DATA_DIR) + "/golden/tiny-fp8";

bool contains(const char *haystack, const char *needle) { return std::strstr(haystack, needle) != nullptr; }

dsi_session *open_cpu(const std::string &dir) { return dsi_test::open_cpu(dir, 2); }
using dsi_test::make_ctx;

std::vector<float> last_logits(dsi_context *c, int32_t n_vocab) {
    const float *l = dsi_context_logits(c, -1);
    REQUIRE(l != nullptr);
    return std::vector<float>(l, l + n_vocab);
}

}  // namespace

TEST_CASE("version macros match the library") {
    CHECK(dsi_version_number() == DSI_VERSION_NUMBER);
    CHECK(std::string(dsi_version()) == DSI_VERSION);
    CHECK(std::string(dsi_status_name(DSI_ERR_CONTEXT_FULL)) == "DSI_ERR_CONTEXT_FULL");
    CHECK(std::string(dsi_status_name(12345)) == "DSI_ERR_UNKNOWN");
}

TEST_CASE("session facts and description") {
    dsi_session *s = open_cpu(kFp8);
    CHECK(dsi_session_n_vocab(s) == 1024);
    CHECK(dsi_session_n_layers(s) == 4);
    CHECK(dsi_session_n_ctx_train(s) == 512);
    CHECK(dsi_session_is_sparse(s) == 1);
    CHECK(dsi_session_backend(s) == DSI_BACKEND_CPU);
    CHECK(dsi_session_bos_token(s) == 0);
    CHECK(dsi_session_eos_token(s) == 1);
    CHECK(contains(dsi_session_describe(s), "FP8"));
    CHECK(dsi_session_tokenizer(s) == nullptr);  // the golden checkpoints ship no tokenizer
    dsi_session_free(s);
}

TEST_CASE("NULL handles are refused, free(NULL) is a no-op") {
    dsi_session *s = nullptr;
    CHECK(dsi_session_open(nullptr, nullptr, &s) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(contains(dsi_last_error(), "model_dir"));
    CHECK(dsi_session_open(kBf16.c_str(), nullptr, nullptr) == DSI_ERR_INVALID_ARGUMENT);
    dsi_context *c = nullptr;
    CHECK(dsi_context_create(nullptr, nullptr, &c) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(contains(dsi_last_error(), "session"));
    const int32_t tok = 1;
    CHECK(dsi_context_eval(nullptr, &tok, 1, 0) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(dsi_context_logits(nullptr, -1) == nullptr);
    CHECK(dsi_context_truncate(nullptr, 0) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(dsi_context_length(nullptr) == 0);
    CHECK(dsi_session_n_vocab(nullptr) == 0);
    dsi_session_free(nullptr);
    dsi_context_free(nullptr);
    dsi_free(nullptr);
}

TEST_CASE("bad session parameters and missing models") {
    dsi_session *s = nullptr;
    dsi_session_params p = dsi_session_default_params();
    p.struct_size = 3;
    CHECK(dsi_session_open(kBf16.c_str(), &p, &s) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(contains(dsi_last_error(), "struct_size"));
    CHECK(s == nullptr);

    p = dsi_session_default_params();
    p.n_threads = -2;
    CHECK(dsi_session_open(kBf16.c_str(), &p, &s) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(contains(dsi_last_error(), "n_threads"));

    p = dsi_session_default_params();
    p.backend = DSI_BACKEND_CUDA;
    CHECK(dsi_session_open(kBf16.c_str(), &p, &s) == DSI_ERR_UNSUPPORTED);
    CHECK(contains(dsi_last_error(), "CUDA"));

    CHECK(dsi_session_open("/nonexistent/model", nullptr, &s) == DSI_ERR_IO);
    CHECK(contains(dsi_last_error(), "/nonexistent/model"));

    p = dsi_session_default_params();
    p.tokenizer_path = "/nonexistent/tokenizer.json";
    CHECK(dsi_session_open(kBf16.c_str(), &p, &s) == DSI_ERR_IO);
    CHECK(contains(dsi_last_error(), "/nonexistent/tokenizer.json"));
}

TEST_CASE("load progress is monotonic, ends at 1, and can cancel") {
    struct Log {
        std::vector<float> seen;
        int cancel_after = -1;
    } log;
    auto cb = [](float f, void *u) -> int {
        auto *l = static_cast<Log *>(u);
        l->seen.push_back(f);
        return l->cancel_after < 0 || static_cast<int>(l->seen.size()) <= l->cancel_after;
    };
    dsi_session_params p = dsi_session_default_params();
    p.backend = DSI_BACKEND_CPU;
    p.progress = cb;
    p.progress_user_data = &log;
    dsi_session *s = nullptr;
    REQUIRE(dsi_session_open(kBf16.c_str(), &p, &s) == DSI_OK);
    dsi_session_free(s);
    REQUIRE(log.seen.size() >= 3);
    for (size_t i = 1; i < log.seen.size(); ++i) CHECK(log.seen[i] >= log.seen[i - 1]);
    CHECK(log.seen.back() == 1.0f);
    CHECK(std::count(log.seen.begin(), log.seen.end(), 1.0f) == 1);

    log = Log{{}, 2};
    CHECK(dsi_session_open(kBf16.c_str(), &p, &s) == DSI_ERR_CANCELLED);
    CHECK(s == nullptr);
    CHECK(contains(dsi_last_error(), "cancel"));
}

TEST_CASE("log callback receives messages at or above the level") {
    std::vector<std::string> lines;
    dsi_session_params p = dsi_session_default_params();
    p.backend = DSI_BACKEND_CPU;
    p.log_level = DSI_LOG_INFO;
    p.log = [](dsi_log_level, const char *m, void *u) { static_cast<std::vector<std::string> *>(u)->push_back(m); };
    p.log_user_data = &lines;
    dsi_session *s = nullptr;
    REQUIRE(dsi_session_open(kBf16.c_str(), &p, &s) == DSI_OK);
    dsi_session_free(s);
    REQUIRE(!lines.empty());
    CHECK(lines[0].find("loaded") != std::string::npos);
}

TEST_CASE("context: invalid tokens, overflow, n_ctx bounds, logits index") {
    dsi_session *s = open_cpu(kBf16);
    dsi_context *c = nullptr;
    dsi_context_params cp = dsi_context_default_params();
    cp.n_ctx = 100000;
    CHECK(dsi_context_create(s, &cp, &c) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(contains(dsi_last_error(), "n_ctx"));

    c = make_ctx(s, 8);
    CHECK(dsi_context_n_ctx(c) == 8);
    CHECK(dsi_context_logits(c, -1) == nullptr);
    CHECK(contains(dsi_last_error(), "no logits"));

    const int32_t bad[] = {5, 1024, 7};
    CHECK(dsi_context_eval(c, bad, 3, 0) == DSI_ERR_INVALID_TOKEN);
    CHECK(contains(dsi_last_error(), "1024"));
    CHECK(contains(dsi_last_error(), "position 1"));
    const int32_t negative = -3;
    CHECK(dsi_context_eval(c, &negative, 1, 0) == DSI_ERR_INVALID_TOKEN);
    CHECK(dsi_context_length(c) == 0);  // failed calls change nothing

    CHECK(dsi_context_eval(c, bad, 0, 0) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(dsi_context_eval(c, nullptr, 1, 0) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(dsi_context_eval(c, bad, 1, 0x80) == DSI_ERR_INVALID_ARGUMENT);

    const int32_t six[] = {3, 4, 5, 6, 7, 8};
    REQUIRE(dsi_context_eval(c, six, 6, 0) == DSI_OK);
    CHECK(dsi_context_eval(c, six, 3, 0) == DSI_ERR_CONTEXT_FULL);
    CHECK(dsi_context_eval(c, six, SIZE_MAX, 0) == DSI_ERR_CONTEXT_FULL);  // never reads past six
    CHECK(contains(dsi_last_error(), "n_ctx 8"));
    CHECK(dsi_context_length(c) == 6);
    CHECK(dsi_context_logits(c, 0) != nullptr);  // index 0 of 1 row = the last token
    CHECK(dsi_context_logits(c, 1) == nullptr);
    CHECK(contains(dsi_last_error(), "DSI_EVAL_LOGITS_ALL"));
    CHECK(dsi_context_truncate(c, 7) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(dsi_context_truncate(c, -1) == DSI_ERR_INVALID_ARGUMENT);
    dsi_context_free(c);
    dsi_session_free(s);
}

TEST_CASE("prefill == token-by-token decode; truncate and clear resume exactly") {
    dsi_session *s = open_cpu(kFp8);
    const int32_t V = dsi_session_n_vocab(s);
    std::vector<int32_t> ids;
    for (int i = 0; i < 50; ++i) ids.push_back((i * 37 + 11) % V);  // 50 > top-k 32: sparse

    dsi_context *a = make_ctx(s, 64);
    REQUIRE(dsi_context_eval(a, ids.data(), ids.size(), DSI_EVAL_LOGITS_ALL) == DSI_OK);
    std::vector<float> all(dsi_context_logits(a, 0), dsi_context_logits(a, 0) + ids.size() * V);

    dsi_context *b = make_ctx(s, 64);
    std::vector<int32_t> none(4, -7);  // an empty context copies nothing (UBSan: no memcpy from NULL)
    CHECK(dsi_context_tokens(b, none.data(), none.size()) == 0);
    CHECK(none[0] == -7);
    double worst = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
        REQUIRE(dsi_context_eval(b, &ids[i], 1, 0) == DSI_OK);
        const float *l = dsi_context_logits(b, -1);
        for (int32_t v = 0; v < V; ++v) worst = std::max(worst, (double)std::fabs(l[v] - all[i * V + v]));
    }
    // Same math in a different order of float32 operations (one row vs many).
    CHECK(worst <= 1e-4);

    std::vector<int32_t> history(64);
    CHECK(dsi_context_tokens(b, history.data(), history.size()) == 50);
    CHECK(std::equal(ids.begin(), ids.end(), history.begin()));

    REQUIRE(dsi_context_truncate(b, 40) == DSI_OK);
    CHECK(dsi_context_length(b) == 40);
    CHECK(dsi_context_logits(b, -1) == nullptr);
    REQUIRE(dsi_context_eval(b, &ids[40], 10, 0) == DSI_OK);
    const auto resumed = last_logits(b, V);
    double diff = 0;
    for (int32_t v = 0; v < V; ++v) diff = std::max(diff, (double)std::fabs(resumed[v] - all[49 * V + v]));
    CHECK(diff <= 1e-4);

    REQUIRE(dsi_context_clear(b) == DSI_OK);
    CHECK(dsi_context_length(b) == 0);
    REQUIRE(dsi_context_eval(b, ids.data(), ids.size(), 0) == DSI_OK);
    CHECK(last_logits(b, V) == last_logits(a, V));
    dsi_context_free(a);
    dsi_context_free(b);
    dsi_session_free(s);
}

TEST_CASE("abort callback cancels eval and leaves the context unchanged") {
    dsi_session *s = open_cpu(kBf16);
    dsi_context_params cp = dsi_context_default_params();
    cp.n_ctx = 64;
    std::atomic<int> calls{0};
    cp.abort_callback = [](void *u) -> int { return ++*static_cast<std::atomic<int> *>(u) >= 3; };
    cp.abort_user_data = &calls;
    dsi_context *c = nullptr;
    REQUIRE(dsi_context_create(s, &cp, &c) == DSI_OK);
    const int32_t ids[] = {1, 2, 3, 4};
    CHECK(dsi_context_eval(c, ids, 4, 0) == DSI_ERR_CANCELLED);
    CHECK(contains(dsi_last_error(), "abort"));
    CHECK(dsi_context_length(c) == 0);
    dsi_context_free(c);
    dsi_session_free(s);
}

TEST_CASE("a second thread using a busy context gets DSI_ERR_BUSY") {
    dsi_session *s = open_cpu(kBf16);
    struct Gate {
        std::mutex m;
        std::condition_variable cv;
        bool evaluating = false, other_done = false;
    } gate;
    dsi_context_params cp = dsi_context_default_params();
    cp.n_ctx = 64;
    // The abort callback runs inside eval: hold the first eval there until the
    // second thread has tried to use the context.
    cp.abort_callback = [](void *u) -> int {
        auto *g = static_cast<Gate *>(u);
        std::unique_lock<std::mutex> lock(g->m);
        g->evaluating = true;
        g->cv.notify_all();
        g->cv.wait(lock, [&] { return g->other_done; });
        return 0;
    };
    cp.abort_user_data = &gate;
    dsi_context *c = nullptr;
    REQUIRE(dsi_context_create(s, &cp, &c) == DSI_OK);
    const int32_t ids[] = {1, 2, 3};
    dsi_status first = -1, second = -1;
    std::string second_msg;
    std::thread t1([&] { first = dsi_context_eval(c, ids, 3, 0); });
    std::thread t2([&] {
        {
            std::unique_lock<std::mutex> lock(gate.m);
            gate.cv.wait(lock, [&] { return gate.evaluating; });
        }
        second = dsi_context_eval(c, ids, 3, 0);
        second_msg = dsi_last_error();  // per-thread message
        std::lock_guard<std::mutex> lock(gate.m);
        gate.other_done = true;
        gate.cv.notify_all();
    });
    t1.join();
    t2.join();
    CHECK(first == DSI_OK);
    CHECK(second == DSI_ERR_BUSY);
    CHECK(second_msg.find("another thread") != std::string::npos);
    CHECK(dsi_context_length(c) == 3);
    dsi_context_free(c);
    dsi_session_free(s);
}

TEST_CASE("many contexts on one session in parallel threads give the serial results") {
    dsi_session *s = open_cpu(kFp8);
    const int32_t V = dsi_session_n_vocab(s);
    const int kThreads = 4;
    std::vector<std::vector<int32_t>> prompts(kThreads);
    for (int t = 0; t < kThreads; ++t)
        for (int i = 0; i < 40 + 5 * t; ++i) prompts[t].push_back((i * 13 + t * 101) % V);
    auto run = [&](int t) {
        dsi_context *c = make_ctx(s, 128);
        std::vector<int32_t> out;
        REQUIRE(dsi_context_eval(c, prompts[t].data(), prompts[t].size(), 0) == DSI_OK);
        for (int step = 0; step < 6; ++step) {
            const float *l = dsi_context_logits(c, -1);
            const int32_t next = static_cast<int32_t>(std::max_element(l, l + V) - l);
            out.push_back(next);
            REQUIRE(dsi_context_eval(c, &next, 1, 0) == DSI_OK);
        }
        dsi_context_free(c);
        return out;
    };
    std::vector<std::vector<int32_t>> serial(kThreads), parallel(kThreads);
    for (int t = 0; t < kThreads; ++t) serial[t] = run(t);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) threads.emplace_back([&, t] { parallel[t] = run(t); });
    for (auto &th : threads) th.join();
    CHECK(serial == parallel);
    dsi_session_free(s);
}

TEST_CASE("a tokenizer with more ids than the model's vocabulary is refused") {
    // The demo model's tokenizer has 4096 ids; the golden checkpoints 1024.
    const std::string tok = std::string(DSI_SOURCE_DIR) + "/models/demo/tokenizer.json";
    dsi_session_params p = dsi_session_default_params();
    p.backend = DSI_BACKEND_CPU;
    p.tokenizer_path = tok.c_str();
    dsi_session *s = nullptr;
    CHECK(dsi_session_open(kBf16.c_str(), &p, &s) == DSI_ERR_CONFIG);
    CHECK(s == nullptr);
    CHECK(contains(dsi_last_error(), "4096"));
    CHECK(contains(dsi_last_error(), "1024"));

    // The model directory's own tokenizer.json is picked up.
    s = open_cpu(std::string(DSI_SOURCE_DIR) + "/models/demo");
    REQUIRE(dsi_session_tokenizer(s) != nullptr);
    CHECK(dsi_tokenizer_n_vocab(dsi_session_tokenizer(s)) == 4096);
    dsi_session_free(s);
}
