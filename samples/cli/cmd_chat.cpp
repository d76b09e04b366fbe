// dsinfer chat: an interactive conversation in the DeepSeek-V3.2 chat format.
#include "commands.h"
#include "engine.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <unistd.h>

#if DSINFER_CLI_READLINE
#include <readline/history.h>
#include <readline/readline.h>
#endif

namespace cli {
namespace {

// Ordered, so that tool-call arguments are written back in the order the model wrote
// them, and the next turn's prompt still matches the tokens held in the context.
using Json = nlohmann::ordered_json;

struct Options {
    ModelOptions model;
    dsi_sampler_params sampling = dsi_sampler_default_params();
    int32_t max_tokens = 2048;
    int32_t n_ctx = 0;
    bool thinking = false;
    std::string system;
};

constexpr int64_t kDefaultContext = 8192;

FlagSet flags(Options &o) {
    FlagSet f("chat", "--model DIR [options]",
              "Chats on stdin/stdout: each line read is a user message; the reply streams to\n"
              "stdout, its reasoning to stderr. An empty line is skipped. Commands: /clear\n"
              "starts a new conversation, /exit (or EOF) ends. Ctrl-C stops a reply and returns\n"
              "to the prompt; Ctrl-C at the prompt exits. On a terminal, lines can be edited and\n"
              "recalled with the arrow keys (GNU readline).");
    add_model_flag(f, o.model);
    f.value("--system", "TEXT", "a system message that starts every conversation",
            [&o](const std::string &v) { o.system = v; });
    f.flag("--thinking", "thinking mode: the model reasons before it answers", [&o] { o.thinking = true; });
    f.value("--max-tokens", "N", "at most N tokens per reply (default 2048)", [&o](const std::string &v) {
        o.max_tokens = static_cast<int32_t>(parse_int("--max-tokens", v, 1, INT32_MAX));
    });
    f.alias("-n", "--max-tokens");
    f.value("--n-ctx", "N", "context size in tokens (default: 8192 or --max-tokens if larger, at most the model's)",
            [&o](const std::string &v) { o.n_ctx = static_cast<int32_t>(parse_int("--n-ctx", v, 1, INT32_MAX)); });
    f.alias("-c", "--n-ctx");
    add_sampling_flags(f, o.sampling);
    add_runtime_flags(f, o.model, true);
    return f;
}

// Ctrl-C: during a reply it asks the reply to stop (the abort callback also stops a
// prompt being evaluated); at the prompt, or a second time before the reply stopped,
// it ends the program as SIGINT normally does.
std::atomic<bool> g_replying{false};
std::atomic<bool> g_stop{false};

extern "C" void on_sigint(int) {
    if (g_replying.load() && !g_stop.load()) {
        g_stop.store(true);
        return;
    }
    const char newline = '\n';
    (void)!write(STDERR_FILENO, &newline, 1);
    std::_Exit(130);
}

int stop_requested(void *) { return g_stop.load() ? 1 : 0; }

void install_sigint() {
    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
#if DSINFER_CLI_READLINE
    rl_catch_signals = 0;  // the handler above, not readline's, sees Ctrl-C
#endif
}

// One line without its line ending; false at EOF with nothing read. On a terminal with
// readline: line editing, and history recalled with the arrow keys.
bool read_line(std::string &line) {
    line.clear();
#if DSINFER_CLI_READLINE
    if (is_tty(stdin)) {
        char *text = readline("> ");
        if (!text) return false;
        line = text;
        std::free(text);
        if (!line.empty()) add_history(line.c_str());
        return true;
    }
#endif
    if (is_tty(stdin)) write_out(stderr, "> ");
    int c;
    while ((c = std::getc(stdin)) != EOF && c != '\n') line += static_cast<char>(c);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return c != EOF || !line.empty();
}

Json message(const char *role, const std::string &content) { return {{"role", role}, {"content", content}}; }

// The string member `key` of an object, or "" when absent or not a string.
std::string get_string(const Json &object, const char *key) {
    const auto it = object.find(key);
    return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// Compact JSON text; bytes that are not UTF-8 become U+FFFD instead of throwing.
std::string dump(const Json &v) { return v.dump(-1, ' ', false, Json::error_handler_t::replace); }

// The library returns JSON as a char * to free with dsi_free().
Json take_json(char *text, const char *if_null) {
    const std::string copy = text ? text : if_null;
    dsi_free(text);
    try {
        return Json::parse(copy);
    } catch (const Json::exception &e) {
        throw Failure(std::string("malformed JSON from the library: ") + e.what());
    }
}

class ChatParser {
public:
    explicit ChatParser(unsigned flags) { check(dsi_chat_parser_create(flags, &parser_)); }
    ~ChatParser() { dsi_chat_parser_free(parser_); }
    ChatParser(const ChatParser &) = delete;
    ChatParser &operator=(const ChatParser &) = delete;

    Json push(const std::string &text) {
        char *events = nullptr;
        check(dsi_chat_parser_push(parser_, text.data(), text.size(), &events));
        return take_json(events, "[]");
    }

    // The last events; *result receives the whole reply as dsi_chat_parse() gives it.
    Json finish(Json *result) {
        char *events = nullptr, *whole = nullptr;
        const dsi_status status = dsi_chat_parser_finish(parser_, &events, &whole);
        Json parsed_events = take_json(events, "[]"), parsed_result = take_json(whole, "{}");
        check(status);
        *result = std::move(parsed_result);
        return parsed_events;
    }

private:
    dsi_chat_parser *parser_ = nullptr;
};

// Reasoning goes to stderr, dimmed on a terminal and prefixed elsewhere, so that stdout
// carries only the answer; tool calls are shown on stderr too.
class Display {
public:
    void show(const Json &events) {
        if (!events.is_array()) return;
        for (const Json &e : events) {
            const std::string type = get_string(e, "type");
            if (type == "reasoning") {
                reasoning(get_string(e, "text"));
            } else if (type == "content") {
                end_reasoning();
                write_out(stdout, get_string(e, "text"));
            } else if (type == "tool_call") {
                tool_call(e);
            }
        }
    }

    void finish() {
        end_reasoning();
        write_out(stdout, "\n");
    }

private:
    void reasoning(const std::string &text) {
        if (is_tty(stderr)) {
            write_out(stderr, "\x1b[2m" + text + "\x1b[0m");
        } else {
            write_out(stderr, (in_reasoning_ ? "" : "[reasoning] ") + text);
        }
        in_reasoning_ = true;
    }

    void end_reasoning() {
        if (in_reasoning_) write_out(stderr, "\n");
        in_reasoning_ = false;
    }

    void tool_call(const Json &e) {
        end_reasoning();
        const auto args = e.find("arguments");
        write_out(stderr, "[tool call] " + get_string(e, "name") + " " + (args != e.end() ? dump(*args) : "{}") + "\n");
    }

    bool in_reasoning_ = false;
};

// The assistant turn in the form dsi_chat_render() reads back: the parser's
// {"name", "arguments"} tool calls become OpenAI-style function calls.
Json assistant_message(const Json &reply) {
    Json m = message("assistant", get_string(reply, "content"));
    const std::string reasoning = get_string(reply, "reasoning_content");
    if (!reasoning.empty()) m["reasoning_content"] = reasoning;
    const auto calls = reply.find("tool_calls");
    if (calls == reply.end() || !calls->is_array() || calls->empty()) return m;
    Json list = Json::array();
    for (const Json &call : *calls) {
        const auto args = call.find("arguments");
        list.push_back(Json{{"type", "function"},
                             {"function",
                              {{"name", get_string(call, "name")},
                               {"arguments", args != call.end() ? dump(*args) : "{}"}}}});
    }
    m["tool_calls"] = std::move(list);
    return m;
}

// Keeps the longest prefix of `ids` that the context already holds (usually all but
// the newest turns) and evaluates only the rest; a prompt that shares nothing with
// the context is evaluated from scratch.
void feed_prompt(Model &model, const std::vector<int32_t> &ids) {
    dsi_context *ctx = model.context();
    std::vector<int32_t> held(static_cast<size_t>(dsi_context_length(ctx)));
    dsi_context_tokens(ctx, held.data(), held.size());
    size_t keep = 0;
    while (keep < held.size() && keep < ids.size() && held[keep] == ids[keep]) ++keep;
    keep = std::min(keep, ids.size() - 1);  // evaluate at least one token, for fresh logits
    if (keep < held.size()) check(dsi_context_truncate(ctx, static_cast<int32_t>(keep)));
    model.prefill(std::vector<int32_t>(ids.begin() + static_cast<std::ptrdiff_t>(keep), ids.end()),
                  DSI_EVAL_LOGITS_LAST);
}

// Samples, streams and parses one reply. Every sampled token, EOS included, is also
// evaluated so that the context keeps matching the conversation's next rendering.
Json reply(Model &model, Sampler &sampler, unsigned flags, int32_t max_tokens) {
    dsi_context *ctx = model.context();
    TextStream text(model.tokenizer());
    ChatParser parser(flags);
    Display display;
    std::string reply_text;
    for (int32_t i = 0; i < max_tokens; ++i) {
        if (g_stop.load()) break;
        if (dsi_context_length(ctx) >= dsi_context_n_ctx(ctx)) {
            write_out(stderr, "\ndsinfer: the context is full; the reply is cut short\n");
            break;
        }
        const int32_t token = sampler.sample(ctx);
        try {
            model.decode(token);
        } catch (const LibraryError &e) {
            if (e.status != DSI_ERR_CANCELLED) throw;
            continue;  // Ctrl-C during the step: the loop ends at its check above
        }
        if (dsi_session_token_attr(model.session(), token) & DSI_TOKEN_ATTR_EOG) break;
        const std::string piece = text.push(token);
        reply_text += piece;
        if (!piece.empty()) display.show(parser.push(piece));
    }
    const std::string rest = text.flush();
    reply_text += rest;
    if (!rest.empty()) display.show(parser.push(rest));
    Json result;
    try {
        display.show(parser.finish(&result));
    } catch (const LibraryError &) {
        if (!g_stop.load()) throw;
        // A reply stopped inside a tool call does not parse; it is kept as plain text.
        result = Json{{"content", reply_text}};
    }
    display.finish();
    if (g_stop.load()) write_out(stderr, "[stopped]\n");
    return result;
}

}  // namespace

void help_chat(std::FILE *out) {
    Options o;
    flags(o).print_help(out);
}

int run_chat(const Args &args) {
    Options o;
    FlagSet f = flags(o);
    if (!f.parse(args)) return 0;
    f.require("--model");
    check_sampling_flags(f);

    Model model(o.model);
    model.tokenizer();  // fail before the first prompt when there is none
    const int64_t trained = dsi_session_n_ctx_train(model.session());
    // A reply longer than the default context raises it, up to the model's maximum.
    const int64_t wanted = std::max<int64_t>(kDefaultContext, o.max_tokens);
    model.create_context(o.n_ctx ? o.n_ctx : std::min(trained > 0 ? trained : wanted, wanted));
    Sampler sampler(o.sampling);
    const unsigned flags = o.thinking ? DSI_CHAT_THINKING : 0u;

    check(dsi_context_set_abort_callback(model.context(), stop_requested, nullptr));
    install_sigint();

    const auto start = [&o] {
        Json m = Json::array();
        if (!o.system.empty()) m.push_back(message("system", o.system));
        return m;
    };
    Json messages = start();
    std::string line;
    while (read_line(line) && line != "/exit") {
        if (line.empty()) continue;
        if (line == "/clear") {
            messages = start();
            write_out(stderr, "[new conversation]\n");
            continue;
        }
        messages.push_back(message("user", line));
        const std::string prompt = render_chat(dump(Json{{"messages", messages}}), flags);
        g_stop.store(false);
        g_replying.store(true);
        try {
            feed_prompt(model, tokenize(model.tokenizer(), prompt, true));
            messages.push_back(assistant_message(reply(model, sampler, flags, o.max_tokens)));
        } catch (const LibraryError &e) {
            if (e.status != DSI_ERR_CANCELLED) throw;
            // Ctrl-C while the prompt was evaluated: the context is as it was, the turn is dropped.
            messages.erase(messages.size() - 1);
            write_out(stderr, "\n[stopped]\n");
        }
        g_replying.store(false);
    }
    if (o.model.stats) model.stats.print();
    return 0;
}

}  // namespace cli
