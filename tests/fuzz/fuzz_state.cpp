// Saved state (lib/state): dsi_context_load_state on arbitrary bytes, on a session of
// the demo model. A refusal must be a specific status with a message and leave the
// context as it was; a state that loads must then evaluate a token (or report its
// context full). Seeds: valid states of 0 and 8 tokens (tests/fuzz/corpus/fuzz_state).
#include "dsinfer.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

struct Fixture {
    dsi_session *session = nullptr;
    Fixture() {
        dsi_session_params p = dsi_session_default_params();
        p.backend = DSI_BACKEND_CPU;
        p.n_threads = 1;
        p.cache_budget = size_t(64) << 20;
        const std::string dir = std::string(DSI_SOURCE_DIR) + "/models/demo";
        if (dsi_session_open(dir.c_str(), &p, &session) != DSI_OK) {
            std::fprintf(stderr, "fuzz_state: cannot open %s: %s\n", dir.c_str(), dsi_last_error());
            std::abort();
        }
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static Fixture f;
    dsi_context *ctx = nullptr;
    if (dsi_context_create(f.session, nullptr, &ctx) != DSI_OK) std::abort();
    const dsi_status st = dsi_context_load_state(ctx, data, size, nullptr);
    if (st == DSI_ERR_INTERNAL || (st != DSI_OK && (dsi_context_length(ctx) != 0 || !*dsi_last_error()))) {
        std::fprintf(stderr, "bad refusal %d: %s\n", st, dsi_last_error());
        std::abort();
    }
    if (st == DSI_OK) {
        const int32_t token = 5;
        const dsi_status e = dsi_context_eval(ctx, &token, 1, 0);
        if (e != DSI_OK && e != DSI_ERR_CONTEXT_FULL) {
            std::fprintf(stderr, "a loaded state does not evaluate (%d): %s\n", e, dsi_last_error());
            std::abort();
        }
    }
    dsi_context_free(ctx);
    return 0;
}
