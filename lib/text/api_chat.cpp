// The C API of the chat encoding and of reply parsing (dsinfer.h, section "Chat").
#include "dsinfer.h"

#include "common/error.h"
#include "common/log.h"
#include "text/chat.h"
#include "text/dsml.h"

#include <cstdlib>
#include <cstring>
#include <new>

struct dsi_chat_parser {
    explicit dsi_chat_parser(bool thinking) : parser(thinking) {}
    dsi::chat::ReplyParser parser;
};

namespace {

// A NUL-terminated copy the caller frees with dsi_free() (std::free).
char *copy_out(const std::string &s) {
    auto *out = static_cast<char *>(std::malloc(s.size() + 1));
    if (!out) throw std::bad_alloc();
    std::memcpy(out, s.data(), s.size());
    out[s.size()] = '\0';
    return out;
}

// Strings in parser output are valid UTF-8 already, so dumping cannot throw on them.
std::string to_text(const nlohmann::ordered_json &value) { return value.dump(-1, ' ', false); }

bool thinking_flag(unsigned flags) {
    if (flags & ~DSI_CHAT_THINKING) {
        dsi::fail(DSI_ERR_INVALID_ARGUMENT, "unknown chat flags 0x%x", flags & ~DSI_CHAT_THINKING);
    }
    return (flags & DSI_CHAT_THINKING) != 0;
}

void require(bool ok, const char *what) {
    if (!ok) dsi::fail(DSI_ERR_INVALID_ARGUMENT, "%s is NULL", what);
}

}  // namespace

extern "C" {

DSI_API dsi_status dsi_chat_render(const char *conversation_json, size_t json_len, unsigned flags,
                                   char **prompt, size_t *prompt_len) {
    return dsi::guard([&] {
        require(prompt != nullptr, "prompt");
        *prompt = nullptr;
        require(conversation_json != nullptr, "conversation_json");
        bool thinking = thinking_flag(flags);
        std::string text = dsi::chat::render(std::string_view(conversation_json, json_len), thinking);
        dsi::log_global(DSI_LOG_DEBUG, "chat: rendered %zu bytes of conversation into a %zu-byte prompt", json_len,
                        text.size());
        *prompt = copy_out(text);
        if (prompt_len) *prompt_len = text.size();
    });
}

DSI_API dsi_status dsi_chat_parse(const char *output, size_t output_len, unsigned flags, char **json,
                                  size_t *json_len) {
    return dsi::guard([&] {
        require(json != nullptr, "json");
        *json = nullptr;
        require(output != nullptr || output_len == 0, "output");
        bool thinking = thinking_flag(flags);
        std::string text = to_text(dsi::chat::parse_reply(std::string_view(output, output_len), thinking));
        *json = copy_out(text);
        if (json_len) *json_len = text.size();
    });
}

DSI_API dsi_status dsi_chat_parser_create(unsigned flags, dsi_chat_parser **out) {
    return dsi::guard([&] {
        require(out != nullptr, "out");
        *out = nullptr;
        *out = new dsi_chat_parser(thinking_flag(flags));
    });
}

DSI_API void dsi_chat_parser_free(dsi_chat_parser *parser) { delete parser; }

DSI_API dsi_status dsi_chat_parser_push(dsi_chat_parser *parser, const char *text, size_t len,
                                        char **events) {
    return dsi::guard([&] {
        require(events != nullptr, "events");
        *events = nullptr;
        require(parser != nullptr, "parser");
        require(text != nullptr || len == 0, "text");
        *events = copy_out(to_text(parser->parser.push(std::string_view(text, len))));
    });
}

DSI_API dsi_status dsi_chat_parser_finish(dsi_chat_parser *parser, char **events, char **result) {
    return dsi::guard([&] {
        require(events != nullptr, "events");
        require(result != nullptr, "result");
        *events = nullptr;
        *result = nullptr;
        require(parser != nullptr, "parser");
        std::string events_text = to_text(parser->parser.finish());
        std::string result_text = to_text(parser->parser.result());
        char *events_out = copy_out(events_text);
        try {
            *result = copy_out(result_text);
        } catch (...) {
            std::free(events_out);
            throw;
        }
        *events = events_out;
    });
}

}  // extern "C"
