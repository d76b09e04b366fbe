// labels: cpu
//
// The shipped demo model (models/demo, trained by scripts/train_demo_model.py) must
// reproduce the greedy continuation that Hugging Face transformers computed from the
// same dequantised FP8 weights (models/demo/reference.json). The prompt is longer than
// index_topk, so the lightning indexer's top-k selection, YaRN RoPE, MoE routing and
// FP8 block dequantisation all have to be right. Public C API only.

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "dsinfer.h"

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

const std::string kDemoDir = std::string(DSI_SOURCE_DIR) + "/models/demo";

nlohmann::json load_reference() {
    const std::string path = kDemoDir + "/reference.json";
    std::ifstream in(path, std::ios::binary);
    REQUIRE_MESSAGE(in.good(), "cannot open " << path);
    std::stringstream ss;
    ss << in.rdbuf();
    return nlohmann::json::parse(ss.str());
}

// Greedy choice: the largest logit, the lowest id on ties.
int32_t argmax_lowest_id(const float *logits, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; ++i)
        if (logits[i] > logits[best]) best = i;
    return best;
}

std::string ids_to_string(const std::vector<int32_t> &ids) {
    std::string s = "[";
    for (size_t i = 0; i < ids.size(); ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
    return s + "]";
}

struct Session {
    dsi_session *s = nullptr;
    ~Session() { dsi_session_free(s); }
};

struct Context {
    dsi_context *c = nullptr;
    ~Context() { dsi_context_free(c); }
};

void open_demo(Session &session) {
    dsi_session_params sp = dsi_session_default_params();
    sp.backend = DSI_BACKEND_CPU;
    const dsi_status st = dsi_session_open(kDemoDir.c_str(), &sp, &session.s);
    REQUIRE_MESSAGE(st == DSI_OK, dsi_status_name(st) << ": " << dsi_last_error());
    REQUIRE(session.s != nullptr);
}

}  // namespace

TEST_CASE("demo model: greedy continuation matches the transformers reference") {
    const nlohmann::json ref = load_reference();
    const std::vector<int32_t> prompt = ref.at("prompt_ids").get<std::vector<int32_t>>();
    const std::vector<int32_t> want = ref.at("greedy_ids").get<std::vector<int32_t>>();
    REQUIRE(prompt.size() > 64);  // longer than index_topk: sparse attention is exercised
    REQUIRE(!want.empty());

    Session session;
    open_demo(session);
    CHECK(dsi_session_is_sparse(session.s) == 1);
    CHECK(dsi_session_n_layers(session.s) == 4);
    CHECK(dsi_session_bos_token(session.s) == 0);
    CHECK(dsi_session_eos_token(session.s) == 1);
    const int32_t n_vocab = dsi_session_n_vocab(session.s);
    REQUIRE(n_vocab == 4096);

    Context ctx;
    dsi_context_params cp = dsi_context_default_params();
    cp.n_ctx = static_cast<int32_t>(prompt.size() + want.size());
    dsi_status st = dsi_context_create(session.s, &cp, &ctx.c);
    REQUIRE_MESSAGE(st == DSI_OK, dsi_status_name(st) << ": " << dsi_last_error());

    st = dsi_context_eval(ctx.c, prompt.data(), prompt.size(), DSI_EVAL_LOGITS_LAST);
    REQUIRE_MESSAGE(st == DSI_OK, dsi_status_name(st) << ": " << dsi_last_error());

    std::vector<int32_t> got;
    for (size_t step = 0; step < want.size(); ++step) {
        const float *logits = dsi_context_logits(ctx.c, -1);
        REQUIRE_MESSAGE(logits != nullptr, dsi_last_error());
        const int32_t next = argmax_lowest_id(logits, n_vocab);
        got.push_back(next);
        if (step + 1 == want.size()) break;
        st = dsi_context_eval(ctx.c, &next, 1, DSI_EVAL_LOGITS_LAST);
        REQUIRE_MESSAGE(st == DSI_OK, "step " << step << ": " << dsi_status_name(st) << ": "
                                              << dsi_last_error());
    }
    CHECK(dsi_context_length(ctx.c) == static_cast<int32_t>(prompt.size() + want.size() - 1));

    size_t first_diff = 0;
    while (first_diff < want.size() && got[first_diff] == want[first_diff]) ++first_diff;
    INFO("first mismatch at step " << first_diff << "\n  got:  " << ids_to_string(got)
                                   << "\n  want: " << ids_to_string(want));
    CHECK(got == want);
}

TEST_CASE("demo model: its tokenizer.json encodes and decodes like Hugging Face tokenizers") {
    const nlohmann::json ref = load_reference();
    const nlohmann::json &fib = ref.at("fibonacci");
    const std::string prompt = fib.at("prompt_text").get<std::string>();
    const std::vector<int32_t> want_ids = fib.at("prompt_ids").get<std::vector<int32_t>>();

    Session session;
    open_demo(session);
    const dsi_tokenizer *tok = dsi_session_tokenizer(session.s);
    REQUIRE_MESSAGE(tok != nullptr, "models/demo/tokenizer.json was not loaded");
    CHECK(dsi_tokenizer_n_vocab(tok) == 4096);

    std::vector<int32_t> ids(prompt.size() + 16);
    size_t n_ids = 0;
    dsi_status st = dsi_tokenize(tok, prompt.data(), prompt.size(), 0, ids.data(), ids.size(), &n_ids);
    REQUIRE_MESSAGE(st == DSI_OK, dsi_status_name(st) << ": " << dsi_last_error());
    ids.resize(n_ids);
    CHECK(ids == want_ids);

    // The docs' continuation text decodes from its ids (no special tokens in it).
    const std::vector<int32_t> gen = fib.at("greedy_ids").get<std::vector<int32_t>>();
    bool has_special = false;
    for (int32_t id : gen) has_special = has_special || id == 0 || id == 1;
    if (!has_special) {
        std::vector<char> text(gen.size() * 32 + 64);
        size_t len = 0;
        st = dsi_detokenize(tok, gen.data(), gen.size(), 0, text.data(), text.size(), &len);
        REQUIRE_MESSAGE(st == DSI_OK, dsi_status_name(st) << ": " << dsi_last_error());
        CHECK(std::string(text.data(), len) == fib.at("text").get<std::string>());
    }

    // And the reference prompt's text decodes from the reference prompt ids.
    const std::vector<int32_t> pids = ref.at("prompt_ids").get<std::vector<int32_t>>();
    std::vector<char> text(pids.size() * 32 + 64);
    size_t len = 0;
    st = dsi_detokenize(tok, pids.data(), pids.size(), 0, text.data(), text.size(), &len);
    REQUIRE_MESSAGE(st == DSI_OK, dsi_status_name(st) << ": " << dsi_last_error());
    CHECK(std::string(text.data(), len) == ref.at("prompt_text").get<std::string>());
}
