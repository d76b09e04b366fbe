// labels: tokenizer cpu badinput
// DeepSeek-V3.2 chat encoding (dsi_chat_render) and reply parsing (dsi_chat_parse and
// the incremental dsi_chat_parser). The reference is DeepSeek's encoder,
// encoding/encoding_dsv32.py in the deepseek-ai/DeepSeek-V3.2 model repository.
//
// Parse results always carry every field: {"reasoning_content": string in thinking
// mode, null otherwise, "content": string, "tool_calls": [{"name", "arguments"}]}.
#include "dsinfer.h"
#include "text/chat.h"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using ojson = nlohmann::ordered_json;

namespace {

const std::string kBos = "<｜begin▁of▁sentence｜>";
const std::string kEos = "<｜end▁of▁sentence｜>";

std::string read_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    REQUIRE_MESSAGE(in.good(), "cannot open " << path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

struct Outcome {
    dsi_status status = DSI_OK;
    std::string text;   // the prompt, or the result JSON
    std::string error;  // dsi_last_error() on failure
};

Outcome finish_call(dsi_status status, char *out, size_t len) {
    Outcome o;
    o.status = status;
    if (status == DSI_OK) o.text.assign(out, len);
    else o.error = dsi_last_error();
    dsi_free(out);
    return o;
}

Outcome render(const std::string &json, unsigned flags) {
    char *prompt = nullptr;
    size_t len = 0;
    dsi_status st = dsi_chat_render(json.data(), json.size(), flags, &prompt, &len);
    return finish_call(st, prompt, len);
}

Outcome parse(const std::string &reply, unsigned flags) {
    char *json = nullptr;
    size_t len = 0;
    dsi_status st = dsi_chat_parse(reply.data(), reply.size(), flags, &json, &len);
    return finish_call(st, json, len);
}

// Appends `events`, merging texts of one type that follow each other, so that the
// events of different splits of one reply compare equal.
void merge_events(ojson &into, const ojson &events) {
    for (const auto &e : events) {
        if (e["type"] != "tool_call" && !into.empty() && into.back()["type"] == e["type"]) {
            into.back()["text"] = into.back()["text"].get<std::string>() + e["text"].get<std::string>();
        } else {
            into.push_back(e);
        }
    }
}

struct Streamed {
    dsi_status status = DSI_OK;
    ojson events = ojson::array();
    std::string result;
    std::string error;
};

// Feeds `reply` in pieces whose sizes come from `next_size` (0: the rest at once).
template <class NextSize>
Streamed stream(const std::string &reply, unsigned flags, NextSize next_size) {
    Streamed s;
    dsi_chat_parser *parser = nullptr;
    REQUIRE(dsi_chat_parser_create(flags, &parser) == DSI_OK);
    for (size_t pos = 0; pos < reply.size() && s.status == DSI_OK;) {
        size_t n = next_size();
        n = n == 0 ? reply.size() - pos : std::min(n, reply.size() - pos);
        char *events = nullptr;
        s.status = dsi_chat_parser_push(parser, reply.data() + pos, n, &events);
        if (s.status == DSI_OK) merge_events(s.events, ojson::parse(events));
        dsi_free(events);
        pos += n;
    }
    if (s.status == DSI_OK) {
        char *events = nullptr, *result = nullptr;
        s.status = dsi_chat_parser_finish(parser, &events, &result);
        if (s.status == DSI_OK) {
            merge_events(s.events, ojson::parse(events));
            s.result = result;
        }
        dsi_free(events);
        dsi_free(result);
    }
    if (s.status != DSI_OK) s.error = dsi_last_error();
    dsi_chat_parser_free(parser);
    return s;
}

Streamed stream_by(const std::string &reply, unsigned flags, size_t chunk) {
    return stream(reply, flags, [chunk] { return chunk; });
}

// The events a result implies: its reasoning, its content, then its tool calls.
ojson events_of(const ojson &result) {
    ojson events = ojson::array();
    for (const char *field : {"reasoning_content", "content"}) {
        const ojson &text = result[field];
        if (text.is_string() && !text.get<std::string>().empty()) {
            events.push_back({{"type", field == std::string("content") ? "content" : "reasoning"}, {"text", text}});
        }
    }
    for (const auto &call : result["tool_calls"]) {
        events.push_back({{"type", "tool_call"}, {"name", call["name"]}, {"arguments", call["arguments"]}});
    }
    return events;
}

// Whole, 1 byte, 7 bytes and random pieces must agree on status, error, events, result.
void check_splits_agree(const std::string &reply, unsigned flags, uint32_t seed = 1) {
    Streamed whole = stream_by(reply, flags, 0);
    Outcome parsed = parse(reply, flags);
    CHECK(parsed.status == whole.status);
    CHECK(parsed.error == whole.error);
    CHECK(parsed.text == whole.result);
    std::mt19937 rng(seed);
    std::vector<Streamed> splits = {stream_by(reply, flags, 1), stream_by(reply, flags, 7),
                                    stream(reply, flags, [&rng] { return size_t(1 + rng() % 13); })};
    for (const Streamed &s : splits) {
        CHECK(s.status == whole.status);
        CHECK(s.error == whole.error);
        CHECK(s.result == whole.result);
        if (whole.status == DSI_OK) CHECK(s.events == whole.events);  // a failed push's events are lost
    }
    if (whole.status == DSI_OK) CHECK(whole.events == events_of(ojson::parse(whole.result)));
}

// `message` names byte `at` as the place of the error.
void check_error_at(const Outcome &o, size_t at, const std::string &what) {
    CHECK(o.status == DSI_ERR_PARSE);
    CHECK_MESSAGE(o.error.find(what) != std::string::npos, o.error);
    CHECK_MESSAGE(o.error.find("at byte " + std::to_string(at)) != std::string::npos, o.error);
}

std::string first_difference(const std::string &a, const std::string &b) {
    size_t i = 0;
    while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
    return "first difference at byte " + std::to_string(i) + ": got \"" + a.substr(i, 60) + "\" expected \"" +
           b.substr(i, 60) + "\"";
}

std::string conversation(const ojson &doc, size_t n_messages) {
    ojson out = doc;
    out["messages"] = ojson::array();
    for (size_t i = 0; i < n_messages; ++i) out["messages"].push_back(doc["messages"][i]);
    return out.dump();
}

}  // namespace

TEST_CASE("render: DeepSeek's golden conversation, byte for byte") {
    std::string input = read_file(DSI_TEST_DATA_DIR "/golden/chat/dsv32-tools-input.json");
    std::string expected = read_file(DSI_TEST_DATA_DIR "/golden/chat/dsv32-tools-output.txt");
    // DeepSeek's test compares with f.read().strip(): the file's last newline is not prompt.
    while (!expected.empty() && expected.back() == '\n') expected.pop_back();
    Outcome o = render(input, DSI_CHAT_THINKING);
    REQUIRE_MESSAGE(o.status == DSI_OK, o.error);
    CHECK_MESSAGE(o.text == expected, first_difference(o.text, expected));
}

TEST_CASE("render: non-thinking mode follows the reference's rules") {
    std::string input = R"({"messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+3.5?"},
        {"role": "assistant", "reasoning_content": "never shown in chat mode", "content": "Let me add.",
         "tool_calls": [{"type": "function", "function": {"name": "add",
           "arguments": "{\"a\": 2, \"b\": 3.5, \"opts\": {\"exact\": true, \"tags\": [\"x\", null]}, \"note\": \"plain\"}"}}]},
        {"role": "tool", "tool_call_id": "1", "content": "5.5"},
        {"role": "assistant", "content": "It is 5.5."},
        {"role": "user", "content": "Thanks"}]})";
    std::string expected =
        // encode_messages(): bos_token; system_msg_template "{content}".
        kBos + "You are terse." +
        // user: user_msg_template "<｜User｜>{content}<｜Assistant｜>", then thinking_end_token
        // because thinking_mode is "chat".
        "<｜User｜>What is 2+3.5?<｜Assistant｜></think>" +
        // assistant: no thinking_part in chat mode; content; "\n\n" + tool_calls_template,
        // encode_arguments_to_dsml(): strings raw with string="true", the rest to_json()
        // (json.dumps, ", " and ": ") with string="false", joined by "\n"; then EOS.
        "Let me add.\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"add\">\n"
        "<｜DSML｜parameter name=\"a\" string=\"false\">2</｜DSML｜parameter>\n"
        "<｜DSML｜parameter name=\"b\" string=\"false\">3.5</｜DSML｜parameter>\n"
        "<｜DSML｜parameter name=\"opts\" string=\"false\">{\"exact\": true, \"tags\": [\"x\", null]}"
        "</｜DSML｜parameter>\n"
        "<｜DSML｜parameter name=\"note\" string=\"true\">plain</｜DSML｜parameter>\n"
        "</｜DSML｜invoke>\n</｜DSML｜function_calls>" +
        kEos +
        // tool: "\n\n<function_results>" for the first result, tool_output_template
        // "\n<result>{content}</result>", "\n</function_results>" after the last, then
        // "\n\n" + thinking_end_token (chat mode).
        "\n\n<function_results>\n<result>5.5</result>\n</function_results>\n\n</think>" +
        // assistant: content + EOS.
        "It is 5.5." + kEos +
        // last user: thinking_end_token again, as thinking_mode is "chat".
        "<｜User｜>Thanks<｜Assistant｜></think>";
    Outcome o = render(input, 0);
    REQUIRE_MESSAGE(o.status == DSI_OK, o.error);
    CHECK_MESSAGE(o.text == expected, first_difference(o.text, expected));
}

TEST_CASE("render: thinking mode drops earlier reasoning (DeepSeek's README example)") {
    std::string input = R"({"messages": [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Hello! I am DeepSeek.", "reasoning_content": "thinking..."},
        {"role": "user", "content": "1+1=?"}]})";
    Outcome o = render(input, DSI_CHAT_THINKING);
    REQUIRE_MESSAGE(o.status == DSI_OK, o.error);
    CHECK(o.text == kBos + "<｜User｜>hello<｜Assistant｜></think>Hello! I am DeepSeek." + kEos +
                        "<｜User｜>1+1=?<｜Assistant｜><think>");
}

TEST_CASE("render: tools without a system message, developer turns, response_format") {
    std::string tools = R"([{"type": "function", "function": {"name": "f", "parameters": {}}}])";
    Outcome o = render(R"({"tools": )" + tools + R"(, "messages": [{"role": "user", "content": "hi"}]})", 0);
    REQUIRE_MESSAGE(o.status == DSI_OK, o.error);
    // An empty system turn carries the tools, as when the first message is the system one.
    CHECK(o.text.rfind(kBos + "\n\n## Tools\n\n", 0) == 0);
    std::string tail = "<functions>\n{\"name\": \"f\", \"parameters\": {}}\n</functions>\n"
                       "<｜User｜>hi<｜Assistant｜></think>";
    CHECK(o.text.substr(o.text.size() - tail.size()) == tail);

    // A developer turn is a user turn with its instructions first. (Before the last user
    // turn in thinking mode the reference fails on one; it is rendered as in chat mode.)
    std::string dev = R"({"messages": [
        {"role": "developer", "content": "be brief", "response_format": {"type": "json_object"}},
        {"role": "user", "content": "q"}]})";
    std::string dev_turn = "<｜User｜>\n\n## Response Format:\n\nYou MUST strictly adhere to the following "
                           "schema to reply:\n{\"type\": \"json_object\"}\n\n# The user's message is: be brief"
                           "<｜Assistant｜></think>";
    CHECK(render(dev, 0).text == kBos + dev_turn + "<｜User｜>q<｜Assistant｜></think>");
    CHECK(render(dev, DSI_CHAT_THINKING).text == kBos + dev_turn + "<｜User｜>q<｜Assistant｜><think>");
}

TEST_CASE("python_json_dumps: Python's separators, escapes and float repr") {
    auto dumps = [](const std::string &json) { return dsi::chat::python_json_dumps(ojson::parse(json)); };
    // Expected strings are what CPython 3.11's json.dumps(json.loads(x), ensure_ascii=False) prints.
    CHECK(dumps(R"({"b": 1, "a": [1.0, 1e15, 1e16, 1.5e16, 0.0001, 1e-5, -0.0, 123.456, 5e-324]})") ==
          R"({"b": 1, "a": [1.0, 1000000000000000.0, 1e+16, 1.5e+16, 0.0001, 1e-05, -0.0, 123.456, 5e-324]})");
    CHECK(dumps("[1.7976931348623157e308, 0.1, 100.0, 2.5e-7, 18446744073709551615, -5]") ==
          "[1.7976931348623157e+308, 0.1, 100.0, 2.5e-07, 18446744073709551615, -5]");
    CHECK(dumps(R"({"s": "é\u0001\t\"\\/\u007f😀", "e": {}, "l": [], "n": null, "t": true})") ==
          "{\"s\": \"é\\u0001\\t\\\"\\\\/\x7f😀\", \"e\": {}, \"l\": [], \"n\": null, \"t\": true}");
}

TEST_CASE("parse: round trip of the golden assistant turns") {
    ojson doc = ojson::parse(read_file(DSI_TEST_DATA_DIR "/golden/chat/dsv32-tools-input.json"));
    const ojson &messages = doc["messages"];
    size_t with_tool_calls = 0;
    for (size_t i = 0; i < messages.size(); ++i) {
        const ojson &msg = messages[i];
        if (msg["role"] != "assistant") continue;
        CAPTURE(i);
        // What the model emits for turn i: the prompt with it, less the prompt before it.
        Outcome before = render(conversation(doc, i), DSI_CHAT_THINKING);
        Outcome with = render(conversation(doc, i + 1), DSI_CHAT_THINKING);
        REQUIRE(before.status == DSI_OK);
        REQUIRE(with.status == DSI_OK);
        REQUIRE(with.text.rfind(before.text, 0) == 0);
        std::string reply = with.text.substr(before.text.size());

        Outcome parsed = parse(reply, DSI_CHAT_THINKING);
        REQUIRE_MESSAGE(parsed.status == DSI_OK, parsed.error);
        ojson result = ojson::parse(parsed.text);
        CHECK(result["reasoning_content"] == msg["reasoning_content"]);
        CHECK(result["content"] == msg.value("content", ""));
        ojson expected = ojson::array();
        for (const auto &call : msg.value("tool_calls", ojson::array())) {
            expected.push_back({{"name", call["function"]["name"]},
                                {"arguments", ojson::parse(call["function"]["arguments"].get<std::string>())}});
        }
        CHECK(result["tool_calls"] == expected);
        with_tool_calls += expected.empty() ? 0 : 1;
        check_splits_agree(reply, DSI_CHAT_THINKING, static_cast<uint32_t>(i));
    }
    CHECK(with_tool_calls == 3);
}

TEST_CASE("parser: streamed pieces give the whole text's events and result") {
    const std::string block =
        "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"search\">\n"
        "<｜DSML｜parameter name=\"query\" string=\"true\">北京 <b>天气</b> \"today\"\n2 lines</｜DSML｜parameter>\n"
        "<｜DSML｜parameter name=\"n\" string=\"false\">3</｜DSML｜parameter>\n"
        "<｜DSML｜parameter name=\"opts\" string=\"false\">{\"deep\": [true, null, 2.5]}</｜DSML｜parameter>\n"
        "</｜DSML｜invoke>\n<｜DSML｜invoke name=\"noop\">\n\n</｜DSML｜invoke>\n</｜DSML｜function_calls>";
    const std::vector<std::pair<std::string, unsigned>> replies = {
        {"Let me think 🤔 about <tags> and </thin k>.</think>I'll search." + block + kEos + "ignored", DSI_CHAT_THINKING},
        {"a <b> c\n\nd <｜not dsml｜> e\n\n\nf <｜end of｜>" + kEos, 0},
        {"Plain content, no end token, trailing newlines\n\n", 0},
        {"Reasoning cut off by max_tokens <", DSI_CHAT_THINKING},
        {"No reasoning</think>" + block, DSI_CHAT_THINKING},
        {"", 0},
    };
    for (const auto &[reply, flags] : replies) {
        CAPTURE(reply);
        check_splits_agree(reply, flags);
    }

    Outcome o = parse(replies[0].first, DSI_CHAT_THINKING);
    REQUIRE_MESSAGE(o.status == DSI_OK, o.error);
    ojson expected = ojson::parse(R"({"reasoning_content": "Let me think 🤔 about <tags> and </thin k>.",
        "content": "I'll search.",
        "tool_calls": [{"name": "search", "arguments": {"query": "北京 <b>天气</b> \"today\"\n2 lines", "n": 3,
                                                        "opts": {"deep": [true, null, 2.5]}}},
                       {"name": "noop", "arguments": {}}]})");
    CHECK(ojson::parse(o.text) == expected);
    o = parse(replies[1].first, 0);
    CHECK(ojson::parse(o.text) ==
          ojson::parse(R"({"reasoning_content": null, "content": "a <b> c\n\nd <｜not dsml｜> e\n\n\nf <｜end of｜>",
                           "tool_calls": []})"));
}

TEST_CASE("parser: events come as soon as they are certain") {
    dsi_chat_parser *parser = nullptr;
    REQUIRE(dsi_chat_parser_create(0, &parser) == DSI_OK);
    auto push = [&](const std::string &piece) {
        char *events = nullptr;
        REQUIRE(dsi_chat_parser_push(parser, piece.data(), piece.size(), &events) == DSI_OK);
        ojson out = ojson::parse(events);
        dsi_free(events);
        return out;
    };
    CHECK(push("Hello wor") == ojson::parse(R"([{"type": "content", "text": "Hello wor"}])"));
    CHECK(push("ld\n") == ojson::parse(R"([{"type": "content", "text": "ld"}])"));  // "\n" may open the block
    // The "\n" is certain once a byte other than "\n" follows; half of 明 waits for the rest.
    CHECK(push("\xE6") == ojson::parse(R"([{"type": "content", "text": "\n"}])"));
    CHECK(push("\x98\x8E") == ojson::parse(R"([{"type": "content", "text": "明"}])"));
    CHECK(push("\n\n<｜DS") == ojson::array());
    CHECK(push("ML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n") == ojson::array());
    CHECK(push("<｜DSML｜parameter name=\"x\" string=\"false\">4") == ojson::array());
    CHECK(push("2</｜DSML｜parameter>\n</｜DSML｜invoke>") ==
          ojson::parse(R"([{"type": "tool_call", "name": "f", "arguments": {"x": 42}}])"));
    CHECK(push("\n</｜DSML｜function_calls>") == ojson::array());
    char *events = nullptr, *result = nullptr;
    REQUIRE(dsi_chat_parser_finish(parser, &events, &result) == DSI_OK);
    CHECK(ojson::parse(events) == ojson::array());
    CHECK(ojson::parse(result) == ojson::parse(R"({"reasoning_content": null, "content": "Hello world\n明",
                                                   "tool_calls": [{"name": "f", "arguments": {"x": 42}}]})"));
    dsi_free(events);
    dsi_free(result);
    // The reply has ended.
    CHECK(dsi_chat_parser_push(parser, "x", 1, &events) == DSI_ERR_INVALID_ARGUMENT);
    dsi_chat_parser_free(parser);
}

TEST_CASE("parse: malformed DSML is DSI_ERR_PARSE at its byte") {
    const std::string open = "Hi\n\n<｜DSML｜function_calls>\n";
    const std::string invoke = "<｜DSML｜invoke name=\"f\">\n";
    const std::string close = "</｜DSML｜invoke>\n</｜DSML｜function_calls>";
    auto at = [](const std::string &text, const std::string &needle) { return text.find(needle); };
    struct Case {
        std::string reply;
        size_t at;
        std::string what;
    };
    std::vector<Case> cases;
    auto add = [&](const std::string &reply, const std::string &needle, const std::string &what) {
        cases.push_back({reply, at(reply, needle), what});
    };
    std::string r;
    r = open + "<｜DSML｜invoke name=\"f\"\n";
    add(r, "<｜DSML｜invoke", "unterminated DSML tag");
    r = open + "<｜DSML｜invoke>\n" + close;
    add(r, "<｜DSML｜invoke", "missing name attribute on <｜DSML｜invoke>");
    r = open + "<｜DSML｜invoke name=\"\">\n" + close;
    add(r, "<｜DSML｜invoke", "empty name attribute");
    r = open + invoke + "</｜DSML｜function_calls>";
    add(r, "</｜DSML｜function_calls>", "mismatched closing tag </｜DSML｜function_calls>");
    r = open + invoke + "<｜DSML｜parameter name=\"a\" string=\"true\">x</｜DSML｜invoke>\n" + close;
    add(r, "</｜DSML｜invoke>", "mismatched closing tag </｜DSML｜invoke>");
    r = open + invoke + "<｜DSML｜parameter name=\"a\" string=\"maybe\">x</｜DSML｜parameter>\n" + close;
    add(r, "<｜DSML｜parameter", "string=\"maybe\"");
    r = open + invoke + "<｜DSML｜parameter name=\"a\">x</｜DSML｜parameter>\n" + close;
    add(r, "<｜DSML｜parameter", "missing string attribute");
    r = open + "<｜DSML｜invoke name=\"f\" id=\"3\">\n" + close;
    add(r, "<｜DSML｜invoke", "unknown attribute id");
    r = open + "<｜DSML｜invoke name=\"f\"id=\"3\">\n" + close;
    add(r, "<｜DSML｜invoke", "malformed DSML tag");
    r = open + invoke + "<｜DSML｜parameter name=\"a\" string=\"false\">[1, 2,]</｜DSML｜parameter>\n" + close;
    add(r, ",]", "not JSON");  // nlohmann reports the ']' after the comma
    cases.back().at += 1;
    r = open + invoke + "<｜DSML｜parameter name=\"a\" string=\"false\"></｜DSML｜parameter>\n" + close;
    add(r, "</｜DSML｜parameter>", "not JSON");
    r = open + invoke + "<｜DSML｜parameter name=\"a\" string=\"true\">1</｜DSML｜parameter>\n"
                        "<｜DSML｜parameter name=\"a\" string=\"true\">2</｜DSML｜parameter>\n" + close;
    add(r, "<｜DSML｜parameter name=\"a\" string=\"true\">2", "duplicate parameter \"a\"");
    r = open + invoke + close + " oops";
    add(r, "oops", "unexpected text");
    r = open + invoke + "stray\n" + close;
    add(r, "stray", "unexpected text");
    r = open + invoke;
    add(r, "<｜DSML｜invoke", "unterminated <｜DSML｜invoke>");
    r = open + invoke + "<｜DSML｜parameter name=\"a\" string=\"true\">x" + kEos;
    add(r, "<｜DSML｜parameter", "unterminated <｜DSML｜parameter>");
    r = open;
    add(r, "<｜DSML｜function_calls", "unterminated <｜DSML｜function_calls>");
    r = "text <｜DSML｜invoke name=\"f\">";
    add(r, "<｜DSML｜invoke", "outside a <｜DSML｜function_calls> block");
    r = "text </｜DSML｜function_calls>";
    add(r, "</｜DSML｜", "outside a <｜DSML｜function_calls> block");
    r = open + "<｜DSML｜function_calls>\n";
    add(r, "<｜DSML｜function_calls>\n", "unexpected <｜DSML｜function_calls>");
    cases.back().at = r.rfind("<｜DSML｜function_calls>");
    r = "<｜DSML｜foo>";
    add(r, "<｜DSML｜foo", "unknown DSML tag \"foo\"");
    r = open + "<｜DSML｜invoke name=\"f" + std::string(5000, 'x');
    add(r, "<｜DSML｜invoke", "no '>' within");
    r = "ab\xFF" "cd";
    add(r, "\xFF", "invalid UTF-8");
    r = "ab\xE6\x98";
    add(r, "\xE6", "invalid UTF-8");
    r = "over\xC0\xAFlong";
    add(r, "\xC0", "invalid UTF-8");
    r = open + "<｜DSML｜invoke name=\"f\xED\xA0\x80\">\n" + close;
    add(r, "\xED", "invalid UTF-8");

    for (const Case &c : cases) {
        CAPTURE(c.reply);
        REQUIRE(c.at != std::string::npos);
        check_error_at(parse(c.reply, 0), c.at, c.what);
        check_splits_agree(c.reply, 0);
    }
    // In thinking mode the same text is reasoning until </think>: no DSML there.
    CHECK(parse("text <｜DSML｜invoke name=\"f\">", DSI_CHAT_THINKING).status == DSI_OK);
}

TEST_CASE("render: malformed conversations name the message and the field") {
    const std::string call = R"({"type": "function", "function": {"name": "f", "arguments": "{}"}})";
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"{not json", "conversation JSON"},
        {"[1, 2]", "conversation JSON: expected an object"},
        {R"({"messages": {}})", "messages: expected an array"},
        {R"({"messages": [5]})", "messages[0]: expected an object"},
        {R"({"messages": [{"content": "a"}]})", "messages[0].role: expected a string"},
        {R"({"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "x"}]})",
         "messages[1].role: unknown role \"robot\""},
        {R"({"messages": [{"role": "user", "content": 5}]})", "messages[0].content: expected a string"},
        {R"({"messages": [{"role": "user"}]})", "messages[0].content: expected a string"},
        {R"({"messages": [{"role": "system", "content": ["x"]}]})", "messages[0].content: expected a string or null"},
        {R"({"messages": [{"role": "assistant", "reasoning_content": 1}]})",
         "messages[0].reasoning_content: expected a string or null"},
        {R"({"messages": [{"role": "assistant", "tool_calls": {}}]})", "messages[0].tool_calls: expected an array"},
        {R"({"messages": [{"role": "assistant", "tool_calls": [{"name": "f"}]}]})",
         "messages[0].tool_calls[0].function: expected an object"},
        {R"({"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}]})",
         "messages[0].tool_calls[0].function.name: expected a string"},
        {R"({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}]})",
         "messages[0].tool_calls[0].function.arguments: missing"},
        {R"({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{x"}}]}]})",
         "messages[0].tool_calls[0].function.arguments: invalid JSON"},
        {R"({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}]})",
         "messages[0].tool_calls[0].function.arguments: expected a JSON object"},
        {R"({"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "r"}]})",
         "messages[1]: a tool result must follow an assistant turn with tool_calls"},
        {R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [)" + call +
             R"(]}, {"role": "tool", "content": "1"}, {"role": "tool", "content": "2"}]})",
         "messages[3]: tool result 2 but messages[1] has 1 tool_calls"},
        {R"({"tools": [{"name": "f"}], "messages": []})", "tools[0].function: expected an object"},
        {R"({"tools": {}, "messages": []})", "tools: expected an array"},
        {R"({"tools": [{"function": {}}], "messages": [{"role": "system", "tools": [{"function": {}}]}]})",
         "messages[0].tools: tools are also given at the top level"},
        {R"({"messages": [{"role": "developer", "content": ""}]})", "messages[0].content: empty"},
        {R"({"messages": [{"role": "system", "response_format": "json"}]})",
         "messages[0].response_format: expected an object"},
    };
    for (const auto &[input, what] : cases) {
        CAPTURE(input);
        Outcome o = render(input, 0);
        CHECK(o.status == DSI_ERR_PARSE);
        CHECK_MESSAGE(o.error.find(what) != std::string::npos, o.error);
    }
    // The reference asserts that, in thinking mode, a turn after the last user turn has
    // reasoning_content or tool_calls.
    Outcome o = render(R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})",
                       DSI_CHAT_THINKING);
    CHECK(o.status == DSI_ERR_PARSE);
    CHECK_MESSAGE(o.error.find("messages[1]: in thinking mode") != std::string::npos, o.error);
}

TEST_CASE("C API: NULL and bad arguments") {
    char *out = nullptr;
    const char *json = R"({"messages": []})";
    CHECK(dsi_chat_render(nullptr, 0, 0, &out, nullptr) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(dsi_chat_render(json, std::strlen(json), 0, nullptr, nullptr) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(dsi_chat_render(json, std::strlen(json), 0x10, &out, nullptr) == DSI_ERR_INVALID_ARGUMENT);
    REQUIRE(dsi_chat_render(json, std::strlen(json), 0, &out, nullptr) == DSI_OK);
    CHECK(std::string(out) == kBos);
    dsi_free(out);

    CHECK(dsi_chat_parse(nullptr, 3, 0, &out, nullptr) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(dsi_chat_parse("x", 1, 0, nullptr, nullptr) == DSI_ERR_INVALID_ARGUMENT);
    REQUIRE(dsi_chat_parse(nullptr, 0, DSI_CHAT_THINKING, &out, nullptr) == DSI_OK);
    CHECK(ojson::parse(out) == ojson::parse(R"({"reasoning_content": "", "content": "", "tool_calls": []})"));
    dsi_free(out);

    dsi_chat_parser *parser = nullptr;
    char *events = nullptr, *result = nullptr;
    CHECK(dsi_chat_parser_create(0, nullptr) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(dsi_chat_parser_push(nullptr, "x", 1, &events) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(dsi_chat_parser_finish(nullptr, &events, &result) == DSI_ERR_INVALID_ARGUMENT);
    dsi_chat_parser_free(nullptr);

    // A failure is sticky.
    REQUIRE(dsi_chat_parser_create(0, &parser) == DSI_OK);
    CHECK(dsi_chat_parser_push(parser, nullptr, 1, &events) == DSI_ERR_INVALID_ARGUMENT);
    CHECK(dsi_chat_parser_push(parser, "\xFF", 1, &events) == DSI_ERR_PARSE);
    std::string first = dsi_last_error();
    CHECK(dsi_chat_parser_push(parser, "ok", 2, &events) == DSI_ERR_PARSE);
    CHECK(dsi_chat_parser_finish(parser, &events, &result) == DSI_ERR_PARSE);
    CHECK(std::string(dsi_last_error()) == first);
    dsi_chat_parser_free(parser);
}

TEST_CASE("fuzz: truncated and corrupted replies fail cleanly, the same for any split") {
    const std::string reply =
        "Need the weather 🌤️ first.</think>Checking.\n\n<｜DSML｜function_calls>\n"
        "<｜DSML｜invoke name=\"get_weather\">\n"
        "<｜DSML｜parameter name=\"location\" string=\"true\">杭州</｜DSML｜parameter>\n"
        "<｜DSML｜parameter name=\"days\" string=\"false\">[1, 2.5, {\"x\": null}]</｜DSML｜parameter>\n"
        "</｜DSML｜invoke>\n</｜DSML｜function_calls>" +
        kEos;
    REQUIRE(parse(reply, DSI_CHAT_THINKING).status == DSI_OK);
    std::mt19937 rng(20251201);
    auto check = [&](const std::string &text, unsigned flags) {
        Outcome o = parse(text, flags);
        CHECK((o.status == DSI_OK || o.status == DSI_ERR_PARSE));
        Streamed s = stream(text, flags, [&rng] { return size_t(1 + rng() % 9); });
        CHECK(s.status == o.status);
        CHECK(s.error == o.error);
        CHECK(s.result == o.text);
    };
    for (size_t n = 0; n <= reply.size(); ++n) check(reply.substr(0, n), DSI_CHAT_THINKING);
    for (int round = 0; round < 400; ++round) {
        std::string text = reply;
        int edits = 1 + static_cast<int>(rng() % 4);
        for (int e = 0; e < edits; ++e) {
            size_t pos = rng() % text.size();
            switch (rng() % 3) {
                case 0: text[pos] = static_cast<char>(rng() % 256); break;
                case 1: text.insert(pos, 1, "<>\"=/\n｜"[rng() % 8]); break;
                default: text.erase(pos, 1 + rng() % 8); break;
            }
            if (text.empty()) text = "x";
        }
        check(text, round % 2 ? DSI_CHAT_THINKING : 0);
    }
}
