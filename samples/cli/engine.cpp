#include "engine.h"

#include <cfloat>
#include <cmath>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <sys/resource.h>

namespace cli {
namespace {

dsi_backend parse_backend(const std::string &v) {
    if (v == "auto") return DSI_BACKEND_AUTO;
    if (v == "cpu") return DSI_BACKEND_CPU;
    if (v == "cuda") return DSI_BACKEND_CUDA;
    throw UsageError("--backend: expected auto, cpu or cuda, got '" + v + "'");
}

dsi_gpu_precision parse_precision(const std::string &v) {
    if (v == "fast") return DSI_GPU_PRECISION_FAST;
    if (v == "f32") return DSI_GPU_PRECISION_F32;
    throw UsageError("--gpu-precision: expected fast or f32, got '" + v + "'");
}

std::string number(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
}

float parse_float(const std::string &flag, const std::string &text, float min) {
    return static_cast<float>(parse_double(flag, text, min, FLT_MAX));
}

void log_to_stderr(dsi_log_level level, const char *message, void *) {
    static const char *const names[] = {"debug", "info", "warn", "error"};
    const char *name = level >= DSI_LOG_DEBUG && level <= DSI_LOG_ERROR ? names[level] : "log";
    std::fprintf(stderr, "dsinfer: [%s] %s\n", name, message);
}

// A bar on stderr, drawn only on a terminal: in a pipe or a log file the carriage
// returns would only add noise.
class ProgressBar {
public:
    ProgressBar() : enabled_(is_tty(stderr)) {}
    ~ProgressBar() {
        if (drawn_ >= 0 && drawn_ < 100) std::fputc('\n', stderr);  // end a bar cut short by an error
    }

    static int callback(float fraction, void *self) {
        static_cast<ProgressBar *>(self)->draw(fraction);
        return 1;
    }

private:
    void draw(float fraction) {
        const int percent = static_cast<int>(fraction * 100.0f + 0.5f);
        if (!enabled_ || percent == drawn_) return;
        const int width = 40, filled = percent * width / 100;
        std::fprintf(stderr, "\rloading [%.*s%*s] %3d%%", filled, "########################################",
                     width - filled, "", percent);
        if (percent >= 100) std::fputc('\n', stderr);
        std::fflush(stderr);
        drawn_ = percent;
    }

    bool enabled_;
    int drawn_ = -1;
};

}  // namespace

void add_model_flag(FlagSet &f, ModelOptions &o) {
    f.value("--model", "DIR", "checkpoint directory (config.json, safetensors, tokenizer.json)",
            [&o](const std::string &v) { o.model_dir = v; });
    f.alias("-m", "--model");
}

void add_runtime_flags(FlagSet &f, ModelOptions &o, bool with_tokenizer) {
    if (with_tokenizer)
        f.value("--tokenizer", "FILE", "tokenizer.json to use instead of the model directory's",
                [&o](const std::string &v) { o.tokenizer = v; });
    f.value("--backend", "NAME", "auto, cpu or cuda (default auto: CUDA when available)",
            [&o](const std::string &v) { o.backend = parse_backend(v); });
    f.value("--gpu-precision", "NAME", "CUDA arithmetic: fast (FP8 GEMMs, bf16 cache; default) or f32 (exact)",
            [&o](const std::string &v) { o.gpu_precision = parse_precision(v); });
    f.value("--threads", "N", "CPU threads, 0 = all hardware threads (default 0)", [&o](const std::string &v) {
        o.threads = static_cast<int32_t>(parse_int("--threads", v, 0, 65536));
    });
    f.alias("-t", "--threads");
    f.flag("--stats", "print load time, prefill and decode speed and peak memory to stderr",
           [&o] { o.stats = true; });
    f.flag("--verbose", "print the library's log messages to stderr", [&o] { o.verbose = true; });
}

void add_sampling_flags(FlagSet &f, dsi_sampler_params &p) {
    const dsi_sampler_params d = dsi_sampler_default_params();
    f.flag("--greedy", "always take the most likely token (temperature 0)", [&p] { p.temperature = 0.0f; });
    f.value("--temp", "T", "temperature, 0 = greedy (default " + number(d.temperature) + ")",
            [&p](const std::string &v) { p.temperature = parse_float("--temp", v, 0.0f); });
    f.value("--top-k", "K", "keep the K most likely tokens, 0 = off (default " + std::to_string(d.top_k) + ")",
            [&p](const std::string &v) { p.top_k = static_cast<int32_t>(parse_int("--top-k", v, 0, INT32_MAX)); });
    f.value("--top-p", "P", "keep the most likely tokens up to probability P, 1 = off (default " + number(d.top_p) + ")",
            [&p](const std::string &v) { p.top_p = static_cast<float>(parse_double("--top-p", v, 0.0, 1.0)); });
    f.value("--min-p", "M",
            "drop tokens less than M times as likely as the best, 0 = off (default " + number(d.min_p) + ")",
            [&p](const std::string &v) { p.min_p = static_cast<float>(parse_double("--min-p", v, 0.0, 1.0)); });
    f.value("--seed", "S", "random seed, an unsigned 64-bit integer (default " + std::to_string(d.seed) + ")",
            [&p](const std::string &v) { p.seed = parse_u64("--seed", v); });
    f.alias("-s", "--seed");
    f.value("--repeat-penalty", "R",
            "divide positive (multiply negative) logits of recent tokens by R > 0, 1 = off (default " +
                number(d.repeat_penalty) + ")",
            [&p](const std::string &v) {
                p.repeat_penalty = parse_float("--repeat-penalty", v, 0.0f);
                if (p.repeat_penalty <= 0.0f) throw UsageError("--repeat-penalty: expected a number > 0, got '" + v + "'");
            });
    f.value("--frequency-penalty", "F",
            "subtract F times its count from each recent token's logit (default " + number(d.frequency_penalty) + ")",
            [&p](const std::string &v) { p.frequency_penalty = parse_float("--frequency-penalty", v, -FLT_MAX); });
    f.value("--presence-penalty", "P",
            "subtract P once from each recent token's logit (default " + number(d.presence_penalty) + ")",
            [&p](const std::string &v) { p.presence_penalty = parse_float("--presence-penalty", v, -FLT_MAX); });
    f.value("--penalty-last-n", "N",
            "how many recent tokens the penalties see, -1 = all (default " + std::to_string(d.penalty_last_n) + ")",
            [&p](const std::string &v) {
                p.penalty_last_n = static_cast<int32_t>(parse_int("--penalty-last-n", v, -1, INT32_MAX));
            });
}

void check_sampling_flags(const FlagSet &f) {
    if (f.seen("--greedy") && f.seen("--temp")) throw UsageError("--greedy and --temp exclude each other");
}

double now_seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void Stats::print() const {
    const auto rate = [](int64_t n, double s) { return s > 0 ? static_cast<double>(n) / s : 0.0; };
    std::fprintf(stderr, "dsinfer: load %.3f s\n", load_s);
    std::fprintf(stderr, "dsinfer: prefill %lld tokens in %.3f s, %.2f tokens/s\n",
                 static_cast<long long>(prefill_tokens), prefill_s, rate(prefill_tokens, prefill_s));
    std::fprintf(stderr, "dsinfer: decode %lld tokens in %.3f s, %.2f tokens/s\n",
                 static_cast<long long>(decode_tokens), decode_s, rate(decode_tokens, decode_s));
    struct rusage usage {};
    getrusage(RUSAGE_SELF, &usage);
    std::fprintf(stderr, "dsinfer: peak RSS %.1f MiB\n", static_cast<double>(usage.ru_maxrss) / 1024.0);  // KiB on Linux
}

Model::Model(const ModelOptions &o) {
    dsi_session_params p = dsi_session_default_params();
    p.backend = o.backend;
    p.gpu_precision = o.gpu_precision;
    p.n_threads = o.threads;
    p.tokenizer_path = o.tokenizer.empty() ? nullptr : o.tokenizer.c_str();
    ProgressBar bar;
    p.progress = &ProgressBar::callback;
    p.progress_user_data = &bar;
    if (o.verbose) {
        p.log = log_to_stderr;
        p.log_level = DSI_LOG_DEBUG;
    }
    const double start = now_seconds();
    check(dsi_session_open(o.model_dir.c_str(), &p, &session_));
    stats.load_s = now_seconds() - start;
}

Model::~Model() {
    dsi_context_free(ctx_);
    dsi_session_free(session_);
}

// Context creation allocates the caches, so its time counts as loading.
void Model::create_context(int64_t n_ctx) {
    dsi_context_params p = dsi_context_default_params();
    p.n_ctx = static_cast<int32_t>(n_ctx > INT32_MAX ? INT32_MAX : n_ctx);
    const double start = now_seconds();
    check(dsi_context_create(session_, &p, &ctx_));
    stats.load_s += now_seconds() - start;
}

void Model::eval(const int32_t *ids, size_t n, unsigned flags, int64_t &tokens, double &seconds) {
    const double start = now_seconds();
    check(dsi_context_eval(ctx_, ids, n, flags));
    seconds += now_seconds() - start;
    tokens += static_cast<int64_t>(n);
}

void Model::prefill(const std::vector<int32_t> &ids, unsigned flags) {
    eval(ids.data(), ids.size(), flags, stats.prefill_tokens, stats.prefill_s);
}

void Model::decode(int32_t id) { eval(&id, 1, DSI_EVAL_LOGITS_LAST, stats.decode_tokens, stats.decode_s); }

const dsi_tokenizer *Model::tokenizer() const {
    const dsi_tokenizer *tok = dsi_session_tokenizer(session_);
    if (!tok) throw Failure("the model has no tokenizer.json; give one with --tokenizer FILE");
    return tok;
}

Sampler::Sampler(const dsi_sampler_params &p) { check(dsi_sampler_create(&p, &sampler_)); }
Sampler::~Sampler() { dsi_sampler_free(sampler_); }

int32_t Sampler::sample(dsi_context *ctx) {
    int32_t token = -1;
    check(dsi_sampler_sample(sampler_, ctx, &token));
    return token;
}

void Sampler::ban(const std::vector<int32_t> &ids) {
    std::vector<dsi_logit_bias> bias;
    for (int32_t id : ids) bias.push_back({id, -INFINITY});
    check(dsi_sampler_set_logit_bias(sampler_, bias.data(), bias.size()));
}

std::vector<int32_t> eog_tokens(const dsi_session *session) {
    std::vector<int32_t> ids(static_cast<size_t>(dsi_session_eog_tokens(session, nullptr, 0)));
    dsi_session_eog_tokens(session, ids.data(), ids.size());
    return ids;
}

TextStream::TextStream(const dsi_tokenizer *tok) { check(dsi_detokenizer_create(tok, 0, &detok_)); }
TextStream::~TextStream() { dsi_detokenizer_free(detok_); }

std::string TextStream::push(int32_t id) {
    const char *text = nullptr;
    size_t len = 0;
    check(dsi_detokenizer_push(detok_, id, &text, &len));
    return std::string(text, len);
}

std::string TextStream::flush() {
    const char *text = nullptr;
    size_t len = 0;
    check(dsi_detokenizer_flush(detok_, &text, &len));
    return std::string(text, len);
}

std::vector<int32_t> tokenize(const dsi_tokenizer *tok, const std::string &text, bool parse_special) {
    size_t n = 0;
    const unsigned flags = parse_special ? DSI_TOKENIZE_PARSE_SPECIAL : 0u;
    const dsi_status query = dsi_tokenize(tok, text.data(), text.size(), flags, nullptr, 0, &n);
    if (query != DSI_ERR_BUFFER_TOO_SMALL) check(query);
    std::vector<int32_t> ids(n);
    if (n > 0) check(dsi_tokenize(tok, text.data(), text.size(), flags, ids.data(), ids.size(), &n));
    return ids;
}

std::string render_chat(const std::string &conversation_json, unsigned flags) {
    char *prompt = nullptr;
    size_t len = 0;
    check(dsi_chat_render(conversation_json.data(), conversation_json.size(), flags, &prompt, &len));
    std::string text(prompt, len);
    dsi_free(prompt);
    return text;
}

void write_out(std::FILE *out, const std::string &data) {
    if (std::fwrite(data.data(), 1, data.size(), out) != data.size() || std::fflush(out) != 0)
        throw Failure(out == stdout ? "cannot write to stdout" : "cannot write to stderr");
}

}  // namespace cli
