// dsinfer tokenize and dsinfer render-chat: the text side, without a model.
#include "commands.h"
#include "engine.h"

namespace cli {
namespace {

struct TokenizeOptions {
    std::string tokenizer, text, text_file;
    bool no_special = false;
};

FlagSet tokenize_flags(TokenizeOptions &o) {
    FlagSet f("tokenize", "--tokenizer FILE (--text TEXT | --text-file FILE) [--no-special]",
              "Prints the token ids of a text, separated by spaces, on one line.");
    f.value("--tokenizer", "FILE", "the tokenizer.json to use", [&o](const std::string &v) { o.tokenizer = v; });
    f.value("--text", "TEXT", "the text to encode", [&o](const std::string &v) { o.text = v; });
    f.value("--text-file", "FILE", "encode the contents of FILE", [&o](const std::string &v) { o.text_file = v; });
    f.flag("--no-special", "encode special tokens written in the text as plain text",
           [&o] { o.no_special = true; });
    return f;
}

struct RenderOptions {
    std::string input;
    bool thinking = false;
};

FlagSet render_flags(RenderOptions &o) {
    FlagSet f("render-chat", "--input FILE.json [--thinking]",
              "Writes the DeepSeek-V3.2 prompt of a conversation to stdout, byte for byte\n"
              "(no newline is added). The input is {\"tools\": [...], \"messages\": [...]}.");
    f.value("--input", "FILE", "the conversation as JSON", [&o](const std::string &v) { o.input = v; });
    f.flag("--thinking", "thinking mode: the prompt opens <think> for the reply", [&o] { o.thinking = true; });
    return f;
}

class Tokenizer {
public:
    explicit Tokenizer(const std::string &path) { check(dsi_tokenizer_load(path.c_str(), &tok_)); }
    ~Tokenizer() { dsi_tokenizer_free(tok_); }
    Tokenizer(const Tokenizer &) = delete;
    Tokenizer &operator=(const Tokenizer &) = delete;
    const dsi_tokenizer *get() const { return tok_; }

private:
    dsi_tokenizer *tok_ = nullptr;
};

}  // namespace

void help_tokenize(std::FILE *out) {
    TokenizeOptions o;
    tokenize_flags(o).print_help(out);
}

int run_tokenize(const Args &args) {
    TokenizeOptions o;
    FlagSet f = tokenize_flags(o);
    if (!f.parse(args)) return 0;
    f.require("--tokenizer");
    if (f.seen("--text") == f.seen("--text-file")) throw UsageError("give exactly one of --text and --text-file");
    const std::string text = f.seen("--text") ? o.text : read_file(o.text_file);

    const Tokenizer tok(o.tokenizer);
    std::string line;
    for (const int32_t id : tokenize(tok.get(), text, !o.no_special))
        line += (line.empty() ? "" : " ") + std::to_string(id);
    write_out(stdout, line + "\n");
    return 0;
}

void help_render_chat(std::FILE *out) {
    RenderOptions o;
    render_flags(o).print_help(out);
}

int run_render_chat(const Args &args) {
    RenderOptions o;
    FlagSet f = render_flags(o);
    if (!f.parse(args)) return 0;
    f.require("--input");
    write_out(stdout, render_chat(read_file(o.input), o.thinking ? DSI_CHAT_THINKING : 0u));
    return 0;
}

}  // namespace cli
