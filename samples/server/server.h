// `dsinfer serve`: an OpenAI-compatible HTTP server (cpp-httplib) on one session.
#pragma once

#include "dsinfer.h"

#include <cstddef>
#include <cstdint>
#include <string>

namespace server {

struct ServerOptions {
    std::string host = "127.0.0.1";
    int port = 8080;                    // 0: any free port (printed when listening)
    int parallel = 4;                   // generations advanced together
    int max_queue = 64;                 // generations waiting for a slot; more get 429
    int32_t n_ctx = 0;                  // tokens per generation; 0: min(model maximum, 8192)
    std::string api_key;                // non-empty: /v1/* and /metrics need "Bearer KEY"
    std::string model_id;               // the name /v1/models lists
    size_t max_body_bytes = 4u << 20;   // larger request bodies get 413
    int idle_timeout_s = 30;            // a connection silent this long is closed
    bool test_hooks = false;            // accept the test_* request fields (tests only)
};

// Serves until SIGINT or SIGTERM; returns the exit status. `session` stays owned by the
// caller and must have a tokenizer.
int serve(dsi_session *session, const ServerOptions &options);

}  // namespace server
