// Owners of the library's handles and the options shared by the model subcommands.
#pragma once

#include "args.h"
#include "dsinfer.h"

#include <cstdint>
#include <string>
#include <vector>

namespace cli {

struct ModelOptions {
    std::string model_dir;
    std::string tokenizer;  // empty: the model directory's tokenizer.json
    dsi_backend backend = DSI_BACKEND_AUTO;
    dsi_gpu_precision gpu_precision = DSI_GPU_PRECISION_FAST;
    int32_t threads = 0;
    bool verbose = false;
    bool stats = false;
};

// --model, to come first in the help.
void add_model_flag(FlagSet &f, ModelOptions &o);
// --tokenizer (if with_tokenizer), --backend, --threads, --stats, --verbose.
void add_runtime_flags(FlagSet &f, ModelOptions &o, bool with_tokenizer);

// --greedy, --temp, --top-k, --top-p, --min-p, --seed and the penalty flags.
void add_sampling_flags(FlagSet &f, dsi_sampler_params &p);
// The checks that need the whole command line (--greedy excludes --temp).
void check_sampling_flags(const FlagSet &f);

// Wall-clock seconds since an arbitrary fixed point.
double now_seconds();

struct Stats {
    double load_s = 0;
    int64_t prefill_tokens = 0;
    double prefill_s = 0;
    int64_t decode_tokens = 0;
    double decode_s = 0;

    // Load time, prefill and decode speed and peak RSS, to stderr.
    void print() const;
};

// A session and (once created) one context on it.
class Model {
public:
    // Opens the session, drawing a progress bar when stderr is a terminal.
    explicit Model(const ModelOptions &o);
    ~Model();
    Model(const Model &) = delete;
    Model &operator=(const Model &) = delete;

    void create_context(int64_t n_ctx);

    // Evaluates a prompt (counted as prefill) or one generated token (decode).
    void prefill(const std::vector<int32_t> &ids, unsigned flags);
    void decode(int32_t id);

    // The session's tokenizer; Failure when the model has none.
    const dsi_tokenizer *tokenizer() const;

    dsi_session *session() const { return session_; }
    dsi_context *context() const { return ctx_; }
    Stats stats;

private:
    void eval(const int32_t *ids, size_t n, unsigned flags, int64_t &tokens, double &seconds);

    dsi_session *session_ = nullptr;
    dsi_context *ctx_ = nullptr;
};

class Sampler {
public:
    explicit Sampler(const dsi_sampler_params &p);
    ~Sampler();
    Sampler(const Sampler &) = delete;
    Sampler &operator=(const Sampler &) = delete;

    int32_t sample(dsi_context *ctx);
    // Sets a logit bias of -inf on `ids`: they are never sampled.
    void ban(const std::vector<int32_t> &ids);

private:
    dsi_sampler *sampler_ = nullptr;
};

// Streaming ids -> UTF-8 through dsi_detokenizer.
class TextStream {
public:
    explicit TextStream(const dsi_tokenizer *tok);
    ~TextStream();
    TextStream(const TextStream &) = delete;
    TextStream &operator=(const TextStream &) = delete;

    std::string push(int32_t id);
    std::string flush();

private:
    dsi_detokenizer *detok_ = nullptr;
};

// The session's end-of-generation ids (dsi_session_eog_tokens).
std::vector<int32_t> eog_tokens(const dsi_session *session);

std::vector<int32_t> tokenize(const dsi_tokenizer *tok, const std::string &text, bool parse_special);

// dsi_chat_render() of a conversation given as JSON text.
std::string render_chat(const std::string &conversation_json, unsigned flags);

// Writes all of `data` to `out` and flushes, so that streamed text appears at once.
void write_out(std::FILE *out, const std::string &data);

}  // namespace cli
