// dsinfer generate: continue a prompt given as token ids or as text.
#include "commands.h"
#include "engine.h"

#include <algorithm>
#include <cstdint>
#include <memory>

namespace cli {
namespace {

struct Options {
    ModelOptions model;
    dsi_sampler_params sampling = dsi_sampler_default_params();
    std::string ids, prompt;
    int32_t max_tokens = 128;
    int32_t n_ctx = 0;
    bool stop_at_eos = false;
    bool raw_prompt = false;
    bool ignore_eos = false;
    bool no_echo = false;
};

FlagSet flags(Options &o) {
    FlagSet f("generate", "--model DIR (--ids IDS | --prompt TEXT | --file FILE) [options]",
              "Continues a prompt. With --ids, prints the generated token ids on one line of\n"
              "stdout. With a text prompt, prints the prompt, then streams the decoded text to\n"
              "stdout, stops at the model's end-of-generation token and ends with a newline.");
    add_model_flag(f, o.model);
    f.value("--ids", "IDS", "prompt token ids, separated by commas and/or spaces",
            [&o](const std::string &v) { o.ids = v; });
    f.value("--prompt", "TEXT", "prompt text; special tokens written in it are recognised",
            [&o](const std::string &v) { o.prompt = v; });
    f.alias("-p", "--prompt");
    f.value("--file", "FILE", "read the prompt text from FILE", [&o](const std::string &v) { o.prompt = read_file(v); });
    f.alias("-f", "--file");
    f.flag("--no-echo", "with a text prompt: do not print the prompt first", [&o] { o.no_echo = true; });
    f.flag("--raw-prompt", "with --prompt: do not prepend the model's BOS token", [&o] { o.raw_prompt = true; });
    f.value("--max-tokens", "N", "generate at most N tokens (default 128)", [&o](const std::string &v) {
        o.max_tokens = static_cast<int32_t>(parse_int("--max-tokens", v, 0, INT32_MAX));
    });
    f.alias("-n", "--max-tokens");
    f.value("--n-ctx", "N", "context size in tokens (default: prompt + max-tokens, at most the model's)",
            [&o](const std::string &v) { o.n_ctx = static_cast<int32_t>(parse_int("--n-ctx", v, 1, INT32_MAX)); });
    f.alias("-c", "--n-ctx");
    f.flag("--stop-at-eos", "with --ids: stop after the model's end-of-sequence token",
           [&o] { o.stop_at_eos = true; });
    f.flag("--ignore-eos", "never sample an end-of-generation token (a logit bias of -inf)",
           [&o] { o.ignore_eos = true; });
    add_sampling_flags(f, o.sampling);
    add_runtime_flags(f, o.model, true);
    return f;
}

// The prompt text as ids: special tokens parsed, and the BOS token first unless the
// text already starts with it or --raw-prompt asks for the text alone.
std::vector<int32_t> prompt_ids(const Model &model, const Options &o) {
    std::vector<int32_t> ids = tokenize(model.tokenizer(), o.prompt, true);
    const int32_t bos = dsi_session_bos_token(model.session());
    if (!o.raw_prompt && bos >= 0 && (ids.empty() || ids.front() != bos)) ids.insert(ids.begin(), bos);
    if (ids.empty()) throw Failure("--prompt: the text encodes to no tokens");
    return ids;
}

// Where generated tokens go: ids on one line, or text through the detokenizer.
class Output {
public:
    Output(const Model &model, bool text) : text_(text ? new TextStream(model.tokenizer()) : nullptr) {}

    void token(int32_t id) {
        if (text_) {
            write_out(stdout, text_->push(id));
        } else {
            write_out(stdout, (count_++ ? " " : "") + std::to_string(id));
        }
    }

    // The output ends with a newline, ids and text alike.
    void finish() {
        if (text_) write_out(stdout, text_->flush() + "\n");
        else write_out(stdout, "\n");
    }

private:
    std::unique_ptr<TextStream> text_;
    int count_ = 0;
};

}  // namespace

void help_generate(std::FILE *out) {
    Options o;
    flags(o).print_help(out);
}

int run_generate(const Args &args) {
    Options o;
    FlagSet f = flags(o);
    if (!f.parse(args)) return 0;
    f.require("--model");
    const bool text = f.seen("--prompt") || f.seen("--file");
    if (f.seen("--prompt") && f.seen("--file")) throw UsageError("give one of --prompt and --file");
    if (f.seen("--ids") == text) throw UsageError("give exactly one of --ids and --prompt (or --file)");
    if (o.raw_prompt && !text) throw UsageError("--raw-prompt needs --prompt or --file");
    if (o.no_echo && !text) throw UsageError("--no-echo needs --prompt or --file");
    if (o.ignore_eos && o.stop_at_eos) throw UsageError("--ignore-eos and --stop-at-eos exclude each other");
    check_sampling_flags(f);
    const std::vector<int32_t> given = text ? std::vector<int32_t>() : parse_ids("--ids", o.ids);

    Model model(o.model);
    const std::vector<int32_t> prompt = text ? prompt_ids(model, o) : given;
    // Room for the prompt and every token asked for, up to the model's maximum.
    const int64_t wanted = static_cast<int64_t>(prompt.size()) + o.max_tokens;
    const int64_t trained = dsi_session_n_ctx_train(model.session());
    model.create_context(o.n_ctx ? o.n_ctx : std::min(wanted, trained));
    Sampler sampler(o.sampling);
    if (o.ignore_eos) sampler.ban(eog_tokens(model.session()));
    Output output(model, text);
    const bool stop_at_eos = (text && !o.ignore_eos) || o.stop_at_eos;
    if (text && !o.no_echo) write_out(stdout, o.prompt);

    model.prefill(prompt, DSI_EVAL_LOGITS_LAST);
    for (int32_t i = 0; i < o.max_tokens; ++i) {
        if (dsi_context_length(model.context()) >= dsi_context_n_ctx(model.context())) {
            write_out(stderr, "dsinfer: the context is full (--n-ctx); the output is cut short\n");
            break;
        }
        const int32_t token = sampler.sample(model.context());
        const bool end = stop_at_eos && (dsi_session_token_attr(model.session(), token) & DSI_TOKEN_ATTR_EOG);
        if (!(end && text)) output.token(token);  // EOS has no text worth showing
        if (end) break;
        if (i + 1 < o.max_tokens) model.decode(token);  // the last token's logits are never used
    }
    output.finish();
    if (o.model.stats) model.stats.print();
    return 0;
}

}  // namespace cli
