// DeepSeek-V3.2 chat encoding: a conversation in OpenAI-style JSON becomes the prompt
// text, byte-exact with DeepSeek's reference encoder (encoding/encoding_dsv32.py in the
// deepseek-ai/DeepSeek-V3.2 model repository). The DSML parser (dsml.h) reads replies.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

namespace dsi::chat {

// The special strings of the V3.2 format, shared by the renderer and the parser.
inline constexpr std::string_view kBos = "<｜begin▁of▁sentence｜>";
inline constexpr std::string_view kEos = "<｜end▁of▁sentence｜>";
inline constexpr std::string_view kUser = "<｜User｜>";
inline constexpr std::string_view kAssistant = "<｜Assistant｜>";
inline constexpr std::string_view kThinkStart = "<think>";
inline constexpr std::string_view kThinkEnd = "</think>";
inline constexpr std::string_view kDsmlOpen = "<｜DSML｜";    // starts a DSML tag
inline constexpr std::string_view kDsmlClose = "</｜DSML｜";  // starts a closing DSML tag

// Python's json.dumps(value, ensure_ascii=False): ", " and ": " separators, keys in
// their original order, floats as Python's repr. The reference encoder writes tool
// schemas and non-string tool arguments this way, so the prompt bytes depend on it.
std::string python_json_dumps(const nlohmann::ordered_json &value);

// Renders {"tools": [...], "messages": [...]} ("tools" optional) into the prompt, ending
// with the text that opens the assistant's reply. `thinking` selects thinking mode.
// Malformed input throws dsi::Error(DSI_ERR_PARSE) naming the message index and field.
std::string render(std::string_view conversation_json, bool thinking);

}  // namespace dsi::chat
