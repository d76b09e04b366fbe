#include "json.h"

#include "args.h"

#include <cstdint>
#include <cstdio>
#include <cstring>

namespace cli {
namespace {

// strchr() also finds the terminating NUL, which must not count as a member of `set`.
bool one_of(char c, const char *set) { return c != '\0' && std::strchr(set, c) != nullptr; }

class Reader {
public:
    explicit Reader(const std::string &s) : s_(s) {}

    Json document() {
        Json v = value();
        skip_space();
        if (pos_ != s_.size()) error("trailing characters");
        return v;
    }

private:
    [[noreturn]] void error(const char *what) const {
        throw Failure("malformed JSON from the library at byte " + std::to_string(pos_) + ": " + what);
    }

    void skip_space() {
        while (pos_ < s_.size() && one_of(s_[pos_], " \t\r\n")) ++pos_;
    }

    bool eat(char c) {
        skip_space();
        if (pos_ < s_.size() && s_[pos_] == c) {
            ++pos_;
            return true;
        }
        return false;
    }

    void expect(char c) {
        if (!eat(c)) error("unexpected character");
    }

    bool literal(const char *word) {
        const size_t n = std::strlen(word);
        if (s_.compare(pos_, n, word) != 0) return false;
        pos_ += n;
        return true;
    }

    Json value() {
        skip_space();
        if (pos_ >= s_.size()) error("unexpected end");
        Json v;
        const char c = s_[pos_];
        if (c == '{') {
            v.kind = Json::Object;
            ++pos_;
            if (eat('}')) return v;
            do {
                skip_space();
                std::string key = string_body();
                expect(':');
                v.members.emplace_back(std::move(key), value());
            } while (eat(','));
            expect('}');
        } else if (c == '[') {
            v.kind = Json::Array;
            ++pos_;
            if (eat(']')) return v;
            do v.items.push_back(value());
            while (eat(','));
            expect(']');
        } else if (c == '"') {
            v.kind = Json::String;
            v.text = string_body();
        } else if (literal("true")) {
            v.kind = Json::Bool;
            v.boolean = true;
        } else if (literal("false")) {
            v.kind = Json::Bool;
        } else if (literal("null")) {
            v.kind = Json::Null;
        } else {
            v.kind = Json::Number;
            const size_t start = pos_;
            while (pos_ < s_.size() && one_of(s_[pos_], "+-.0123456789eE")) ++pos_;
            if (pos_ == start) error("unexpected character");
            v.text = s_.substr(start, pos_ - start);
        }
        return v;
    }

    unsigned hex4() {
        if (pos_ + 4 > s_.size()) error("short \\u escape");
        unsigned v = 0;
        for (int i = 0; i < 4; ++i) {
            const char c = s_[pos_++];
            v <<= 4;
            if (c >= '0' && c <= '9') v |= static_cast<unsigned>(c - '0');
            else if (c >= 'a' && c <= 'f') v |= static_cast<unsigned>(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') v |= static_cast<unsigned>(c - 'A' + 10);
            else error("bad \\u escape");
        }
        return v;
    }

    static void put_utf8(std::string &out, unsigned cp) {
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            out += static_cast<char>(0xF0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        }
    }

    unsigned escaped_code_point() {
        unsigned cp = hex4();
        // A high surrogate followed by "\uDC00".."\uDFFF" encodes one code point.
        if (cp >= 0xD800 && cp < 0xDC00 && s_.compare(pos_, 2, "\\u") == 0) {
            const size_t save = pos_;
            pos_ += 2;
            const unsigned low = hex4();
            if (low >= 0xDC00 && low < 0xE000) return 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            pos_ = save;
        }
        return (cp >= 0xD800 && cp < 0xE000) ? 0xFFFD : cp;
    }

    std::string string_body() {
        if (pos_ >= s_.size() || s_[pos_] != '"') error("expected a string");
        ++pos_;
        std::string out;
        while (pos_ < s_.size() && s_[pos_] != '"') {
            const char c = s_[pos_++];
            if (c != '\\') {
                out += c;
                continue;
            }
            if (pos_ >= s_.size()) error("unterminated string");
            const char e = s_[pos_++];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': put_utf8(out, escaped_code_point()); break;
                default: error("bad escape");
            }
        }
        if (pos_ >= s_.size()) error("unterminated string");
        ++pos_;
        return out;
    }

    const std::string &s_;
    size_t pos_ = 0;
};

}  // namespace

Json Json::parse(const std::string &source) { return Reader(source).document(); }

Json Json::string(std::string s) {
    Json v;
    v.kind = String;
    v.text = std::move(s);
    return v;
}

Json Json::object() {
    Json v;
    v.kind = Object;
    return v;
}

const Json *Json::get(const std::string &key) const {
    for (const auto &m : members)
        if (m.first == key) return &m.second;
    return nullptr;
}

std::string Json::get_string(const std::string &key) const {
    const Json *v = get(key);
    return v && v->kind == String ? v->text : std::string();
}

Json &Json::set(const std::string &key, Json value) {
    for (auto &m : members)
        if (m.first == key) return m.second = std::move(value);
    members.emplace_back(key, std::move(value));
    return members.back().second;
}

std::string json_quote(const std::string &s) {
    std::string out = "\"";
    for (const char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (static_cast<unsigned char>(c) < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
                    out += buf;
                } else {
                    out += c;  // UTF-8 passes through unchanged
                }
        }
    }
    return out + "\"";
}

std::string Json::dump() const {
    switch (kind) {
        case Null: return "null";
        case Bool: return boolean ? "true" : "false";
        case Number: return text;
        case String: return json_quote(text);
        case Array: {
            std::string out = "[";
            for (size_t i = 0; i < items.size(); ++i) out += (i ? "," : "") + items[i].dump();
            return out + "]";
        }
        case Object: {
            std::string out = "{";
            for (size_t i = 0; i < members.size(); ++i)
                out += (i ? "," : "") + json_quote(members[i].first) + ":" + members[i].second.dump();
            return out + "}";
        }
    }
    return "null";
}

}  // namespace cli
