// dsinfer bench: prefill and decode speed of a model, the engine benchmark of
// docs/PERF.md as a subcommand. The speeds come from the library's own counters
// (dsi_context_perf_get).
#include "commands.h"
#include "engine.h"

#include <cstdint>
#include <sys/resource.h>

namespace cli {
namespace {

struct Options {
    ModelOptions model;
    int32_t prompt_tokens = 200;
    int32_t decode_tokens = 64;
};

FlagSet flags(Options &o) {
    FlagSet f("bench", "--model DIR [options]",
              "Evaluates a fixed pseudo-random prompt, then decodes greedily token by token, and\n"
              "prints one Markdown table row: model | threads | prompt tokens | prefill tokens/s |\n"
              "decode tokens | decode tokens/s | load s | peak RSS MiB.");
    add_model_flag(f, o.model);
    f.value("--prompt-tokens", "N", "prompt length (default 200)", [&o](const std::string &v) {
        o.prompt_tokens = static_cast<int32_t>(parse_int("--prompt-tokens", v, 1, INT32_MAX / 2));
    });
    f.alias("-p", "--prompt-tokens");
    f.value("--decode-tokens", "N", "tokens to decode (default 64)", [&o](const std::string &v) {
        o.decode_tokens = static_cast<int32_t>(parse_int("--decode-tokens", v, 0, INT32_MAX / 2));
    });
    f.alias("-n", "--decode-tokens");
    add_runtime_flags(f, o.model, false);
    return f;
}

}  // namespace

void help_bench(std::FILE *out) {
    Options o;
    flags(o).print_help(out);
}

int run_bench(const Args &args) {
    Options o;
    FlagSet f = flags(o);
    if (!f.parse(args)) return 0;
    f.require("--model");
    Model model(o.model);
    const int64_t trained = dsi_session_n_ctx_train(model.session());
    const int64_t needed = static_cast<int64_t>(o.prompt_tokens) + o.decode_tokens;
    if (needed > trained)
        throw UsageError("--prompt-tokens + --decode-tokens is " + std::to_string(needed) + ", more than the model's " +
                         std::to_string(trained) + " positions");
    model.create_context(needed);
    const int32_t vocab = dsi_session_n_vocab(model.session());
    std::vector<int32_t> ids(static_cast<size_t>(o.prompt_tokens));
    uint32_t x = 12345u;  // the speed does not depend on which ids
    for (int32_t &id : ids) {
        x = x * 1664525u + 1013904223u;
        id = static_cast<int32_t>((x >> 8) % static_cast<uint32_t>(vocab));
    }
    dsi_sampler_params sp = dsi_sampler_default_params();
    sp.temperature = 0.0f;
    Sampler sampler(sp);
    model.prefill(ids, DSI_EVAL_LOGITS_LAST);
    for (int32_t i = 0; i < o.decode_tokens; ++i) model.decode(sampler.sample(model.context()));

    const dsi_context_perf perf = dsi_context_perf_get(model.context());
    const auto per_second = [](int64_t n, double ms) { return ms > 0 ? 1000.0 * static_cast<double>(n) / ms : 0.0; };
    struct rusage usage {};
    getrusage(RUSAGE_SELF, &usage);
    std::printf("| %s | %d | %lld | %.1f | %lld | %.1f | %.2f | %.1f |\n", o.model.model_dir.c_str(), o.model.threads,
                static_cast<long long>(perf.prompt_tokens), per_second(perf.prompt_tokens, perf.prompt_ms),
                static_cast<long long>(perf.decode_tokens), per_second(perf.decode_tokens, perf.decode_ms),
                model.stats.load_s, static_cast<double>(usage.ru_maxrss) / 1024.0);
    return 0;
}

}  // namespace cli
