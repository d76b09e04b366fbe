// Opening the handles most API tests start from, with the library's message on failure.
#pragma once

#include "dsinfer.h"

#include <doctest/doctest.h>

#include <string>

namespace dsi_test {

// A CPU session on `dir` with `n_threads` threads.
inline dsi_session *open_cpu(const std::string &dir, int32_t n_threads) {
    dsi_session_params p = dsi_session_default_params();
    p.backend = DSI_BACKEND_CPU;
    p.n_threads = n_threads;
    dsi_session *s = nullptr;
    REQUIRE_MESSAGE(dsi_session_open(dir.c_str(), &p, &s) == DSI_OK, dsi_last_error());
    return s;
}

// A context of `s` limited to n_ctx positions (0 = the default).
inline dsi_context *make_ctx(dsi_session *s, int32_t n_ctx) {
    dsi_context_params p = dsi_context_default_params();
    p.n_ctx = n_ctx;
    dsi_context *c = nullptr;
    REQUIRE_MESSAGE(dsi_context_create(s, &p, &c) == DSI_OK, dsi_last_error());
    return c;
}

}  // namespace dsi_test
