// Incremental parsing of DeepSeek-V3.2 replies. Every decision is taken only once the
// bytes that settle it are present, so any split of the text makes the same decisions,
// events and errors as the whole text (the property test_chat checks).
#include "text/dsml.h"

#include "common/json_text.h"
#include "text/chat.h"
#include "text/utf8.h"

#include <algorithm>
#include <array>
#include <initializer_list>

namespace dsi::chat {
namespace {

using ojson = nlohmann::ordered_json;

// A tag with no '>' within this many bytes is malformed; the bound also keeps a stream
// of tiny pushes from rescanning an ever-growing tag.
constexpr size_t kMaxTagBytes = 4096;

// The encoder writes "\n\n" before the block; it separates, it is not content.
constexpr std::string_view kBlockLead = "\n\n<｜DSML｜";

// What ends the text of each state, and what may start a token between tags.
constexpr std::array<std::string_view, 2> kReasoningEnds = {kThinkEnd, kEos};
constexpr std::array<std::string_view, 4> kContentEnds = {kEos, kBlockLead, kDsmlOpen, kDsmlClose};
constexpr std::array<std::string_view, 2> kValueEnds = {kEos, kDsmlClose};
constexpr std::array<std::string_view, 3> kTagStarts = {kEos, kDsmlOpen, kDsmlClose};

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

bool is_name_char(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }

[[noreturn]] void fail_utf8(size_t at) { fail(DSI_ERR_PARSE, "invalid UTF-8 at byte %zu", at); }

// The length of the longest prefix of `s` made of whole, valid UTF-8 characters; `at`
// is the absolute offset of s[0]. An invalid sequence fails at its first byte. An
// incomplete character at the end is left for later unless `complete` says nothing
// follows, which makes it invalid too.
size_t utf8_prefix(std::string_view s, size_t at, bool complete) {
    const auto *p = reinterpret_cast<const unsigned char *>(s.data());
    size_t i = 0;
    while (i < s.size()) {
        if (p[i] < 0x80) {
            ++i;
            continue;
        }
        utf8::Sequence seq = utf8::scan(p + i, s.size() - i);
        if (!seq.valid) {
            if (!seq.truncated || complete) fail_utf8(at + i);
            return i;
        }
        i += seq.len;
    }
    return i;
}

struct Hit {
    size_t at = 0;           // where the delimiter, or a possible start of one, begins
    std::string_view delim;  // empty: none whole (at < size: a prefix is held from at)
};

// The earliest delimiter in `s`; else the earliest tail of `s` that may still grow into
// one. No delimiter occurs inside another except as its suffix, so a tail that may grow
// into one hides no whole delimiter after it.
template <size_t N>
Hit scan(std::string_view s, const std::array<std::string_view, N> &delims) {
    for (size_t i = 0; i < s.size(); ++i) {
        std::string_view rest = s.substr(i);
        bool may_grow = false;
        for (std::string_view d : delims) {
            if (d[0] != rest[0]) continue;
            if (rest.substr(0, d.size()) == d) return {i, d};
            if (rest.size() < d.size() && d.substr(0, rest.size()) == rest) may_grow = true;
        }
        if (may_grow) return {i, {}};
    }
    return {s.size(), {}};
}

std::string tag_text(const DsmlTag &tag) {
    return std::string(tag.closing ? kDsmlClose : kDsmlOpen) + tag.name + ">";
}

// Reads `text`, a whole tag from '<' to its '>' (quotes balanced), at absolute `at`.
DsmlTag parse_tag(std::string_view text, size_t at) {
    DsmlTag tag;
    tag.at = at;
    tag.closing = text[1] == '/';
    size_t i = tag.closing ? kDsmlClose.size() : kDsmlOpen.size();
    size_t name_start = i;
    while (is_name_char(text[i])) ++i;
    tag.name = text.substr(name_start, i - name_start);
    if (tag.name != "function_calls" && tag.name != "invoke" && tag.name != "parameter") {
        fail(DSI_ERR_PARSE, "unknown DSML tag \"%s\" at byte %zu", tag.name.c_str(), at);
    }
    for (;;) {
        size_t spaces = i;
        while (is_space(text[i])) ++i;
        if (text[i] == '>') return tag;
        if (i == spaces || tag.closing) fail(DSI_ERR_PARSE, "malformed DSML tag at byte %zu", at);
        size_t key_start = i;
        while (is_name_char(text[i])) ++i;
        std::string key(text.substr(key_start, i - key_start));
        if (key.empty() || text[i] != '=' || text[i + 1] != '"') {
            fail(DSI_ERR_PARSE, "malformed attribute in DSML tag at byte %zu", at);
        }
        size_t value_start = i + 2;
        size_t value_end = text.find('"', value_start);  // present: quotes are balanced
        std::string_view value = text.substr(value_start, value_end - value_start);
        utf8_prefix(value, at + value_start, true);
        for (const auto &attribute : tag.attributes) {
            if (attribute.first == key) {
                fail(DSI_ERR_PARSE, "duplicate attribute %s in DSML tag at byte %zu", key.c_str(), at);
            }
        }
        tag.attributes.emplace_back(std::move(key), std::string(value));
        i = value_end + 1;
    }
}

void check_attribute_names(const DsmlTag &tag, std::initializer_list<std::string_view> allowed) {
    for (const auto &attribute : tag.attributes) {
        if (std::find(allowed.begin(), allowed.end(), attribute.first) == allowed.end()) {
            fail(DSI_ERR_PARSE, "unknown attribute %s on %s at byte %zu", attribute.first.c_str(),
                 tag_text(tag).c_str(), tag.at);
        }
    }
}

std::string required_attribute(const DsmlTag &tag, const char *key) {
    for (const auto &attribute : tag.attributes) {
        if (attribute.first != key) continue;
        if (attribute.second.empty()) {
            fail(DSI_ERR_PARSE, "empty %s attribute on %s at byte %zu", key, tag_text(tag).c_str(), tag.at);
        }
        return attribute.second;
    }
    fail(DSI_ERR_PARSE, "missing %s attribute on %s at byte %zu", key, tag_text(tag).c_str(), tag.at);
}

}  // namespace

ReplyParser::ReplyParser(bool thinking)
    : thinking_(thinking), state_(thinking ? State::Reasoning : State::Content) {}

nlohmann::ordered_json ReplyParser::push(std::string_view text) {
    check_usable();
    if (state_ != State::Done) {
        buf_.append(text);
        try {
            run(false);
        } catch (const Error &e) {
            error_ = e;
            throw;
        }
    }
    return take_events();
}

nlohmann::ordered_json ReplyParser::finish() {
    check_usable();
    try {
        run(true);
    } catch (const Error &e) {
        error_ = e;
        throw;
    }
    finished_ = true;
    return take_events();
}

nlohmann::ordered_json ReplyParser::result() const {
    ojson result = ojson::object();
    result["reasoning_content"] = thinking_ ? ojson(reasoning_) : ojson(nullptr);
    result["content"] = content_;
    result["tool_calls"] = tool_calls_;
    return result;
}

void ReplyParser::check_usable() const {
    if (error_) throw *error_;
    if (finished_) fail(DSI_ERR_INVALID_ARGUMENT, "the chat parser has already finished its reply");
}

// Advances while the pending bytes settle something; `final` says no bytes follow.
void ReplyParser::run(bool final) {
    while (step(final)) {
    }
    if (final && state_ != State::Done) end_reply();
    if (state_ == State::Done) pos_ = buf_.size();  // what follows the end is ignored
    buf_.erase(0, pos_);
    base_ += pos_;
    pos_ = 0;
}

// One decision; false when the pending bytes do not settle the next one.
bool ReplyParser::step(bool final) {
    switch (state_) {
        case State::Reasoning:
        case State::Content:
        case State::Value: return step_text(final);
        case State::Block:
        case State::Invoke:
        case State::AfterBlock: return step_between_tags(final);
        case State::Done: return false;
    }
    return false;
}

bool ReplyParser::step_text(bool final) {
    Hit hit = state_ == State::Reasoning ? scan(pending(), kReasoningEnds)
              : state_ == State::Content ? scan(pending(), kContentEnds)
                                         : scan(pending(), kValueEnds);
    if (hit.delim.empty()) return take_text(final ? pending().size() : hit.at, final);
    bool progress = take_text(hit.at, true);  // a delimiter follows: the text is whole
    if (hit.delim == kEos) {
        pos_ += kEos.size();
        end_reply();
        return true;
    }
    if (hit.delim == kThinkEnd) {
        pos_ += kThinkEnd.size();
        state_ = State::Content;
        return true;
    }
    if (hit.delim == kBlockLead) {
        pos_ += kBlockLead.size() - kDsmlOpen.size();
        progress = true;
    }
    return take_tag(final) || progress;
}

// Whitespace, then a tag or the end of the reply.
bool ReplyParser::step_between_tags(bool final) {
    std::string_view s = pending();
    size_t spaces = 0;
    while (spaces < s.size() && is_space(s[spaces])) ++spaces;
    pos_ += spaces;
    s = pending();
    if (s.empty()) return spaces > 0;
    Hit hit = scan(s, kTagStarts);
    bool at_start = hit.at == 0;  // anything else here is unexpected text
    if (at_start && hit.delim == kEos) {
        pos_ += kEos.size();
        end_reply();
        return true;
    }
    if (at_start && !hit.delim.empty()) return take_tag(final) || spaces > 0;
    if (at_start && !final) return spaces > 0;  // s may still grow into a token
    if (state_ == State::AfterBlock) {
        fail(DSI_ERR_PARSE, "unexpected text at byte %zu after </｜DSML｜function_calls>", offset());
    }
    if (at_start) fail_unterminated();  // the reply ends inside the block
    auto [name, at] = open_element();
    fail(DSI_ERR_PARSE, "unexpected text at byte %zu inside <｜DSML｜%s> opened at byte %zu", offset(), name, at);
}

// Moves the first `n` pending bytes, or their longest whole-character prefix unless
// `complete`, into the current text.
bool ReplyParser::take_text(size_t n, bool complete) {
    std::string_view text = pending().substr(0, n);
    text = text.substr(0, utf8_prefix(text, offset(), complete));
    if (state_ == State::Reasoning) {
        reasoning_ += text;
        add_text_event("reasoning", text);
    } else if (state_ == State::Content) {
        content_ += text;
        add_text_event("content", text);
    } else {
        value_ += text;
    }
    pos_ += text.size();
    return !text.empty();
}

// Reads the DSML tag that starts the pending bytes; false until its '>' has arrived.
bool ReplyParser::take_tag(bool final) {
    std::string_view s = pending();
    bool quoted = false;
    size_t limit = std::min(s.size(), kMaxTagBytes);
    for (size_t i = 0; i < limit; ++i) {
        if (s[i] == '"') quoted = !quoted;
        if (s[i] != '>' || quoted) continue;
        DsmlTag tag = parse_tag(s.substr(0, i + 1), offset());
        pos_ += i + 1;
        on_tag(tag);
        return true;
    }
    if (s.size() >= kMaxTagBytes) {
        fail(DSI_ERR_PARSE, "DSML tag at byte %zu has no '>' within %zu bytes", offset(), kMaxTagBytes);
    }
    if (final) fail(DSI_ERR_PARSE, "unterminated DSML tag at byte %zu", offset());
    return false;
}

// The reply ends here, at its end token or at the end of the text.
void ReplyParser::end_reply() {
    if (state_ == State::Block || state_ == State::Invoke || state_ == State::Value) fail_unterminated();
    state_ = State::Done;
}

void ReplyParser::on_tag(const DsmlTag &tag) {
    switch (state_) {
        case State::Content:
            if (tag.closing || tag.name != "function_calls") {
                fail(DSI_ERR_PARSE, "unexpected %s at byte %zu outside a <｜DSML｜function_calls> block",
                     tag_text(tag).c_str(), tag.at);
            }
            check_attribute_names(tag, {});
            block_at_ = tag.at;
            state_ = State::Block;
            return;
        case State::Block:
            if (!tag.closing && tag.name == "invoke") return open_invoke(tag);
            if (tag.closing && tag.name == "function_calls") {
                state_ = State::AfterBlock;
                return;
            }
            break;
        case State::Invoke:
            if (!tag.closing && tag.name == "parameter") return open_parameter(tag);
            if (tag.closing && tag.name == "invoke") return close_invoke();
            break;
        case State::Value:
            if (tag.closing && tag.name == "parameter") return close_parameter();
            break;
        default: break;
    }
    if (tag.closing) fail_mismatched(tag);
    auto [name, at] = open_element();
    fail(DSI_ERR_PARSE, "unexpected %s at byte %zu inside <｜DSML｜%s> opened at byte %zu",
         tag_text(tag).c_str(), tag.at, name, at);
}

void ReplyParser::open_invoke(const DsmlTag &tag) {
    check_attribute_names(tag, {"name"});
    invoke_name_ = required_attribute(tag, "name");
    invoke_at_ = tag.at;
    arguments_ = ojson::object();
    param_names_.clear();
    state_ = State::Invoke;
}

void ReplyParser::open_parameter(const DsmlTag &tag) {
    check_attribute_names(tag, {"name", "string"});
    param_name_ = required_attribute(tag, "name");
    std::string is_string = required_attribute(tag, "string");
    if (is_string != "true" && is_string != "false") {
        fail(DSI_ERR_PARSE, "string=\"%s\" on <｜DSML｜parameter> at byte %zu: expected \"true\" or \"false\"",
             is_string.c_str(), tag.at);
    }
    if (param_names_.count(param_name_)) {
        fail(DSI_ERR_PARSE, "duplicate parameter \"%s\" at byte %zu", param_name_.c_str(), tag.at);
    }
    param_is_string_ = is_string == "true";
    param_at_ = tag.at;
    value_at_ = offset();
    value_.clear();
    state_ = State::Value;
}

void ReplyParser::close_parameter() {
    ojson value = value_;
    if (!param_is_string_) {
        if (std::string problem = json_text_problem(value_, {kMaxJsonDepth, kMaxOrderedJsonMembers}); !problem.empty())
            fail(DSI_ERR_PARSE, "parameter \"%s\" (string=\"false\") at byte %zu: %s", param_name_.c_str(), value_at_,
                 problem.c_str());
        try {
            value = ojson::parse(value_);
        } catch (const ojson::parse_error &e) {
            size_t at = value_at_ + (e.byte > 0 ? e.byte - 1 : 0);
            fail(DSI_ERR_PARSE, "parameter \"%s\" (string=\"false\") is not JSON at byte %zu: %s",
                 param_name_.c_str(), at, e.what());
        } catch (const ojson::exception &e) {  // e.g. a number out of range
            fail(DSI_ERR_PARSE, "parameter \"%s\" (string=\"false\") at byte %zu: %s", param_name_.c_str(),
                 value_at_, e.what());
        }
    }
    // Appended without ordered_map's linear search: param_names_ already refused duplicates.
    ojson::object_t &arguments = arguments_.get_ref<ojson::object_t &>();
    arguments.ojson::object_t::Container::emplace_back(param_name_, std::move(value));
    param_names_.insert(param_name_);
    state_ = State::Invoke;
}

void ReplyParser::close_invoke() {
    ojson call = ojson::object();
    call["name"] = invoke_name_;
    call["arguments"] = arguments_;
    ojson event = ojson::object();
    event["type"] = "tool_call";
    event["name"] = invoke_name_;
    event["arguments"] = std::move(arguments_);
    tool_calls_.push_back(std::move(call));
    events_.push_back(std::move(event));
    state_ = State::Block;
}

// The innermost DSML element still open, and the offset of its tag.
std::pair<const char *, size_t> ReplyParser::open_element() const {
    if (state_ == State::Value) return {"parameter", param_at_};
    if (state_ == State::Invoke) return {"invoke", invoke_at_};
    return {"function_calls", block_at_};
}

void ReplyParser::fail_unterminated() const {
    auto [name, at] = open_element();
    fail(DSI_ERR_PARSE, "unterminated <｜DSML｜%s> at byte %zu", name, at);
}

void ReplyParser::fail_mismatched(const DsmlTag &tag) const {
    auto [name, at] = open_element();
    fail(DSI_ERR_PARSE, "mismatched closing tag %s at byte %zu: <｜DSML｜%s> opened at byte %zu is open",
         tag_text(tag).c_str(), tag.at, name, at);
}

// Texts of one type that follow each other within a push become one event.
void ReplyParser::add_text_event(const char *type, std::string_view text) {
    if (text.empty()) return;
    if (!events_.empty() && events_.back()["type"] == type) {
        events_.back()["text"].get_ref<std::string &>() += text;
        return;
    }
    ojson event = ojson::object();
    event["type"] = type;
    event["text"] = std::string(text);
    events_.push_back(std::move(event));
}

nlohmann::ordered_json ReplyParser::take_events() {
    ojson out = std::move(events_);
    events_ = ojson::array();
    return out;
}

nlohmann::ordered_json parse_reply(std::string_view text, bool thinking) {
    ReplyParser parser(thinking);
    parser.push(text);
    parser.finish();
    return parser.result();
}

}  // namespace dsi::chat
