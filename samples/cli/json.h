// Just enough JSON for the chat command: reading the chat parser's events and result,
// and writing the conversation that dsi_chat_render() takes. The CLI deliberately
// depends on nothing but the public C API of dsinfer.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace cli {

struct Json {
    enum Kind { Null, Bool, Number, String, Array, Object };
    Kind kind = Null;
    bool boolean = false;
    std::string text;  // a String's value, or a Number's literal as written
    std::vector<Json> items;
    std::vector<std::pair<std::string, Json>> members;  // in document order

    static Json parse(const std::string &source);  // throws Failure on malformed input
    static Json string(std::string s);
    static Json object();

    // The member `key` of an Object, or nullptr.
    const Json *get(const std::string &key) const;
    // The String member `key`, or "" when absent or not a string.
    std::string get_string(const std::string &key) const;
    Json &set(const std::string &key, Json value);

    std::string dump() const;
};

// `s` as a JSON string literal, quotes included.
std::string json_quote(const std::string &s);

}  // namespace cli
