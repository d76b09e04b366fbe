// The OpenAI wire format: request bodies of /v1/chat/completions and /v1/completions
// checked and turned into a GenerationRequest, and the scheduler's raw text turned back
// into response objects and server-sent-event chunks.
#pragma once

#include "job.h"

#include "dsinfer.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace server {

// Ordered: tool-call arguments keep the order the model wrote them in.
using Json = nlohmann::ordered_json;

// An OpenAI-style error: {"error": {"message", "type", "param", "code"}} with an HTTP
// status. `param` names the offending field (e.g. "messages[2].role").
struct ApiError : std::runtime_error {
    ApiError(int status, std::string message, std::string param = "", std::string code = "");
    int status;
    std::string param;
    std::string code;
};

Json error_body(int status, const std::string &message, const std::string &param = "", const std::string &code = "");

// What the parsers need to know about the model being served.
struct ModelInfo {
    std::string id;               // the name /v1/models lists
    const dsi_tokenizer *tokenizer = nullptr;
    int32_t n_vocab = 0;
    int32_t bos = -1;             // put before a text prompt of /v1/completions, as
                                  // `dsinfer generate` does; -1: none
    int32_t n_ctx = 0;            // per request: prompt + reply
    bool test_hooks = false;      // --enable-test-hooks: accept test_forced_reply, test_delay_ms
};

struct ParsedRequest {
    GenerationRequest generation;
    bool chat = false;
    unsigned chat_flags = 0;      // DSI_CHAT_THINKING
    bool stream = false;
    bool include_usage = false;   // stream_options.include_usage
    std::string prompt_text;      // the rendered prompt (chat) or the prompt given
};

// Throws ApiError (400 for malformed JSON, 422 for a bad field, 400 with code
// context_length_exceeded for a prompt the context cannot hold).
ParsedRequest parse_chat_request(const std::string &body, const ModelInfo &model);
ParsedRequest parse_completion_request(const std::string &body, const ModelInfo &model);

// Turns the raw reply into chat deltas as it streams (reasoning, content, tool calls),
// through the library's incremental DSML parser.
class ChatStream {
public:
    ChatStream(unsigned chat_flags, std::string call_id_prefix);
    ~ChatStream();
    ChatStream(const ChatStream &) = delete;
    ChatStream &operator=(const ChatStream &) = delete;

    // The deltas ("delta" objects of chat.completion.chunk) for more reply text.
    std::vector<Json> push(const std::string &text);
    // The remaining deltas at the end of the reply.
    std::vector<Json> finish();
    bool saw_tool_calls() const { return n_tool_calls_ > 0; }

private:
    std::vector<Json> deltas(char *events_json);

    dsi_chat_parser *parser_ = nullptr;
    bool raw_ = false;  // the reply is not valid DSML: the rest streams as plain content
    std::string call_id_prefix_;
    int n_tool_calls_ = 0;
};

// The whole reply as a chat.completion "message" (reasoning, content, tool calls).
// *tool_calls tells whether the reply called tools (finish_reason "tool_calls").
Json chat_message(const std::string &reply, unsigned chat_flags, const std::string &call_id_prefix, bool *tool_calls);

Json usage_json(const Usage &u);

}  // namespace server
