// A linear pre-scan of JSON text before nlohmann parses it. nlohmann's parser is not
// recursive, but copying, dumping and our own walkers are, so nesting is bounded here;
// nlohmann also stops at a NUL byte as if the text ended there, so one is refused; and
// ordered_json looks keys up linearly, so objects bound for it have a member limit.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace dsi {

// Deeper than any real config, tokenizer, tool schema or argument, and shallow enough
// that recursion over the parsed value stays far inside a 256 KiB thread stack.
constexpr size_t kMaxJsonDepth = 128;

// Objects parsed into nlohmann::ordered_json: inserting n members costs O(n^2) string
// comparisons (ordered_map searches linearly), about 0.1 s at this bound.
constexpr size_t kMaxOrderedJsonMembers = 10000;

struct JsonTextLimits {
    size_t max_depth = kMaxJsonDepth;
    size_t max_object_members = 0;  // 0 = no limit
};

// "" when `text` respects the limits; otherwise what is wrong and its byte offset, e.g.
// "JSON nested deeper than 128 levels at byte 130". Does not otherwise validate JSON:
// nlohmann does that afterwards. O(text.size()).
std::string json_text_problem(std::string_view text, const JsonTextLimits &limits = JsonTextLimits());

}  // namespace dsi
