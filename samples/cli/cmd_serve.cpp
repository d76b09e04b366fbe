// dsinfer serve: an OpenAI-compatible HTTP server (samples/server/).
#include "commands.h"
#include "engine.h"

#include "../server/server.h"

#include <algorithm>
#include <cstdlib>

namespace cli {
namespace {

constexpr int64_t kDefaultContext = 8192;

struct Options {
    ModelOptions model;
    server::ServerOptions server;
};

FlagSet flags(Options &o) {
    FlagSet f("serve", "--model DIR [options]",
              "Serves the model over HTTP with the OpenAI API: POST /v1/chat/completions,\n"
              "POST /v1/completions, GET /v1/models, GET /health, GET /metrics (Prometheus),\n"
              "and a chat page at /. Requests are batched together (continuous batching) and\n"
              "share cached prompt prefixes. Stops on SIGINT or SIGTERM. docs/SERVER.md has\n"
              "the details.");
    add_model_flag(f, o.model);
    f.value("--host", "ADDR", "address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)",
            [&o](const std::string &v) { o.server.host = v; });
    f.value("--port", "N", "TCP port (default 8080; 0 = any free port, printed when listening)",
            [&o](const std::string &v) { o.server.port = static_cast<int>(parse_int("--port", v, 0, 65535)); });
    f.value("--parallel", "N", "generations advanced together in one batch (default 4)", [&o](const std::string &v) {
        o.server.parallel = static_cast<int>(parse_int("--parallel", v, 1, 1024));
    });
    f.value("--queue", "N", "requests that may wait for a free slot; more are answered 429 (default 64)",
            [&o](const std::string &v) { o.server.max_queue = static_cast<int>(parse_int("--queue", v, 0, 65536)); });
    f.value("--ctx", "N", "tokens per generation, prompt and reply (default: 8192, at most the model's)",
            [&o](const std::string &v) { o.server.n_ctx = static_cast<int32_t>(parse_int("--ctx", v, 1, INT32_MAX)); });
    f.value("--api-key", "KEY",
            "require 'Authorization: Bearer KEY' on /v1/* and /metrics (default: $DSINFER_API_KEY, or none)",
            [&o](const std::string &v) { o.server.api_key = v; });
    f.value("--model-name", "NAME", "the model id /v1/models lists (default: the model directory's name)",
            [&o](const std::string &v) { o.server.model_id = v; });
    f.value("--max-body", "BYTES", "largest request body; larger ones get 413 (default 4194304)",
            [&o](const std::string &v) {
                o.server.max_body_bytes = static_cast<size_t>(parse_int("--max-body", v, 1, INT64_MAX));
            });
    f.value("--timeout", "SECONDS", "close a connection idle (or stalled) this long (default 30)",
            [&o](const std::string &v) {
                o.server.idle_timeout_s = static_cast<int>(parse_int("--timeout", v, 1, 86400));
            });
    f.flag("--enable-test-hooks", "accept the test-only request fields test_forced_reply and test_delay_ms",
           [&o] { o.server.test_hooks = true; });
    add_runtime_flags(f, o.model, true);
    return f;
}

// The last path component of a model directory: "models/demo/" -> "demo".
std::string directory_name(std::string dir) {
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    const size_t slash = dir.find_last_of('/');
    return slash == std::string::npos ? dir : dir.substr(slash + 1);
}

}  // namespace

void help_serve(std::FILE *out) {
    Options o;
    flags(o).print_help(out);
}

int run_serve(const Args &args) {
    Options o;
    FlagSet f = flags(o);
    if (!f.parse(args)) return 0;
    f.require("--model");
    if (!f.seen("--api-key")) {
        if (const char *key = std::getenv("DSINFER_API_KEY")) o.server.api_key = key;
    }
    if (o.server.model_id.empty()) o.server.model_id = directory_name(o.model.model_dir);

    Model model(o.model);
    model.tokenizer();  // fail now when the model has none
    const int64_t trained = dsi_session_n_ctx_train(model.session());
    if (o.server.n_ctx > trained)
        throw UsageError("--ctx: the model holds at most " + std::to_string(trained) + " tokens");
    if (o.server.n_ctx == 0) o.server.n_ctx = static_cast<int32_t>(std::min(trained, kDefaultContext));
    return server::serve(model.session(), o.server);
}

}  // namespace cli
