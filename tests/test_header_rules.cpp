// labels: cpu badinput
// The promises of include/dsinfer.h, one test case per rule (the header's conventions
// block, threading sentences, sampler determinism, control, introspection, logging). A
// test here fails if the sentence it is named after stops being true.
#include <doctest/doctest.h>

#include "checkpoint/safetensors.h"
#include "common/portable_math.h"
#include "dsinfer.h"
#include "test_handles.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace fs = std::filesystem;

namespace {

const std::string kFp8 = std::string(DSI_TEST_DATA_DIR) + "/golden/tiny-fp8";
const std::string kBf16 = std::string(DSI_TEST_DATA_DIR) + "/golden/tiny-bf16";
const std::string kDemo = std::string(DSI_SOURCE_DIR) + "/models/demo";

bool contains(const std::string &haystack, const char *needle) { return haystack.find(needle) != std::string::npos; }

dsi_session *open_cpu(const std::string &dir) { return dsi_test::open_cpu(dir, 1); }
using dsi_test::make_ctx;

// A scratch directory removed at the end of the test.
struct TempDir {
    fs::path path;
    TempDir() {
        path = fs::temp_directory_path() / ("dsi_rules_" + std::to_string(std::rand()) + "_" +
                                            std::to_string(reinterpret_cast<uintptr_t>(this)));
        fs::create_directories(path);
    }
    ~TempDir() { fs::remove_all(path); }
    void write(const std::string &name, const std::string &text) const { std::ofstream(path / name) << text; }
};

// A copy of a model directory whose files are symlinks, with some files replaced.
void link_model(const std::string &from, const TempDir &to) {
    for (const auto &e : fs::directory_iterator(from)) fs::create_symlink(e.path(), to.path / e.path().filename());
}

// Holds an eval of `ctx` inside its abort callback until release() is called, so that
// other threads can try the context while it is in use.
class HeldEval {
public:
    HeldEval(dsi_context *ctx) : ctx_(ctx) {
        REQUIRE(dsi_context_set_abort_callback(ctx_, &HeldEval::hold, this) == DSI_OK);
        thread_ = std::thread([this] {
            const int32_t ids[] = {1, 2, 3};
            status = dsi_context_eval(ctx_, ids, 3, 0);
        });
        std::unique_lock<std::mutex> lock(m_);
        cv_.wait(lock, [&] { return inside_; });
    }
    void release() {
        {
            std::lock_guard<std::mutex> lock(m_);
            released_ = true;
        }
        cv_.notify_all();
        thread_.join();
        dsi_context_set_abort_callback(ctx_, nullptr, nullptr);
    }
    dsi_status status = -1;

private:
    static int hold(void *user) {
        auto *self = static_cast<HeldEval *>(user);
        std::unique_lock<std::mutex> lock(self->m_);
        self->inside_ = true;
        self->cv_.notify_all();
        self->cv_.wait(lock, [&] { return self->released_; });
        return 0;
    }
    dsi_context *ctx_;
    std::thread thread_;
    std::mutex m_;
    std::condition_variable cv_;
    bool inside_ = false, released_ = false;
};

struct LogLines {
    std::mutex m;
    std::vector<std::pair<dsi_log_level, std::string>> lines;
    static void sink(dsi_log_level level, const char *message, void *user) {
        auto *self = static_cast<LogLines *>(user);
        std::lock_guard<std::mutex> lock(self->m);
        self->lines.emplace_back(level, message);
    }
    bool has(dsi_log_level level, const char *needle) {
        std::lock_guard<std::mutex> lock(m);
        for (const auto &[l, text] : lines)
            if (l == level && contains(text, needle)) return true;
        return false;
    }
};

}  // namespace

TEST_CASE("rule: accessors document their value for NULL (bos/eos are -1)") {
    CHECK(dsi_session_bos_token(nullptr) == -1);
    CHECK(dsi_session_eos_token(nullptr) == -1);
    CHECK(dsi_session_n_vocab(nullptr) == 0);
    CHECK(dsi_session_n_ctx_train(nullptr) == 0);
    CHECK(dsi_session_n_layers(nullptr) == 0);
    CHECK(dsi_session_is_sparse(nullptr) == 0);
    CHECK(dsi_session_backend(nullptr) == DSI_BACKEND_AUTO);
    CHECK(dsi_session_describe(nullptr) == nullptr);
    CHECK(dsi_session_tokenizer(nullptr) == nullptr);
    CHECK(dsi_session_config_value(nullptr, DSI_CONFIG_HIDDEN_SIZE) == -1);
    CHECK(dsi_session_n_params(nullptr) == 0);
    CHECK(dsi_session_weight_bytes(nullptr) == 0);
    CHECK(dsi_session_cache_bytes(nullptr, 1) == -1);
    CHECK(dsi_session_eog_tokens(nullptr, nullptr, 0) == 0);
    CHECK(dsi_session_token_attr(nullptr, 0) == DSI_TOKEN_ATTR_NONE);
    CHECK(dsi_context_length(nullptr) == 0);
    CHECK(dsi_context_n_ctx(nullptr) == 0);
    CHECK(dsi_context_tokens(nullptr, nullptr, 0) == 0);
    CHECK(dsi_context_cache_bytes(nullptr) == 0);
    CHECK(dsi_context_perf_get(nullptr).prompt_tokens == 0);
    CHECK(dsi_sampler_perf_get(nullptr).samples == 0);
    CHECK(dsi_tokenizer_n_vocab(nullptr) == 0);
    CHECK(dsi_tokenizer_token_id(nullptr, "a") == -1);
    CHECK(dsi_tokenizer_token_attr(nullptr, 0) == DSI_TOKEN_ATTR_NONE);
    // A session without bos/eos in config.json reports -1 too.
    TempDir dir;
    link_model(kBf16, dir);
    auto cfg = nlohmann::json::parse(std::ifstream(kBf16 + "/config.json"));
    cfg.erase("bos_token_id");
    cfg.erase("eos_token_id");
    fs::remove(dir.path / "config.json");
    dir.write("config.json", cfg.dump());
    LogLines log;
    REQUIRE(dsi_log_set(LogLines::sink, &log, DSI_LOG_WARN) == DSI_OK);
    dsi_session *s = open_cpu(dir.path.string());
    REQUIRE(dsi_log_set(nullptr, nullptr, DSI_LOG_NONE) == DSI_OK);
    CHECK(log.has(DSI_LOG_WARN, "no eos_token_id"));
    CHECK(dsi_session_bos_token(s) == -1);
    CHECK(dsi_session_eos_token(s) == -1);
    CHECK(dsi_session_eog_tokens(s, nullptr, 0) == 0);
    dsi_session_free(s);
}

TEST_CASE("rule: the non-status failures are NULL (logits) and -1 (lookups), with a message") {
    dsi_session *s = open_cpu(kBf16);
    dsi_context *c = make_ctx(s, 8);
    CHECK(dsi_context_logits(c, -1) == nullptr);
    CHECK(contains(dsi_last_error(), "no logits"));
    CHECK(dsi_context_logits(nullptr, -1) == nullptr);
    CHECK(contains(dsi_last_error(), "ctx is NULL"));
    dsi_context_free(c);
    dsi_session_free(s);

    dsi_tokenizer *tok = nullptr;
    REQUIRE(dsi_tokenizer_load((kDemo + "/tokenizer.json").c_str(), &tok) == DSI_OK);
    CHECK(dsi_tokenizer_token_id(tok, "no such token text") == -1);
    CHECK(dsi_tokenizer_token_id(tok, nullptr) == -1);
    CHECK(dsi_tokenizer_token_id(tok, "<｜end▁of▁sentence｜>") == 1);
    dsi_tokenizer_free(tok);
}

TEST_CASE("rule: a failed create sets *out to NULL") {
    void *const junk = reinterpret_cast<void *>(uintptr_t{0x1});
    dsi_session *s = static_cast<dsi_session *>(junk);
    CHECK(dsi_session_open("/nonexistent", nullptr, &s) == DSI_ERR_IO);
    CHECK(s == nullptr);
    dsi_context *c = static_cast<dsi_context *>(junk);
    CHECK(dsi_context_create(nullptr, nullptr, &c) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(c == nullptr);
    dsi_sampler_params sp = dsi_sampler_default_params();
    sp.top_p = 2.0f;
    dsi_sampler *smp = static_cast<dsi_sampler *>(junk);
    CHECK(dsi_sampler_create(&sp, &smp) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(smp == nullptr);
    dsi_tokenizer *tok = static_cast<dsi_tokenizer *>(junk);
    CHECK(dsi_tokenizer_load("/nonexistent.json", &tok) == DSI_ERR_IO);
    CHECK(tok == nullptr);
    dsi_detokenizer *d = static_cast<dsi_detokenizer *>(junk);
    CHECK(dsi_detokenizer_create(nullptr, 0, &d) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(d == nullptr);
    dsi_chat_parser *p = static_cast<dsi_chat_parser *>(junk);
    CHECK(dsi_chat_parser_create(0x80, &p) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(p == nullptr);
    char *prompt = static_cast<char *>(junk);
    CHECK(dsi_chat_render("{", 1, 0, &prompt, nullptr) == DSI_ERR_PARSE);
    CHECK(prompt == nullptr);
}

TEST_CASE("rule: every *_free accepts NULL; a successful call keeps the last message") {
    dsi_session_free(nullptr);
    dsi_context_free(nullptr);
    dsi_sampler_free(nullptr);
    dsi_tokenizer_free(nullptr);
    dsi_detokenizer_free(nullptr);
    dsi_chat_parser_free(nullptr);
    dsi_free(nullptr);
    dsi_context_perf_reset(nullptr);
    dsi_sampler_perf_reset(nullptr);

    CHECK(dsi_context_clear(nullptr) == DSI_ERR_INVALID_ARGUMENT);
    const std::string before = dsi_last_error();
    dsi_sampler *smp = nullptr;
    REQUIRE(dsi_sampler_create(nullptr, &smp) == DSI_OK);
    CHECK(before == dsi_last_error());
    dsi_sampler_free(smp);
}

TEST_CASE("rule: a call on a context in use by another thread returns DSI_ERR_BUSY") {
    dsi_session *s = open_cpu(kBf16);
    dsi_context *c = make_ctx(s, 64);
    const int32_t first[] = {5, 6};
    REQUIRE(dsi_context_eval(c, first, 2, 0) == DSI_OK);
    dsi_sampler *smp = nullptr;
    REQUIRE(dsi_sampler_create(nullptr, &smp) == DSI_OK);

    HeldEval held(c);
    const int32_t one = 7;
    CHECK(dsi_context_eval(c, &one, 1, 0) == DSI_ERR_BUSY);
    CHECK(dsi_context_logits(c, -1) == nullptr);
    CHECK(contains(dsi_last_error(), "another thread"));
    CHECK(dsi_context_clear(c) == DSI_ERR_BUSY);
    CHECK(dsi_context_truncate(c, 1) == DSI_ERR_BUSY);
    int32_t token = -1;
    CHECK(dsi_sampler_sample(smp, c, &token) == DSI_ERR_BUSY);
    CHECK(dsi_context_n_ctx(c) == 64);  // fixed at creation
    held.release();
    CHECK(held.status == DSI_OK);
    CHECK(dsi_context_length(c) == 5);
    CHECK(dsi_sampler_sample(smp, c, &token) == DSI_OK);
    dsi_sampler_free(smp);
    dsi_context_free(c);
    dsi_session_free(s);
}

TEST_CASE("rule: concurrent calls on one sampler return DSI_ERR_BUSY") {
    // Large logits make each draw long enough for two threads to overlap.
    std::vector<float> logits(1 << 20);
    for (size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>((i * 7919) % 1000) / 100.0f;
    dsi_sampler_params p = dsi_sampler_default_params();
    p.top_k = 0;
    dsi_sampler *smp = nullptr;
    REQUIRE(dsi_sampler_create(&p, &smp) == DSI_OK);
    std::atomic<int> busy{0}, ok{0}, other{0};
    std::atomic<bool> stop{false};
    auto worker = [&] {
        for (int i = 0; i < 400 && !stop; ++i) {
            int32_t t = -1;
            const dsi_status st =
                dsi_sampler_sample_logits(smp, logits.data(), static_cast<int32_t>(logits.size()), nullptr, 0, &t);
            (st == DSI_OK ? ok : st == DSI_ERR_BUSY ? busy : other)++;
            if (busy > 0) stop = true;
        }
    };
    std::thread a(worker), b(worker);
    a.join();
    b.join();
    CHECK(busy > 0);
    CHECK(other == 0);
    CHECK(dsi_sampler_perf_get(smp).samples == ok.load());
    dsi_sampler_free(smp);
}

TEST_CASE("rule: the sampler's exponential gives the same bits everywhere") {
    // Values computed once; an IEEE binary64 platform without contraction reproduces
    // them exactly. Each is also within 1 ulp of the C library's.
    const std::pair<double, uint64_t> cases[] = {
        {0.0, 0x3ff0000000000000ull},    {-1.0, 0x3fd78b56362cef38ull},  {-0.5, 0x3fe368b2fc6f960aull},
        {-10.0, 0x3f07cd79b5647c9aull},  {-100.0, 0x36ea8c1f14e2af5dull}, {-700.0, 0x00d14f2b0fb9307full},
        {-744.0, 0x0000000000000002ull}, {1.0, 0x4005bf0a8b14576aull},   {-0.001, 0x3feff7cfe56f1a9eull},
        {-37.25, 0x3c93278bcd70e981ull},
    };
    for (const auto &[x, bits] : cases) {
        const double y = dsi::portable_exp(x);
        uint64_t got;
        std::memcpy(&got, &y, sizeof got);
        CHECK_MESSAGE(got == bits, "x=" << x);
    }
    for (double x = -745.0; x <= 709.0; x += 0.37) {
        const double mine = dsi::portable_exp(x), libm = std::exp(x);
        const double ulp = std::nextafter(libm, INFINITY) - libm;
        CHECK_MESSAGE(std::fabs(mine - libm) <= ulp, "x=" << x);
    }
    CHECK(dsi::portable_exp(-746.0) == 0.0);
    CHECK(dsi::portable_exp(710.0) == INFINITY);
    CHECK(std::isnan(dsi::portable_exp(NAN)));
}

TEST_CASE("rule: a seed, logits and history give the same tokens (pinned sequence)") {
    std::vector<float> logits(64);
    for (size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(static_cast<float>(i) * 0.7f) * 3.0f;
    dsi_sampler_params p = dsi_sampler_default_params();
    p.temperature = 1.3f;
    p.top_k = 20;
    p.top_p = 0.9f;
    p.min_p = 0.02f;
    p.repeat_penalty = 1.1f;
    p.seed = 1234;
    dsi_sampler *smp = nullptr;
    REQUIRE(dsi_sampler_create(&p, &smp) == DSI_OK);
    std::vector<int32_t> history, drawn;
    for (int i = 0; i < 16; ++i) {
        int32_t t = -1;
        REQUIRE(dsi_sampler_sample_logits(smp, logits.data(), 64, history.data(), history.size(), &t) == DSI_OK);
        drawn.push_back(t);
        history.push_back(t);
    }
    // Recorded once on x86-64; any platform the header names must reproduce them.
    const std::vector<int32_t> expected = {56, 57, 30, 57, 38, 55, 56, 20, 12, 39, 3, 11, 29, 3, 20, 57};
    CHECK(drawn == expected);
    dsi_sampler_free(smp);
}

TEST_CASE("control: the abort callback is set, replaced during an eval, and cleared") {
    dsi_session *s = open_cpu(kBf16);
    dsi_context *c = make_ctx(s, 64);
    const int32_t ids[] = {1, 2, 3, 4};
    CHECK(dsi_context_set_abort_callback(nullptr, nullptr, nullptr) == DSI_ERR_INVALID_ARGUMENT);
    REQUIRE(dsi_context_set_abort_callback(c, [](void *) { return 1; }, nullptr) == DSI_OK);
    CHECK(dsi_context_eval(c, ids, 4, 0) == DSI_ERR_CANCELLED);
    CHECK(dsi_context_length(c) == 0);
    REQUIRE(dsi_context_set_abort_callback(c, nullptr, nullptr) == DSI_OK);
    CHECK(dsi_context_eval(c, ids, 4, 0) == DSI_OK);

    // A callback that installs an aborting one: the next poll of the same eval aborts.
    struct Swap {
        dsi_context *c;
        int polls = 0;
    } swap{c};
    auto installer = [](void *u) -> int {
        auto *sw = static_cast<Swap *>(u);
        ++sw->polls;
        dsi_context_set_abort_callback(sw->c, +[](void *v) -> int {
            ++static_cast<Swap *>(v)->polls;
            return 1;
        }, sw);
        return 0;
    };
    REQUIRE(dsi_context_set_abort_callback(c, installer, &swap) == DSI_OK);
    CHECK(dsi_context_eval(c, ids, 1, 0) == DSI_ERR_CANCELLED);
    CHECK(swap.polls == 2);
    CHECK(dsi_context_length(c) == 4);
    dsi_context_free(c);
    dsi_session_free(s);
}

TEST_CASE("control: logit bias adds to logits, bans with -inf, and is checked") {
    std::vector<float> logits = {0.0f, 5.0f, 1.0f, 4.5f};
    dsi_sampler_params p = dsi_sampler_default_params();
    p.temperature = 0.0f;  // greedy: the bias alone decides
    dsi_sampler *smp = nullptr;
    REQUIRE(dsi_sampler_create(&p, &smp) == DSI_OK);
    int32_t t = -1;
    REQUIRE(dsi_sampler_sample_logits(smp, logits.data(), 4, nullptr, 0, &t) == DSI_OK);
    CHECK(t == 1);
    const dsi_logit_bias ban_eos[] = {{1, -INFINITY}};  // --ignore-eos
    REQUIRE(dsi_sampler_set_logit_bias(smp, ban_eos, 1) == DSI_OK);
    REQUIRE(dsi_sampler_sample_logits(smp, logits.data(), 4, nullptr, 0, &t) == DSI_OK);
    CHECK(t == 3);
    const dsi_logit_bias boost[] = {{2, 3.0f}, {2, 3.0f}};  // listed twice: both added
    REQUIRE(dsi_sampler_set_logit_bias(smp, boost, 2) == DSI_OK);
    REQUIRE(dsi_sampler_sample_logits(smp, logits.data(), 4, nullptr, 0, &t) == DSI_OK);
    CHECK(t == 2);

    const dsi_logit_bias bad_nan[] = {{0, NAN}};
    CHECK(dsi_sampler_set_logit_bias(smp, bad_nan, 1) == DSI_ERR_INVALID_ARGUMENT);
    const dsi_logit_bias bad_inf[] = {{0, INFINITY}};
    CHECK(dsi_sampler_set_logit_bias(smp, bad_inf, 1) == DSI_ERR_INVALID_ARGUMENT);
    const dsi_logit_bias bad_id[] = {{-1, 1.0f}};
    CHECK(dsi_sampler_set_logit_bias(smp, bad_id, 1) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(dsi_sampler_set_logit_bias(smp, nullptr, 1) == DSI_ERR_INVALID_ARGUMENT);
    REQUIRE(dsi_sampler_sample_logits(smp, logits.data(), 4, nullptr, 0, &t) == DSI_OK);
    CHECK(t == 2);  // the failed calls left the bias as it was

    const dsi_logit_bias past_vocab[] = {{4, 1.0f}};
    REQUIRE(dsi_sampler_set_logit_bias(smp, past_vocab, 1) == DSI_OK);
    CHECK(dsi_sampler_sample_logits(smp, logits.data(), 4, nullptr, 0, &t) == DSI_ERR_INVALID_TOKEN);
    const dsi_logit_bias ban_all[] = {{0, -INFINITY}, {1, -INFINITY}, {2, -INFINITY}, {3, -INFINITY}};
    REQUIRE(dsi_sampler_set_logit_bias(smp, ban_all, 4) == DSI_OK);
    CHECK(dsi_sampler_sample_logits(smp, logits.data(), 4, nullptr, 0, &t) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(contains(dsi_last_error(), "every token"));
    REQUIRE(dsi_sampler_set_logit_bias(smp, nullptr, 0) == DSI_OK);  // cleared
    REQUIRE(dsi_sampler_sample_logits(smp, logits.data(), 4, nullptr, 0, &t) == DSI_OK);
    CHECK(t == 1);
    dsi_sampler_free(smp);
}

TEST_CASE("perf: prompt and decode counters, sampler counters, reset") {
    dsi_session *s = open_cpu(kBf16);
    dsi_context *c = make_ctx(s, 64);
    const int32_t prompt[] = {1, 2, 3, 4, 5};
    REQUIRE(dsi_context_eval(c, prompt, 5, 0) == DSI_OK);
    dsi_sampler *smp = nullptr;
    REQUIRE(dsi_sampler_create(nullptr, &smp) == DSI_OK);
    for (int i = 0; i < 3; ++i) {
        int32_t t = -1;
        REQUIRE(dsi_sampler_sample(smp, c, &t) == DSI_OK);
        REQUIRE(dsi_context_eval(c, &t, 1, 0) == DSI_OK);
    }
    const int32_t bad = -1;
    CHECK(dsi_context_eval(c, &bad, 1, 0) == DSI_ERR_INVALID_TOKEN);  // failures are not counted
    dsi_context_perf perf = dsi_context_perf_get(c);
    CHECK(perf.prompt_tokens == 5);
    CHECK(perf.decode_tokens == 3);
    CHECK(perf.prompt_ms > 0.0);
    CHECK(perf.decode_ms > 0.0);
    CHECK(perf.load_ms > 0.0);
    dsi_sampler_perf sperf = dsi_sampler_perf_get(smp);
    CHECK(sperf.samples == 3);
    CHECK(sperf.sample_ms >= 0.0);
    dsi_context_perf_reset(c);
    dsi_sampler_perf_reset(smp);
    perf = dsi_context_perf_get(c);
    CHECK(perf.prompt_tokens == 0);
    CHECK(perf.decode_tokens == 0);
    CHECK(perf.prompt_ms == 0.0);
    CHECK(perf.decode_ms == 0.0);
    CHECK(perf.load_ms > 0.0);
    CHECK(dsi_sampler_perf_get(smp).samples == 0);
    dsi_sampler_free(smp);
    dsi_context_free(c);
    dsi_session_free(s);
}

TEST_CASE("introspection: config values, parameters, bytes, caches") {
    dsi_session *s = open_cpu(kFp8);
    const auto cfg = nlohmann::json::parse(std::ifstream(kFp8 + "/config.json"));
    const std::pair<dsi_config_key, const char *> keys[] = {
        {DSI_CONFIG_VOCAB_SIZE, "vocab_size"},
        {DSI_CONFIG_HIDDEN_SIZE, "hidden_size"},
        {DSI_CONFIG_NUM_HIDDEN_LAYERS, "num_hidden_layers"},
        {DSI_CONFIG_FIRST_K_DENSE_REPLACE, "first_k_dense_replace"},
        {DSI_CONFIG_NUM_ATTENTION_HEADS, "num_attention_heads"},
        {DSI_CONFIG_Q_LORA_RANK, "q_lora_rank"},
        {DSI_CONFIG_KV_LORA_RANK, "kv_lora_rank"},
        {DSI_CONFIG_QK_NOPE_HEAD_DIM, "qk_nope_head_dim"},
        {DSI_CONFIG_QK_ROPE_HEAD_DIM, "qk_rope_head_dim"},
        {DSI_CONFIG_V_HEAD_DIM, "v_head_dim"},
        {DSI_CONFIG_INTERMEDIATE_SIZE, "intermediate_size"},
        {DSI_CONFIG_MOE_INTERMEDIATE_SIZE, "moe_intermediate_size"},
        {DSI_CONFIG_N_ROUTED_EXPERTS, "n_routed_experts"},
        {DSI_CONFIG_N_SHARED_EXPERTS, "n_shared_experts"},
        {DSI_CONFIG_NUM_EXPERTS_PER_TOK, "num_experts_per_tok"},
        {DSI_CONFIG_INDEX_N_HEADS, "index_n_heads"},
        {DSI_CONFIG_INDEX_HEAD_DIM, "index_head_dim"},
        {DSI_CONFIG_INDEX_TOPK, "index_topk"},
        {DSI_CONFIG_MAX_POSITION_EMBEDDINGS, "max_position_embeddings"},
    };
    for (const auto &[key, name] : keys) CHECK_MESSAGE(dsi_session_config_value(s, key) == cfg[name].get<int64_t>(), name);
    CHECK(dsi_session_config_value(s, static_cast<dsi_config_key>(999)) == -1);

    // Every tensor of the checkpoint is used (no MTP layer in it): elements without the
    // FP8 scales, bytes with them.
    auto ckpt = dsi::Checkpoint::open(kFp8);
    int64_t params = 0, bytes = 0;
    for (const std::string &name : ckpt->names()) {
        const dsi::TensorInfo &t = ckpt->get(name);
        bytes += static_cast<int64_t>(t.nbytes);
        if (!contains(name, "_scale_inv")) params += t.numel();
    }
    CHECK(dsi_session_n_params(s) == params);
    CHECK(dsi_session_weight_bytes(s) == bytes);

    // 64-token pages of float32 latent (128) + rope key (16) + indexer key (128) per layer (4).
    const int64_t page = 64 * 4 * (128 + 16 + 128) * 4;
    dsi_cache_stats stats;
    REQUIRE(dsi_session_cache_stats(s, &stats) == DSI_OK);
    CHECK(static_cast<int64_t>(stats.page_bytes) == page);
    CHECK(dsi_session_cache_bytes(s, 1) == page);
    CHECK(dsi_session_cache_bytes(s, 64) == page);
    CHECK(dsi_session_cache_bytes(s, 65) == 2 * page);
    CHECK(dsi_session_cache_bytes(s, 0) == -1);
    CHECK(dsi_session_cache_bytes(s, 513) == -1);
    dsi_context *c = make_ctx(s, 100);
    CHECK(dsi_context_cache_bytes(c) == 0);
    std::vector<int32_t> ids(70, 5);
    REQUIRE(dsi_context_eval(c, ids.data(), ids.size(), 0) == DSI_OK);
    CHECK(dsi_context_cache_bytes(c) == dsi_session_cache_bytes(s, 70));
    dsi_context_free(c);
    dsi_session_free(s);
}

TEST_CASE("introspection: backends and source revision without a model") {
    CHECK(dsi_backend_available(DSI_BACKEND_CPU) == 1);
    CHECK(dsi_backend_available(DSI_BACKEND_AUTO) == 1);
    CHECK(dsi_backend_available(static_cast<dsi_backend>(77)) == 0);
    // CUDA is available exactly when a CUDA session opens.
    dsi_session_params p = dsi_session_default_params();
    p.backend = DSI_BACKEND_CUDA;
    dsi_session *s = nullptr;
    const dsi_status st = dsi_session_open(kBf16.c_str(), &p, &s);
    CHECK((st == DSI_OK) == (dsi_backend_available(DSI_BACKEND_CUDA) == 1));
    // Not available: DSI_ERR_UNSUPPORTED, as the enum's comment says.
    if (dsi_backend_available(DSI_BACKEND_CUDA) == 0) CHECK(st == DSI_ERR_UNSUPPORTED);
    dsi_session_free(s);
    s = nullptr;
    // AUTO: CUDA exactly when it is available, else CPU.
    p.backend = DSI_BACKEND_AUTO;
    REQUIRE_MESSAGE(dsi_session_open(kBf16.c_str(), &p, &s) == DSI_OK, dsi_last_error());
    CHECK(dsi_session_backend(s) ==
          (dsi_backend_available(DSI_BACKEND_CUDA) == 1 ? DSI_BACKEND_CUDA : DSI_BACKEND_CPU));
    dsi_session_free(s);
    REQUIRE(dsi_source_revision() != nullptr);
    CHECK(std::strlen(dsi_source_revision()) > 0);
}

TEST_CASE("gpu_precision: ignored on CPU, validated everywhere") {
    const std::vector<int32_t> ids = {1, 5, 9, 13, 2};
    std::vector<float> logits[2];
    const dsi_gpu_precision precisions[2] = {DSI_GPU_PRECISION_FAST, DSI_GPU_PRECISION_F32};
    for (int i = 0; i < 2; ++i) {
        dsi_session_params p = dsi_session_default_params();
        p.backend = DSI_BACKEND_CPU;
        p.gpu_precision = precisions[i];
        dsi_session *s = nullptr;
        REQUIRE_MESSAGE(dsi_session_open(kBf16.c_str(), &p, &s) == DSI_OK, dsi_last_error());
        dsi_context *c = nullptr;
        REQUIRE(dsi_context_create(s, nullptr, &c) == DSI_OK);
        REQUIRE(dsi_context_eval(c, ids.data(), ids.size(), 0) == DSI_OK);
        const float *l = dsi_context_logits(c, -1);
        REQUIRE(l != nullptr);
        logits[i].assign(l, l + dsi_session_n_vocab(s));
        dsi_context_free(c);
        dsi_session_free(s);
    }
    CHECK(logits[0] == logits[1]);  // bit-identical: the CPU engine has one arithmetic

    dsi_session_params p = dsi_session_default_params();
    p.backend = DSI_BACKEND_CPU;
    p.gpu_precision = static_cast<dsi_gpu_precision>(7);
    dsi_session *s = nullptr;
    CHECK(dsi_session_open(kBf16.c_str(), &p, &s) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(s == nullptr);
    CHECK(std::string(dsi_last_error()).find("gpu_precision") != std::string::npos);
}

TEST_CASE("vocabulary: the EOG set comes from config.json and generation_config.json") {
    TempDir dir;
    link_model(kBf16, dir);
    auto cfg = nlohmann::json::parse(std::ifstream(kBf16 + "/config.json"));
    cfg["eos_token_id"] = {1, 7, 1};
    fs::remove(dir.path / "config.json");
    dir.write("config.json", cfg.dump());
    dir.write("generation_config.json", R"({"eos_token_id": [7, 9]})");
    dsi_session *s = open_cpu(dir.path.string());
    CHECK(dsi_session_eos_token(s) == 1);
    int32_t ids[8] = {};
    REQUIRE(dsi_session_eog_tokens(s, ids, 8) == 3);
    CHECK(ids[0] == 1);
    CHECK(ids[1] == 7);
    CHECK(ids[2] == 9);
    int32_t one[1] = {};
    CHECK(dsi_session_eog_tokens(s, one, 1) == 3);  // copies what fits, returns the count
    CHECK(one[0] == 1);
    CHECK((dsi_session_token_attr(s, 9) & DSI_TOKEN_ATTR_EOG) != 0);
    CHECK((dsi_session_token_attr(s, 8) & DSI_TOKEN_ATTR_EOG) == 0);
    dsi_session_free(s);

    dir.write("generation_config.json", R"({"eos_token_id": 5000})");
    s = nullptr;
    dsi_session_params p = dsi_session_default_params();
    p.backend = DSI_BACKEND_CPU;
    CHECK(dsi_session_open(dir.path.string().c_str(), &p, &s) == DSI_ERR_CONFIG);
    CHECK(contains(dsi_last_error(), "generation_config.json"));
}

TEST_CASE("vocabulary: pieces, attributes, add_special and skip_special") {
    dsi_session *s = open_cpu(kDemo);
    const dsi_tokenizer *tok = dsi_session_tokenizer(s);
    REQUIRE(tok != nullptr);
    const int32_t bos = dsi_tokenizer_token_id(tok, "<｜begin▁of▁sentence｜>");
    const int32_t eos = dsi_tokenizer_token_id(tok, "<｜end▁of▁sentence｜>");
    CHECK(dsi_tokenizer_token_attr(tok, bos) == DSI_TOKEN_ATTR_CONTROL);
    CHECK(dsi_session_token_attr(s, eos) == (DSI_TOKEN_ATTR_CONTROL | DSI_TOKEN_ATTR_EOG));
    CHECK(dsi_tokenizer_token_attr(tok, -1) == DSI_TOKEN_ATTR_NONE);
    CHECK(dsi_tokenizer_token_attr(tok, dsi_tokenizer_n_vocab(tok)) == DSI_TOKEN_ATTR_NONE);

    size_t n = 0;
    int32_t ids[64];
    REQUIRE(dsi_tokenize(tok, "hello world", 11, 0, ids, 64, &n) == DSI_OK);
    REQUIRE(n > 0);
    CHECK(dsi_tokenizer_token_attr(tok, ids[0]) == DSI_TOKEN_ATTR_NORMAL);
    // Pieces put together are the decoded text.
    std::string pieces;
    for (size_t i = 0; i < n; ++i) {
        char buf[64];
        size_t len = 0;
        REQUIRE(dsi_tokenizer_token_to_piece(tok, ids[i], buf, sizeof buf, &len) == DSI_OK);
        CHECK(buf[len] == '\0');
        pieces.append(buf, len);
    }
    CHECK(pieces == "hello world");
    size_t len = 0;
    CHECK(dsi_tokenizer_token_to_piece(tok, eos, nullptr, 0, &len) == DSI_ERR_BUFFER_TOO_SMALL);
    CHECK(len == std::strlen("<｜end▁of▁sentence｜>"));
    CHECK(dsi_tokenizer_token_to_piece(tok, -5, nullptr, 0, &len) == DSI_ERR_INVALID_TOKEN);

    // The demo tokenizer has no template: add_special adds nothing.
    size_t plain = 0;
    REQUIRE(dsi_tokenize(tok, "hello", 5, DSI_TOKENIZE_ADD_SPECIAL, ids, 64, &plain) == DSI_OK);
    CHECK(ids[0] != bos);
    CHECK(dsi_tokenize(tok, "hello", 5, 0x10, ids, 64, &n) == DSI_ERR_INVALID_ARGUMENT);

    // skip_special drops control tokens, whole and streaming.
    const int32_t seq[] = {bos, ids[0], eos};
    char text[256];
    size_t text_len = 0;
    REQUIRE(dsi_detokenize(tok, seq, 3, 0, text, sizeof text, &text_len) == DSI_OK);
    CHECK(contains(std::string(text, text_len), "<｜end▁of▁sentence｜>"));
    REQUIRE(dsi_detokenize(tok, seq, 3, DSI_DETOKENIZE_SKIP_SPECIAL, text, sizeof text, &text_len) == DSI_OK);
    const std::string skipped(text, text_len);
    CHECK(!contains(skipped, "<｜"));
    CHECK(dsi_detokenize(tok, seq, 3, 0x4, text, sizeof text, &text_len) == DSI_ERR_INVALID_ARGUMENT);
    dsi_detokenizer *d = nullptr;
    REQUIRE(dsi_detokenizer_create(tok, DSI_DETOKENIZE_SKIP_SPECIAL, &d) == DSI_OK);
    std::string streamed;
    for (int32_t id : seq) {
        const char *piece = nullptr;
        size_t piece_len = 0;
        REQUIRE(dsi_detokenizer_push(d, id, &piece, &piece_len) == DSI_OK);
        streamed.append(piece, piece_len);
    }
    CHECK(streamed == skipped);
    dsi_detokenizer_free(d);
    CHECK(dsi_detokenizer_create(tok, 0x2, &d) == DSI_ERR_INVALID_ARGUMENT);
    dsi_session_free(s);
}

TEST_CASE("vocabulary: add_special follows tokenizer_config.json, else the TemplateProcessing") {
    TempDir dir;
    fs::create_symlink(kDemo + "/tokenizer.json", dir.path / "tokenizer.json");
    dir.write("tokenizer_config.json",
              R"({"add_bos_token": true, "add_eos_token": false,
                  "bos_token": {"content": "<｜begin▁of▁sentence｜>"}, "eos_token": "<｜end▁of▁sentence｜>"})");
    dsi_tokenizer *tok = nullptr;
    REQUIRE(dsi_tokenizer_load((dir.path / "tokenizer.json").string().c_str(), &tok) == DSI_OK);
    int32_t with[32], without[32];
    size_t n_with = 0, n_without = 0;
    REQUIRE(dsi_tokenize(tok, "hi there", 8, DSI_TOKENIZE_ADD_SPECIAL, with, 32, &n_with) == DSI_OK);
    REQUIRE(dsi_tokenize(tok, "hi there", 8, 0, without, 32, &n_without) == DSI_OK);
    REQUIRE(n_with == n_without + 1);
    CHECK(with[0] == dsi_tokenizer_token_id(tok, "<｜begin▁of▁sentence｜>"));
    CHECK(std::equal(without, without + n_without, with + 1));
    dsi_tokenizer_free(tok);

    // Without tokenizer_config.json: the post_processor's single template.
    TempDir tdir;
    auto j = nlohmann::json::parse(std::ifstream(kDemo + "/tokenizer.json"));
    j["post_processor"] = nlohmann::json::parse(R"({"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true},
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<｜begin▁of▁sentence｜>", "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}},
                    {"SpecialToken": {"id": "<｜end▁of▁sentence｜>", "type_id": 0}}],
         "pair": [],
         "special_tokens": {"<｜begin▁of▁sentence｜>": {"id": "<｜begin▁of▁sentence｜>", "ids": [0], "tokens": []},
                            "<｜end▁of▁sentence｜>": {"id": "<｜end▁of▁sentence｜>", "ids": [1], "tokens": []}}}]})");
    tdir.write("tokenizer.json", j.dump());
    REQUIRE(dsi_tokenizer_load((tdir.path / "tokenizer.json").string().c_str(), &tok) == DSI_OK);
    REQUIRE(dsi_tokenize(tok, "hi there", 8, DSI_TOKENIZE_ADD_SPECIAL, with, 32, &n_with) == DSI_OK);
    REQUIRE(n_with == n_without + 2);
    CHECK(with[0] == 0);
    CHECK(with[n_with - 1] == 1);
    dsi_tokenizer_free(tok);

    j["post_processor"] = nlohmann::json::parse(R"({"type": "BertProcessing", "sep": ["x", 1], "cls": ["y", 0]})");
    tdir.write("tokenizer.json", j.dump());
    REQUIRE(dsi_tokenizer_load((tdir.path / "tokenizer.json").string().c_str(), &tok) == DSI_OK);
    CHECK(dsi_tokenize(tok, "hi", 2, 0, with, 32, &n_with) == DSI_OK);
    CHECK(dsi_tokenize(tok, "hi", 2, DSI_TOKENIZE_ADD_SPECIAL, with, 32, &n_with) == DSI_ERR_UNSUPPORTED);
    CHECK(contains(dsi_last_error(), "BertProcessing"));
    dsi_tokenizer_free(tok);
}

TEST_CASE("logging: the process-wide sink, levels, and the events") {
    LogLines global;
    CHECK(dsi_log_set(LogLines::sink, &global, static_cast<dsi_log_level>(9)) == DSI_ERR_INVALID_ARGUMENT);
    REQUIRE(dsi_log_set(LogLines::sink, &global, DSI_LOG_DEBUG) == DSI_OK);

    // A failed call without a session: its message at ERROR.
    dsi_tokenizer *tok = nullptr;
    CHECK(dsi_tokenizer_load("/nonexistent/tok.json", &tok) == DSI_ERR_IO);
    CHECK(global.has(DSI_LOG_ERROR, "/nonexistent/tok.json"));
    REQUIRE(dsi_tokenizer_load((kDemo + "/tokenizer.json").c_str(), &tok) == DSI_OK);
    CHECK(global.has(DSI_LOG_DEBUG, "tokenizer"));
    dsi_tokenizer_free(tok);
    const char conversation[] = R"({"messages": [{"role": "user", "content": "hi"}]})";
    char *prompt = nullptr;
    REQUIRE(dsi_chat_render(conversation, sizeof conversation - 1, 0, &prompt, nullptr) == DSI_OK);
    dsi_free(prompt);
    CHECK(global.has(DSI_LOG_DEBUG, "chat: rendered"));

    // A session without its own sink logs to the process-wide one: what was loaded
    // (INFO), the AUTO fallback to the CPU where no GPU is usable (WARN), contexts and
    // their caches (INFO), each eval (DEBUG).
    dsi_session_params p = dsi_session_default_params();
    p.n_threads = 1;
    dsi_session *s = nullptr;
    REQUIRE(dsi_session_open(kFp8.c_str(), &p, &s) == DSI_OK);
    CHECK(global.has(DSI_LOG_INFO, "loaded"));
    CHECK(global.has(DSI_LOG_INFO, "parameters"));
    CHECK(global.has(DSI_LOG_INFO, "1 threads"));
    CHECK(global.has(DSI_LOG_WARN, "AUTO") == (dsi_backend_available(DSI_BACKEND_CUDA) == 0));
    dsi_context *c = make_ctx(s, 16);
    CHECK(global.has(DSI_LOG_INFO, "cache bytes"));
    const int32_t id = 3;
    REQUIRE(dsi_context_eval(c, &id, 1, 0) == DSI_OK);
    CHECK(global.has(DSI_LOG_DEBUG, "eval: 1 token(s) at position 0"));
    dsi_context_free(c);
    dsi_session_free(s);

    // A session's own sink takes its messages instead, filtered by its level.
    LogLines own;
    const size_t global_before = global.lines.size();
    p.log = LogLines::sink;
    p.log_user_data = &own;
    p.log_level = DSI_LOG_INFO;
    REQUIRE(dsi_session_open(kFp8.c_str(), &p, &s) == DSI_OK);
    c = make_ctx(s, 16);
    REQUIRE(dsi_context_eval(c, &id, 1, 0) == DSI_OK);
    CHECK(own.has(DSI_LOG_INFO, "loaded"));
    CHECK(!own.has(DSI_LOG_DEBUG, "eval"));
    CHECK(global.lines.size() == global_before);
    dsi_context_free(c);
    dsi_session_free(s);

    // Off again: nothing more arrives.
    REQUIRE(dsi_log_set(nullptr, nullptr, DSI_LOG_DEBUG) == DSI_OK);
    const size_t after = global.lines.size();
    CHECK(dsi_tokenizer_load("/nonexistent/tok.json", &tok) == DSI_ERR_IO);
    CHECK(global.lines.size() == after);
}
