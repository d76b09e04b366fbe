// DeepSeek-V3.2 prompt rendering. Each rule below names the part of the reference
// encoder (encoding/encoding_dsv32.py of deepseek-ai/DeepSeek-V3.2) it reproduces.
#include "text/chat.h"

#include "common/error.h"
#include "common/json_text.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace dsi::chat {
namespace {

using ojson = nlohmann::ordered_json;

// TOOLS_SYSTEM_TEMPLATE with {dsml_token}, {thinking_start_token} and
// {thinking_end_token} substituted; the tool schemas and "\n</functions>\n" follow.
constexpr std::string_view kToolsPreamble = R"(## Tools

You have access to a set of tools you can use to answer the user's question.
You can invoke functions by writing a "<｜DSML｜function_calls>" block like the following as part of your reply to the user:
<｜DSML｜function_calls>
<｜DSML｜invoke name="$FUNCTION_NAME">
<｜DSML｜parameter name="$PARAMETER_NAME" string="true|false">$PARAMETER_VALUE</｜DSML｜parameter>
...
</｜DSML｜invoke>
<｜DSML｜invoke name="$FUNCTION_NAME2">
...
</｜DSML｜invoke>
</｜DSML｜function_calls>

String and scalar parameters should be specified as is without any escaping or quotes, while lists and objects should use JSON format. The "string" attribute should be set to "true" for string type parameters and "false" for other types (numbers, booleans, arrays, objects).

If the thinking_mode is enabled, then after function results you should strongly consider outputting a thinking block. Here is an example:

<｜DSML｜function_calls>
...
</｜DSML｜function_calls>

<function_results>
...
</function_results>

<think>...thinking about results</think>

Here are the functions available in JSONSchema format:
<functions>
)";

// response_format_template without its {schema}.
constexpr std::string_view kResponseFormatPreamble =
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";

// ---- Python's json.dumps(value, ensure_ascii=False) ---------------------------------

void dump_string(std::string &out, const std::string &s) {
    out += '"';
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += static_cast<char>(c);
                }
        }
    }
    out += '"';
}

// Python's float repr: the shortest digits that round-trip, positional when the decimal
// exponent is in [-4, 16), else d.ddde+XX. (nlohmann's dump switches at 1e15.)
void dump_float(std::string &out, double v) {
    if (std::isnan(v)) {
        out += "NaN";
        return;
    }
    if (std::isinf(v)) {
        out += v < 0 ? "-Infinity" : "Infinity";
        return;
    }
    char buf[64];
    auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
    std::string_view sci(buf, static_cast<size_t>(res.ptr - buf));
    size_t e_pos = sci.find('e');
    int exponent = 0;
    std::from_chars(sci.data() + e_pos + 2, sci.data() + sci.size(), exponent);
    if (sci[e_pos + 1] == '-') exponent = -exponent;
    std::string digits;
    for (char c : sci.substr(0, e_pos)) {
        if (c == '-') out += '-';
        else if (c != '.') digits += c;
    }
    if (exponent < -4 || exponent >= 16) {
        out += digits[0];
        if (digits.size() > 1) out += "." + digits.substr(1);
        out += strformat("e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    } else if (exponent < 0) {
        out += "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
    } else {
        size_t int_len = static_cast<size_t>(exponent) + 1;
        if (digits.size() <= int_len) {
            out += digits + std::string(int_len - digits.size(), '0') + ".0";
        } else {
            out += digits.substr(0, int_len) + "." + digits.substr(int_len);
        }
    }
}

void dump(std::string &out, const ojson &v) {
    switch (v.type()) {
        case ojson::value_t::null: out += "null"; break;
        case ojson::value_t::boolean: out += v.get<bool>() ? "true" : "false"; break;
        case ojson::value_t::number_integer: out += std::to_string(v.get<int64_t>()); break;
        case ojson::value_t::number_unsigned: out += std::to_string(v.get<uint64_t>()); break;
        case ojson::value_t::number_float: dump_float(out, v.get<double>()); break;
        case ojson::value_t::string: dump_string(out, v.get_ref<const std::string &>()); break;
        case ojson::value_t::array: {
            out += '[';
            for (size_t i = 0; i < v.size(); ++i) {
                if (i > 0) out += ", ";
                dump(out, v[i]);
            }
            out += ']';
            break;
        }
        case ojson::value_t::object: {
            out += '{';
            bool first = true;
            for (const auto &item : v.items()) {
                if (!first) out += ", ";
                first = false;
                dump_string(out, item.key());
                out += ": ";
                dump(out, item.value());
            }
            out += '}';
            break;
        }
        default: fail(DSI_ERR_INTERNAL, "python_json_dumps: a JSON value that parsing never produces");
    }
}

// ---- the conversation, validated ------------------------------------------------------

enum class Role { System, Developer, User, Assistant, Tool };

struct ToolCall {
    std::string name;
    ojson arguments;  // an object, in the order the caller wrote it
};

struct Message {
    size_t index = 0;  // in the input "messages", for error messages
    Role role = Role::System;
    std::string content;  // "" where the reference reads `content or ""`
    std::string reasoning;
    std::vector<ToolCall> tool_calls;
    std::vector<ojson> tools;  // function schemas (system and developer turns)
    ojson response_format;     // a non-empty object, or null
};

// Limits for JSON parsed into ordered_json (see common/json_text.h).
const JsonTextLimits kOrderedJsonLimits{kMaxJsonDepth, kMaxOrderedJsonMembers};

[[noreturn]] void bad_field(const std::string &field, const char *problem) {
    fail(DSI_ERR_PARSE, "%s: %s", field.c_str(), problem);
}

// Absent or null reads as "", as the reference's `content or ""` does.
std::string string_or_empty(const ojson &obj, const char *key, const std::string &where) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return "";
    if (!it->is_string()) bad_field(where + "." + key, "expected a string or null");
    return it->get<std::string>();
}

// Where the reference would print Python's "None" for a missing value, we refuse it.
std::string required_string(const ojson &obj, const char *key, const std::string &where) {
    auto it = obj.find(key);
    if (it == obj.end() || !it->is_string()) bad_field(where + "." + key, "expected a string");
    return it->get<std::string>();
}

const ojson &required_object(const ojson &obj, const char *key, const std::string &where) {
    auto it = obj.find(key);
    if (it == obj.end() || !it->is_object()) bad_field(where + "." + key, "expected an object");
    return *it;
}

// tools_from_openai_format(): each {"type": "function", "function": {...}} renders as
// its "function" object.
std::vector<ojson> parse_tools(const ojson &tools, const std::string &where) {
    std::vector<ojson> out;
    if (tools.is_null()) return out;
    if (!tools.is_array()) bad_field(where, "expected an array of {\"function\": {...}}");
    for (size_t i = 0; i < tools.size(); ++i) {
        std::string at = strformat("%s[%zu]", where.c_str(), i);
        if (!tools[i].is_object()) bad_field(at, "expected an object");
        out.push_back(required_object(tools[i], "function", at));
    }
    return out;
}

// OpenAI sends arguments as a JSON string; encode_arguments_to_dsml() json.loads() it
// and walks its items, so it must hold an object. An object is accepted as well.
ojson parse_arguments(const ojson &args, const std::string &where) {
    ojson parsed = args;
    if (args.is_string()) {
        if (std::string problem = json_text_problem(args.get_ref<const std::string &>(), kOrderedJsonLimits);
            !problem.empty())
            fail(DSI_ERR_PARSE, "%s: %s", where.c_str(), problem.c_str());
        try {
            parsed = ojson::parse(args.get_ref<const std::string &>());
        } catch (const ojson::exception &e) {
            fail(DSI_ERR_PARSE, "%s: invalid JSON: %s", where.c_str(), e.what());
        }
    }
    if (!parsed.is_object()) bad_field(where, "expected a JSON object (or a string holding one)");
    return parsed;
}

ToolCall parse_tool_call(const ojson &call, const std::string &where) {
    if (!call.is_object()) bad_field(where, "expected an object");
    std::string fn_where = where + ".function";
    const ojson &fn = required_object(call, "function", where);
    ToolCall tc;
    tc.name = required_string(fn, "name", fn_where);
    auto args = fn.find("arguments");
    if (args == fn.end()) bad_field(fn_where + ".arguments", "missing");
    tc.arguments = parse_arguments(*args, fn_where + ".arguments");
    return tc;
}

std::vector<ToolCall> parse_tool_calls(const ojson &msg, const std::string &where) {
    std::vector<ToolCall> out;
    auto it = msg.find("tool_calls");
    if (it == msg.end() || it->is_null()) return out;
    if (!it->is_array()) bad_field(where + ".tool_calls", "expected an array");
    for (size_t j = 0; j < it->size(); ++j) {
        out.push_back(parse_tool_call((*it)[j], strformat("%s.tool_calls[%zu]", where.c_str(), j)));
    }
    return out;
}

Role parse_role(const ojson &msg, const std::string &where) {
    static const std::pair<const char *, Role> kRoles[] = {
        {"system", Role::System}, {"developer", Role::Developer}, {"user", Role::User},
        {"assistant", Role::Assistant}, {"tool", Role::Tool}};
    std::string role = required_string(msg, "role", where);
    for (const auto &[name, value] : kRoles) {
        if (role == name) return value;
    }
    fail(DSI_ERR_PARSE, "%s.role: unknown role \"%s\" (system, developer, user, assistant or tool)",
         where.c_str(), role.c_str());
}

// System and developer turns may carry their own tools and response_format.
void parse_instructions(const ojson &msg, const std::string &where, Message &out) {
    auto tools = msg.find("tools");
    if (tools != msg.end()) out.tools = parse_tools(*tools, where + ".tools");
    auto format = msg.find("response_format");
    if (format == msg.end() || format->is_null()) return;
    if (!format->is_object()) bad_field(where + ".response_format", "expected an object");
    if (!format->empty()) out.response_format = *format;
}

Message parse_message(const ojson &msg, size_t index) {
    std::string where = strformat("messages[%zu]", index);
    if (!msg.is_object()) bad_field(where, "expected an object");
    Message out;
    out.index = index;
    out.role = parse_role(msg, where);
    switch (out.role) {
        case Role::System:
            out.content = string_or_empty(msg, "content", where);
            parse_instructions(msg, where, out);
            break;
        case Role::Developer:
            out.content = required_string(msg, "content", where);
            if (out.content.empty()) bad_field(where + ".content", "empty (the reference requires it)");
            parse_instructions(msg, where, out);
            break;
        case Role::User:
        case Role::Tool: out.content = required_string(msg, "content", where); break;
        case Role::Assistant:
            out.content = string_or_empty(msg, "content", where);
            out.reasoning = string_or_empty(msg, "reasoning_content", where);
            out.tool_calls = parse_tool_calls(msg, where);
            break;
    }
    return out;
}

// DeepSeek's test attaches the request's tools to the first message
// (messages[0]["tools"] = tools); only a system turn renders them there, so without
// one an empty system turn leads the conversation to carry them.
void attach_tools(std::vector<ojson> tools, std::vector<Message> &messages) {
    if (tools.empty()) return;
    if (messages.empty() || messages[0].role != Role::System) {
        messages.insert(messages.begin(), Message{});
    } else if (!messages[0].tools.empty()) {
        bad_field("messages[0].tools", "tools are also given at the top level");
    }
    messages[0].tools = std::move(tools);
}

std::vector<Message> parse_conversation(std::string_view text) {
    if (std::string problem = json_text_problem(text, kOrderedJsonLimits); !problem.empty())
        fail(DSI_ERR_PARSE, "conversation JSON: %s", problem.c_str());
    ojson doc;
    try {
        doc = ojson::parse(text.begin(), text.end());
    } catch (const ojson::exception &e) {
        fail(DSI_ERR_PARSE, "conversation JSON: %s", e.what());
    }
    if (!doc.is_object()) fail(DSI_ERR_PARSE, "conversation JSON: expected an object with \"messages\"");
    auto list = doc.find("messages");
    if (list == doc.end() || !list->is_array()) bad_field("messages", "expected an array");
    std::vector<Message> messages;
    for (size_t i = 0; i < list->size(); ++i) messages.push_back(parse_message((*list)[i], i));
    auto tools = doc.find("tools");
    if (tools != doc.end()) attach_tools(parse_tools(*tools, "tools"), messages);
    return messages;
}

// ---- rendering --------------------------------------------------------------------------

// find_last_user_index(): developer turns count as user turns; -1 when there is none.
std::ptrdiff_t last_user_index(const std::vector<Message> &messages) {
    for (size_t i = messages.size(); i-- > 0;) {
        if (messages[i].role == Role::User || messages[i].role == Role::Developer) {
            return static_cast<std::ptrdiff_t>(i);
        }
    }
    return -1;
}

// TOOLS_SYSTEM_TEMPLATE: each tool's function object as JSON, one a line.
std::string render_tools(const std::vector<ojson> &tools) {
    std::string out(kToolsPreamble);
    for (size_t i = 0; i < tools.size(); ++i) {
        if (i > 0) out += '\n';
        out += python_json_dumps(tools[i]);
    }
    return out + "\n</functions>\n";
}

// The "\n\n"-separated tools and response format of system and developer turns.
std::string render_instructions(const Message &msg) {
    std::string out;
    if (!msg.tools.empty()) out += "\n\n" + render_tools(msg.tools);
    if (!msg.response_format.is_null()) {
        out += "\n\n" + std::string(kResponseFormatPreamble) + python_json_dumps(msg.response_format);
    }
    return out;
}

// encode_arguments_to_dsml(): strings as they are, anything else as JSON.
std::string render_parameter(const std::string &name, const ojson &value) {
    bool is_string = value.is_string();
    return std::string(kDsmlOpen) + "parameter name=\"" + name + "\" string=\"" +
           (is_string ? "true" : "false") + "\">" +
           (is_string ? value.get<std::string>() : python_json_dumps(value)) +
           std::string(kDsmlClose) + "parameter>";
}

// tool_call_template and tool_calls_template, parameters and calls joined by "\n".
std::string render_tool_calls(const std::vector<ToolCall> &calls) {
    std::string out = std::string(kDsmlOpen) + "function_calls>\n";
    for (size_t i = 0; i < calls.size(); ++i) {
        if (i > 0) out += '\n';
        out += std::string(kDsmlOpen) + "invoke name=\"" + calls[i].name + "\">\n";
        bool first = true;
        for (const auto &item : calls[i].arguments.items()) {
            if (!first) out += '\n';
            first = false;
            out += render_parameter(item.key(), item.value());
        }
        out += "\n" + std::string(kDsmlClose) + "invoke>";
    }
    return out + "\n" + std::string(kDsmlClose) + "function_calls>";
}

// user_msg_template, then <think> only for the last user turn in thinking mode.
std::string render_user_turn(const std::string &body, bool opens_thinking) {
    return std::string(kUser) + body + std::string(kAssistant) +
           std::string(opens_thinking ? kThinkStart : kThinkEnd);
}

struct Conversation {
    const std::vector<Message> &messages;
    bool thinking;
    std::ptrdiff_t last_user;
    // first_tool[k]: the first of the run of tool turns that messages[k] belongs to, so
    // that each tool result finds its caller in O(1) (50k results stay linear).
    std::vector<size_t> first_tool;

    // k - last_user_idx, whose sign the reference tests for each role.
    std::ptrdiff_t from_last_user(size_t k) const { return static_cast<std::ptrdiff_t>(k) - last_user; }
};

// Role "tool": results of one assistant turn share a <function_results> block, opened
// by the first and closed by the one answering its last call; the reply then opens
// with <think> if this is after the last user turn in thinking mode, else </think>.
std::string render_tool_result(const Conversation &conv, size_t k) {
    const Message &msg = conv.messages[k];
    const size_t first = conv.first_tool[k];
    if (first == 0 || conv.messages[first - 1].role != Role::Assistant) {
        fail(DSI_ERR_PARSE, "messages[%zu]: a tool result must follow an assistant turn with tool_calls",
             msg.index);
    }
    const Message &caller = conv.messages[first - 1];
    size_t order = k - first + 1;
    if (caller.tool_calls.size() < order) {
        fail(DSI_ERR_PARSE, "messages[%zu]: tool result %zu but messages[%zu] has %zu tool_calls",
             msg.index, order, caller.index, caller.tool_calls.size());
    }
    std::string out;
    if (order == 1) out += "\n\n<function_results>";
    out += "\n<result>" + msg.content + "</result>";
    if (order == caller.tool_calls.size()) {
        bool opens_thinking = conv.thinking && conv.from_last_user(k) >= 0;
        out += "\n</function_results>\n\n" + std::string(opens_thinking ? kThinkStart : kThinkEnd);
    }
    return out;
}

// Role "assistant": in thinking mode a turn after the last user turn keeps its
// reasoning and </think>; earlier turns lose both. Then content, tool calls, EOS.
std::string render_assistant(const Conversation &conv, size_t k) {
    const Message &msg = conv.messages[k];
    std::string out;
    if (conv.thinking && conv.from_last_user(k) > 0) {
        if (msg.reasoning.empty() && msg.tool_calls.empty()) {
            fail(DSI_ERR_PARSE,
                 "messages[%zu]: in thinking mode an assistant turn after the last user turn needs "
                 "reasoning_content or tool_calls",
                 msg.index);
        }
        out += msg.reasoning + std::string(kThinkEnd);
    }
    out += msg.content;
    if (!msg.tool_calls.empty()) out += "\n\n" + render_tool_calls(msg.tool_calls);
    return out + std::string(kEos);
}

std::string render_message(const Conversation &conv, size_t k) {
    const Message &msg = conv.messages[k];
    bool opens_thinking = conv.thinking && conv.from_last_user(k) == 0;
    switch (msg.role) {
        case Role::System: return msg.content + render_instructions(msg);
        case Role::Developer:
            return render_user_turn(render_instructions(msg) + "\n\n# The user's message is: " + msg.content,
                                    opens_thinking);
        case Role::User: return render_user_turn(msg.content, opens_thinking);
        case Role::Tool: return render_tool_result(conv, k);
        case Role::Assistant: return render_assistant(conv, k);
    }
    fail(DSI_ERR_INTERNAL, "render_message: unknown role");
}

}  // namespace

std::string python_json_dumps(const nlohmann::ordered_json &value) {
    std::string out;
    dump(out, value);
    return out;
}

std::string render(std::string_view conversation_json, bool thinking) {
    // The reference's drop_thinking_messages() needs no counterpart: the reasoning it
    // strips is never rendered before the last user turn. It also loses developer turns
    // before that one, after which the reference fails (its loop runs past the shortened
    // list); such developer turns are rendered here, as with drop_thinking=False.
    std::vector<Message> messages = parse_conversation(conversation_json);
    Conversation conv{messages, thinking, last_user_index(messages), std::vector<size_t>(messages.size())};
    for (size_t k = 0; k < messages.size(); ++k)
        conv.first_tool[k] = k > 0 && messages[k - 1].role == Role::Tool ? conv.first_tool[k - 1] : k;
    std::string prompt(kBos);
    for (size_t k = 0; k < messages.size(); ++k) prompt += render_message(conv, k);
    return prompt;
}

}  // namespace dsi::chat
