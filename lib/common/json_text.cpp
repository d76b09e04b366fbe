#include "common/json_text.h"

#include "common/error.h"

#include <vector>

namespace dsi {

std::string json_text_problem(std::string_view text, const JsonTextLimits &limits) {
    struct Level {
        bool object;
        size_t members;
    };
    std::vector<Level> open;
    bool in_string = false, escaped = false;
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (c == '\0') return strformat("NUL byte at byte %zu", i);
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
            continue;
        }
        switch (c) {
            case '"': in_string = true; break;
            case '{':
            case '[':
                if (open.size() >= limits.max_depth)
                    return strformat("JSON nested deeper than %zu levels at byte %zu", limits.max_depth, i);
                open.push_back({c == '{', 1});
                break;
            case '}':
            case ']':
                if (!open.empty()) open.pop_back();
                break;
            case ',':
                if (!open.empty() && open.back().object && limits.max_object_members &&
                    ++open.back().members > limits.max_object_members)
                    return strformat("JSON object with more than %zu members at byte %zu",
                                     limits.max_object_members, i);
                break;
            default: break;
        }
    }
    return "";
}

}  // namespace dsi
