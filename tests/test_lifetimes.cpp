// labels: cpu
// Handles freed in every order, as a garbage-collected binding may free them: a session
// with a live context and a detokenizer of its tokenizer, a loaded tokenizer with a live
// detokenizer. After each free the handles still alive keep working. Run it under
// AddressSanitizer (-DDSINFER_SANITIZE=ON) to see that nothing is used after it is freed
// and nothing leaks.
#include <doctest/doctest.h>

#include "dsinfer.h"

#include <algorithm>
#include <array>
#include <string>

namespace {

const std::string kDemo = std::string(DSI_SOURCE_DIR) + "/models/demo";

// The sampler refers to nothing, so it is not among the permuted handles; it stays alive
// and samples from the context while that lives.
enum Handle { Session, Context, SessionDetok, Tokenizer, TokenizerDetok, Sampler };

struct Handles {
    dsi_session *session = nullptr;
    dsi_context *context = nullptr;
    dsi_detokenizer *session_detok = nullptr;
    dsi_tokenizer *tokenizer = nullptr;
    dsi_detokenizer *tokenizer_detok = nullptr;
    dsi_sampler *sampler = nullptr;
    int32_t id = 0;  // a token the tokenizers know

    void open() {
        dsi_session_params p = dsi_session_default_params();
        p.backend = DSI_BACKEND_CPU;
        p.n_threads = 1;
        REQUIRE(dsi_session_open(kDemo.c_str(), &p, &session) == DSI_OK);
        dsi_context_params cp = dsi_context_default_params();
        cp.n_ctx = 8;
        REQUIRE(dsi_context_create(session, &cp, &context) == DSI_OK);
        REQUIRE(dsi_detokenizer_create(dsi_session_tokenizer(session), 0, &session_detok) == DSI_OK);
        REQUIRE(dsi_tokenizer_load((kDemo + "/tokenizer.json").c_str(), &tokenizer) == DSI_OK);
        REQUIRE(dsi_detokenizer_create(tokenizer, 0, &tokenizer_detok) == DSI_OK);
        REQUIRE(dsi_sampler_create(nullptr, &sampler) == DSI_OK);
        id = dsi_tokenizer_token_id(tokenizer, "a");
        REQUIRE(id >= 0);
    }

    void free(Handle h) {
        switch (h) {
        case Session: dsi_session_free(session), session = nullptr; break;
        case Context: dsi_context_free(context), context = nullptr; break;
        case SessionDetok: dsi_detokenizer_free(session_detok), session_detok = nullptr; break;
        case Tokenizer: dsi_tokenizer_free(tokenizer), tokenizer = nullptr; break;
        case TokenizerDetok: dsi_detokenizer_free(tokenizer_detok), tokenizer_detok = nullptr; break;
        case Sampler: dsi_sampler_free(sampler), sampler = nullptr; break;
        }
    }

    // Every live handle still does its job.
    void use() {
        if (context) {
            const int32_t before = dsi_context_length(context);
            if (before == 8) REQUIRE(dsi_context_clear(context) == DSI_OK);
            REQUIRE(dsi_context_eval(context, &id, 1, 0) == DSI_OK);
            if (sampler) {
                int32_t next = -1;
                REQUIRE(dsi_sampler_sample(sampler, context, &next) == DSI_OK);
            }
        }
        for (dsi_detokenizer *d : {session_detok, tokenizer_detok}) {
            if (!d) continue;
            const char *text = nullptr;
            size_t len = 0;
            REQUIRE(dsi_detokenizer_push(d, id, &text, &len) == DSI_OK);
            CHECK(std::string(text, len) == "a");
        }
        if (session) REQUIRE(dsi_session_tokenizer(session) != nullptr);
        if (tokenizer) {
            size_t n = 0;
            int32_t ids[4];
            REQUIRE(dsi_tokenize(tokenizer, "a", 1, 0, ids, 4, &n) == DSI_OK);
        }
    }
};

}  // namespace

TEST_CASE("handles may be freed in every order, the rest keep working") {
    std::array<Handle, 5> order = {Session, Context, SessionDetok, Tokenizer, TokenizerDetok};
    int orders = 0;
    do {
        Handles h;
        h.open();
        for (Handle victim : order) {
            h.free(victim);
            h.use();
        }
        h.free(Sampler);
        ++orders;
    } while (std::next_permutation(order.begin(), order.end()));
    CHECK(orders == 120);
}

TEST_CASE("a context keeps working after its session handle is freed") {
    Handles h;
    h.open();
    dsi_session_free(h.session);  // the context holds the session now
    h.session = nullptr;
    for (int i = 0; i < 3; ++i) h.use();
    CHECK(dsi_session_n_vocab(nullptr) == 0);
    h.free(Context);
    h.free(SessionDetok);
    h.free(Tokenizer);
    h.free(TokenizerDetok);
    h.free(Sampler);
}
