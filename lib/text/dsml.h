// Parsing of a DeepSeek-V3.2 reply, the text the model generates after the prompt:
// reasoning up to </think> (thinking mode only), then content, then at most one DSML
// block of tool calls, up to <｜end▁of▁sentence｜> (what follows it is ignored) or the
// end of the text. The parser is incremental; whole-text parsing is one push and finish.
//
// Result (dsi_chat_parse), every field always present:
//   {"reasoning_content": string in thinking mode, null otherwise,
//    "content": string,
//    "tool_calls": [{"name": string, "arguments": object}, ...]}
// Events (dsi_chat_parser_push), in reply order; texts are pieces to concatenate:
//   {"type": "reasoning", "text": ...}  {"type": "content", "text": ...}
//   {"type": "tool_call", "name": ..., "arguments": {...}}  (at its </｜DSML｜invoke>)
//
// Block grammar (whitespace allowed between tags; the "\n\n" the encoder writes before
// the block is not content):
//   <｜DSML｜function_calls>
//   <｜DSML｜invoke name="NAME">
//   <｜DSML｜parameter name="P" string="true|false">VALUE</｜DSML｜parameter>  ...
//   </｜DSML｜invoke>  ...
//   </｜DSML｜function_calls>
// VALUE is raw text up to the next closing DSML tag: string="true" keeps it as a string,
// string="false" parses it as JSON. Attribute values cannot contain '"' (the encoder
// writes names raw, so such a name could not be told from the tag around it). Errors are dsi::Error(DSI_ERR_PARSE) naming the
// absolute byte offset ("at byte N"); they do not depend on how the text was split.
#pragma once

#include "common/error.h"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

namespace dsi::chat {

// One DSML tag as read from a reply.
struct DsmlTag {
    bool closing = false;
    std::string name;
    std::vector<std::pair<std::string, std::string>> attributes;
    size_t at = 0;  // absolute offset of its '<'
};

class ReplyParser {
public:
    explicit ReplyParser(bool thinking);

    // Feeds the next bytes, split anywhere; returns a JSON array of the events they made
    // certain. Only a possible delimiter or tag prefix and an incomplete UTF-8 character
    // are held back. A failure is sticky: later calls fail the same way.
    nlohmann::ordered_json push(std::string_view text);

    // Ends the reply and returns the remaining events; result() is then complete.
    // Calling push() or finish() afterwards is DSI_ERR_INVALID_ARGUMENT.
    nlohmann::ordered_json finish();

    nlohmann::ordered_json result() const;

private:
    enum class State { Reasoning, Content, Block, Invoke, Value, AfterBlock, Done };

    void check_usable() const;
    void run(bool final);
    bool step(bool final);
    bool step_text(bool final);
    bool step_between_tags(bool final);
    bool take_text(size_t n, bool complete);
    bool take_tag(bool final);
    void end_reply();
    void on_tag(const DsmlTag &tag);
    void open_invoke(const DsmlTag &tag);
    void open_parameter(const DsmlTag &tag);
    void close_parameter();
    void close_invoke();
    std::pair<const char *, size_t> open_element() const;
    [[noreturn]] void fail_unterminated() const;
    [[noreturn]] void fail_mismatched(const DsmlTag &tag) const;
    void add_text_event(const char *type, std::string_view text);
    nlohmann::ordered_json take_events();

    std::string_view pending() const { return std::string_view(buf_).substr(pos_); }
    size_t offset() const { return base_ + pos_; }

    bool thinking_;
    State state_;
    bool finished_ = false;
    std::optional<Error> error_;

    std::string buf_;  // input not consumed yet starts at pos_
    size_t pos_ = 0;
    size_t base_ = 0;  // absolute offset of buf_[0]

    std::string reasoning_;
    std::string content_;
    nlohmann::ordered_json tool_calls_ = nlohmann::ordered_json::array();
    nlohmann::ordered_json events_ = nlohmann::ordered_json::array();

    // The open block, invoke and parameter (absolute offsets of their tags).
    size_t block_at_ = 0;
    size_t invoke_at_ = 0;
    std::string invoke_name_;
    nlohmann::ordered_json arguments_;
    std::unordered_set<std::string> param_names_;  // of the open invoke: O(1) duplicate check
    size_t param_at_ = 0;
    std::string param_name_;
    bool param_is_string_ = true;
    size_t value_at_ = 0;
    std::string value_;
};

// The whole reply at once: the same as one push() and finish().
nlohmann::ordered_json parse_reply(std::string_view text, bool thinking);

}  // namespace dsi::chat
