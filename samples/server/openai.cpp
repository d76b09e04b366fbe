#include "openai.h"

#include <cmath>
#include <random>

namespace server {
namespace {

const char *error_type(int status) {
    switch (status) {
        case 401: return "authentication_error";
        case 404: return "not_found_error";
        case 429: return "rate_limit_error";
        default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

// Compact JSON; bytes that are not UTF-8 become U+FFFD instead of throwing.
std::string dump(const Json &v) { return v.dump(-1, ' ', false, Json::error_handler_t::replace); }

[[noreturn]] void bad_field(const std::string &param, const std::string &what) {
    throw ApiError(422, param + ": " + what, param);
}

Json parse_body(const std::string &body) {
    Json doc;
    try {
        doc = Json::parse(body);
    } catch (const Json::parse_error &e) {
        throw ApiError(400, std::string("the request body is not valid JSON: ") + e.what());
    }
    if (!doc.is_object()) throw ApiError(400, "the request body must be a JSON object");
    return doc;
}

// The member `key`, or nullptr when absent or null (OpenAI clients send null for "unset").
const Json *member(const Json &doc, const char *key) {
    const auto it = doc.find(key);
    return it == doc.end() || it->is_null() ? nullptr : &*it;
}

double number(const Json &doc, const char *key, double fallback, double min, double max) {
    const Json *v = member(doc, key);
    if (!v) return fallback;
    if (!v->is_number()) bad_field(key, "expected a number");
    const double x = v->get<double>();
    if (!std::isfinite(x) || x < min || x > max)
        bad_field(key, "must be between " + dump(Json(min)) + " and " + dump(Json(max)) + ", got " + dump(*v));
    return x;
}

int64_t integer(const Json &doc, const char *key, int64_t fallback, int64_t min, int64_t max) {
    const Json *v = member(doc, key);
    if (!v) return fallback;
    if (!v->is_number_integer()) bad_field(key, "expected an integer");
    const bool negative = v->is_number_integer() && !v->is_number_unsigned() && v->get<int64_t>() < 0;
    if (negative ? v->get<int64_t>() < min : v->get<uint64_t>() > static_cast<uint64_t>(max))
        bad_field(key, "must be between " + std::to_string(min) + " and " + std::to_string(max) + ", got " + dump(*v));
    return v->get<int64_t>();
}

bool boolean(const Json &doc, const char *key, bool fallback) {
    const Json *v = member(doc, key);
    if (!v) return fallback;
    if (!v->is_boolean()) bad_field(key, "expected true or false");
    return v->get<bool>();
}

// Parameters this server does not implement: refused rather than silently ignored.
void refuse_unsupported(const Json &doc) {
    if (integer(doc, "n", 1, 1, 1) != 1) bad_field("n", "only 1 is supported");
    if (const Json *v = member(doc, "logprobs"); v && !(v->is_boolean() && !v->get<bool>()))
        bad_field("logprobs", "not supported");
    if (member(doc, "top_logprobs")) bad_field("top_logprobs", "not supported");
    if (boolean(doc, "echo", false)) bad_field("echo", "not supported");
    if (integer(doc, "best_of", 1, 1, 1) != 1) bad_field("best_of", "only 1 is supported");
    if (member(doc, "suffix")) bad_field("suffix", "not supported");
}

std::vector<int32_t> tokenize(const dsi_tokenizer *tok, const std::string &text, const char *param) {
    size_t n = 0;
    dsi_status st = dsi_tokenize(tok, text.data(), text.size(), DSI_TOKENIZE_PARSE_SPECIAL, nullptr, 0, &n);
    std::vector<int32_t> ids;
    if (st == DSI_ERR_BUFFER_TOO_SMALL || st == DSI_OK) {
        ids.resize(n);
        st = n == 0 ? DSI_OK : dsi_tokenize(tok, text.data(), text.size(), DSI_TOKENIZE_PARSE_SPECIAL, ids.data(), n, &n);
    }
    if (st == DSI_ERR_PARSE) bad_field(param, dsi_last_error());
    if (st != DSI_OK) throw ApiError(500, std::string("tokenizing ") + param + ": " + dsi_last_error());
    return ids;
}

// Sampling, stop strings, logit bias, max_tokens and the test hook: shared by both routes.
void parse_generation(const Json &doc, const ModelInfo &model, ParsedRequest &out) {
    refuse_unsupported(doc);
    GenerationRequest &g = out.generation;
    dsi_sampler_params &p = g.sampling;
    // OpenAI semantics: temperature 1 and top_p 1 by default, no top-k / min-p cut.
    p.temperature = static_cast<float>(number(doc, "temperature", 1.0, 0.0, 2.0));
    p.top_p = static_cast<float>(number(doc, "top_p", 1.0, 0.0, 1.0));
    if (p.top_p <= 0.0f) bad_field("top_p", "must be greater than 0");
    p.top_k = static_cast<int32_t>(integer(doc, "top_k", 0, 0, INT32_MAX));
    p.min_p = static_cast<float>(number(doc, "min_p", 0.0, 0.0, 1.0));
    p.frequency_penalty = static_cast<float>(number(doc, "frequency_penalty", 0.0, -2.0, 2.0));
    p.presence_penalty = static_cast<float>(number(doc, "presence_penalty", 0.0, -2.0, 2.0));
    p.repeat_penalty = static_cast<float>(number(doc, "repetition_penalty", 1.0, 1e-3, 10.0));
    if (member(doc, "seed")) {
        p.seed = static_cast<uint64_t>(integer(doc, "seed", 0, INT64_MIN, INT64_MAX));
    } else {
        static thread_local std::mt19937_64 rng{std::random_device{}()};
        p.seed = rng();
    }

    if (const Json *stop = member(doc, "stop")) {
        if (stop->is_string()) {
            g.stop.push_back(stop->get<std::string>());
        } else if (stop->is_array()) {
            if (stop->size() > 4) bad_field("stop", "at most 4 stop strings");
            for (size_t i = 0; i < stop->size(); ++i) {
                if (!(*stop)[i].is_string()) bad_field("stop[" + std::to_string(i) + "]", "expected a string");
                g.stop.push_back((*stop)[i].get<std::string>());
            }
        } else {
            bad_field("stop", "expected a string or an array of strings");
        }
        for (size_t i = 0; i < g.stop.size(); ++i)
            if (g.stop[i].empty()) bad_field("stop", "a stop string must not be empty");
    }

    if (const Json *bias = member(doc, "logit_bias")) {
        if (!bias->is_object()) bad_field("logit_bias", "expected an object of token id -> bias");
        for (const auto &item : bias->items()) {
            const std::string param = "logit_bias." + item.key();
            size_t used = 0;
            long id = -1;
            try {
                id = std::stol(item.key(), &used);
            } catch (const std::exception &) {
                used = 0;
            }
            if (used != item.key().size() || id < 0 || id >= model.n_vocab)
                bad_field(param, "expected a token id in [0, " + std::to_string(model.n_vocab) + ")");
            if (!item.value().is_number()) bad_field(param, "expected a number");
            const double b = item.value().get<double>();
            if (!std::isfinite(b) || b < -100 || b > 100) bad_field(param, "must be between -100 and 100");
            // -100 bans the token, as OpenAI documents.
            g.logit_bias.push_back({static_cast<int32_t>(id), b <= -100 ? -INFINITY : static_cast<float>(b)});
        }
    }

    out.stream = boolean(doc, "stream", false);
    if (const Json *so = member(doc, "stream_options")) {
        if (!so->is_object()) bad_field("stream_options", "expected an object");
        if (!out.stream) bad_field("stream_options", "only allowed with stream: true");
        out.include_usage = boolean(*so, "include_usage", false);
    }

    if (const Json *forced = member(doc, "test_forced_reply")) {
        if (!model.test_hooks) bad_field("test_forced_reply", "a test hook: start the server with --enable-test-hooks");
        if (!forced->is_string()) bad_field("test_forced_reply", "expected a string");
        g.forced_reply = tokenize(model.tokenizer, forced->get<std::string>(), "test_forced_reply");
    }

    if (member(doc, "test_delay_ms")) {
        if (!model.test_hooks) bad_field("test_delay_ms", "a test hook: start the server with --enable-test-hooks");
        g.delay_ms = static_cast<int32_t>(integer(doc, "test_delay_ms", 0, 0, 1000));
    }

    // The prompt must leave room for at least one token; max_tokens must fit the rest.
    const int64_t prompt = static_cast<int64_t>(g.prompt.size());
    const int64_t room = model.n_ctx - prompt;
    if (room < 1) {
        throw ApiError(400,
                       "the prompt is " + std::to_string(prompt) + " tokens; this server's context holds " +
                           std::to_string(model.n_ctx) + " tokens (prompt and reply)",
                       out.chat ? "messages" : "prompt", "context_length_exceeded");
    }
    const char *max_key = member(doc, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    const int64_t max_tokens = integer(doc, max_key, room, 1, INT32_MAX);
    if (max_tokens > room) {
        throw ApiError(400,
                       std::string(max_key) + ": " + std::to_string(max_tokens) + " tokens do not fit: the prompt is " +
                           std::to_string(prompt) + " tokens and the context holds " + std::to_string(model.n_ctx),
                       max_key, "context_length_exceeded");
    }
    g.max_tokens = static_cast<int32_t>(max_tokens);
}

// Message content: a string, or an array of {"type": "text", "text": ...} parts.
std::string content_text(const Json &content, const std::string &param) {
    if (content.is_null()) return "";
    if (content.is_string()) return content.get<std::string>();
    if (!content.is_array()) bad_field(param, "expected a string or an array of text parts");
    std::string text;
    for (size_t j = 0; j < content.size(); ++j) {
        const std::string at = param + "[" + std::to_string(j) + "]";
        const Json &part = content[j];
        if (!part.is_object() || !part.contains("type") || part["type"] != "text")
            bad_field(at + ".type", "only \"text\" parts are supported");
        if (!part.contains("text") || !part["text"].is_string()) bad_field(at + ".text", "expected a string");
        text += part["text"].get<std::string>();
    }
    return text;
}

// OpenAI messages -> the conversation JSON that dsi_chat_render() reads.
Json conversation(const Json &doc) {
    const Json *messages = member(doc, "messages");
    if (!messages) bad_field("messages", "required");
    if (!messages->is_array() || messages->empty()) bad_field("messages", "expected a non-empty array");
    Json out_messages = Json::array();
    for (size_t i = 0; i < messages->size(); ++i) {
        const std::string at = "messages[" + std::to_string(i) + "]";
        const Json &m = (*messages)[i];
        if (!m.is_object()) bad_field(at, "expected an object");
        const Json *role = member(m, "role");
        if (!role || !role->is_string()) bad_field(at + ".role", "required: system, developer, user, assistant or tool");
        const std::string r = role->get<std::string>();
        if (r != "system" && r != "developer" && r != "user" && r != "assistant" && r != "tool")
            bad_field(at + ".role", "unknown role \"" + r + "\" (system, developer, user, assistant or tool)");
        Json out = {{"role", r}};
        const auto content = m.find("content");
        if (content == m.end() && r != "assistant") bad_field(at + ".content", "required");
        out["content"] = content_text(content == m.end() ? Json() : *content, at + ".content");
        if (r == "assistant") {
            if (const Json *reasoning = member(m, "reasoning_content")) {
                if (!reasoning->is_string()) bad_field(at + ".reasoning_content", "expected a string");
                out["reasoning_content"] = *reasoning;
            }
            if (const Json *calls = member(m, "tool_calls")) {
                if (!calls->is_array()) bad_field(at + ".tool_calls", "expected an array");
                Json list = Json::array();
                for (size_t j = 0; j < calls->size(); ++j) {
                    const std::string cat = at + ".tool_calls[" + std::to_string(j) + "]";
                    const Json &c = (*calls)[j];
                    const Json *fn = c.is_object() ? member(c, "function") : nullptr;
                    if (!fn || !fn->is_object()) bad_field(cat + ".function", "required: {name, arguments}");
                    const Json *name = member(*fn, "name");
                    if (!name || !name->is_string()) bad_field(cat + ".function.name", "expected a string");
                    const Json *args = member(*fn, "arguments");
                    Json parsed = Json::object();
                    if (args && args->is_string()) {
                        try {
                            parsed = Json::parse(args->get<std::string>());
                        } catch (const Json::parse_error &) {
                            bad_field(cat + ".function.arguments", "is not valid JSON");
                        }
                    } else if (args) {
                        parsed = *args;
                    }
                    if (!parsed.is_object()) bad_field(cat + ".function.arguments", "expected a JSON object");
                    list.push_back({{"function", {{"name", *name}, {"arguments", parsed}}}});
                }
                out["tool_calls"] = std::move(list);
            }
        }
        out_messages.push_back(std::move(out));
    }
    Json conv = {{"messages", std::move(out_messages)}};

    const Json *choice = member(doc, "tool_choice");
    std::string tool_choice = "auto";
    if (choice) {
        if (!choice->is_string()) bad_field("tool_choice", "only \"auto\" and \"none\" are supported");
        tool_choice = choice->get<std::string>();
        if (tool_choice != "auto" && tool_choice != "none")
            bad_field("tool_choice", "only \"auto\" and \"none\" are supported, got \"" + tool_choice + "\"");
    }
    if (const Json *tools = member(doc, "tools"); tools && tool_choice != "none") {
        if (!tools->is_array()) bad_field("tools", "expected an array");
        if (!tools->empty()) conv["tools"] = *tools;
    }
    return conv;
}

unsigned chat_flags(const Json &doc) {
    const Json *kwargs = member(doc, "chat_template_kwargs");
    if (!kwargs) return 0;
    if (!kwargs->is_object()) bad_field("chat_template_kwargs", "expected an object");
    const Json *thinking = member(*kwargs, "thinking");
    if (!thinking) return 0;
    if (!thinking->is_boolean()) bad_field("chat_template_kwargs.thinking", "expected true or false");
    return thinking->get<bool>() ? DSI_CHAT_THINKING : 0u;
}

Json take_json(char *text) {
    const std::string copy = text ? text : "null";
    dsi_free(text);
    return Json::parse(copy);
}

Json tool_call_json(const Json &call, int index, const std::string &call_id_prefix, bool with_index) {
    const auto args = call.find("arguments");
    Json j;
    if (with_index) j["index"] = index;
    j["id"] = call_id_prefix + std::to_string(index);
    j["type"] = "function";
    j["function"] = {{"name", call.value("name", "")}, {"arguments", args != call.end() ? dump(*args) : "{}"}};
    return j;
}

}  // namespace

ApiError::ApiError(int s, std::string message, std::string p, std::string c)
    : std::runtime_error(std::move(message)), status(s), param(std::move(p)), code(std::move(c)) {}

Json error_body(int status, const std::string &message, const std::string &param, const std::string &code) {
    return {{"error",
             {{"message", message},
              {"type", error_type(status)},
              {"param", param.empty() ? Json() : Json(param)},
              {"code", code.empty() ? Json() : Json(code)}}}};
}

ParsedRequest parse_chat_request(const std::string &body, const ModelInfo &model) {
    const Json doc = parse_body(body);
    ParsedRequest out;
    out.chat = true;
    out.chat_flags = chat_flags(doc);
    const Json conv = conversation(doc);
    const std::string conv_text = dump(conv);
    char *prompt = nullptr;
    size_t len = 0;
    const dsi_status st = dsi_chat_render(conv_text.data(), conv_text.size(), out.chat_flags, &prompt, &len);
    if (st == DSI_ERR_PARSE) throw ApiError(422, dsi_last_error(), "messages");
    if (st != DSI_OK) throw ApiError(500, std::string("rendering the conversation: ") + dsi_last_error());
    out.prompt_text.assign(prompt, len);
    dsi_free(prompt);
    out.generation.prompt = tokenize(model.tokenizer, out.prompt_text, "messages");
    parse_generation(doc, model, out);
    return out;
}

ParsedRequest parse_completion_request(const std::string &body, const ModelInfo &model) {
    const Json doc = parse_body(body);
    ParsedRequest out;
    const Json *prompt = member(doc, "prompt");
    if (!prompt) bad_field("prompt", "required");
    if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) prompt = &(*prompt)[0];
    if (prompt->is_string()) {
        out.prompt_text = prompt->get<std::string>();
        out.generation.prompt = tokenize(model.tokenizer, out.prompt_text, "prompt");
        std::vector<int32_t> &ids = out.generation.prompt;
        if (model.bos >= 0 && (ids.empty() || ids.front() != model.bos)) ids.insert(ids.begin(), model.bos);
    } else if (prompt->is_array()) {
        for (size_t i = 0; i < prompt->size(); ++i) {
            const Json &id = (*prompt)[i];
            if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= model.n_vocab) {
                bad_field("prompt[" + std::to_string(i) + "]",
                          "expected a token id in [0, " + std::to_string(model.n_vocab) + ") (one prompt per request)");
            }
            out.generation.prompt.push_back(static_cast<int32_t>(id.get<int64_t>()));
        }
    } else {
        bad_field("prompt", "expected a string or an array of token ids");
    }
    if (out.generation.prompt.empty() || (out.prompt_text.empty() && prompt->is_string()))
        bad_field("prompt", "must not be empty");
    parse_generation(doc, model, out);
    return out;
}

ChatStream::ChatStream(unsigned chat_flags, std::string call_id_prefix) : call_id_prefix_(std::move(call_id_prefix)) {
    if (dsi_chat_parser_create(chat_flags, &parser_) != DSI_OK) raw_ = true;
}

ChatStream::~ChatStream() { dsi_chat_parser_free(parser_); }

std::vector<Json> ChatStream::deltas(char *events_json) {
    std::vector<Json> out;
    for (const Json &e : take_json(events_json)) {
        const std::string type = e.value("type", "");
        if (type == "reasoning") {
            out.push_back({{"reasoning_content", e.value("text", "")}});
        } else if (type == "content") {
            out.push_back({{"content", e.value("text", "")}});
        } else if (type == "tool_call") {
            out.push_back({{"tool_calls", Json::array({tool_call_json(e, n_tool_calls_, call_id_prefix_, true)})}});
            n_tool_calls_++;
        }
    }
    return out;
}

std::vector<Json> ChatStream::push(const std::string &text) {
    if (text.empty()) return {};
    if (raw_) return {Json{{"content", text}}};
    char *events = nullptr;
    if (dsi_chat_parser_push(parser_, text.data(), text.size(), &events) != DSI_OK) {
        // Malformed DSML from the model: what the parser held back is lost to it, so
        // from here on the reply is passed on as it is.
        raw_ = true;
        return {Json{{"content", text}}};
    }
    return deltas(events);
}

std::vector<Json> ChatStream::finish() {
    if (raw_) return {};
    char *events = nullptr, *result = nullptr;
    const dsi_status st = dsi_chat_parser_finish(parser_, &events, &result);
    dsi_free(result);
    if (st != DSI_OK) {
        dsi_free(events);
        return {};
    }
    return deltas(events);
}

Json chat_message(const std::string &reply, unsigned chat_flags, const std::string &call_id_prefix, bool *tool_calls) {
    Json message = {{"role", "assistant"}};
    char *parsed = nullptr;
    *tool_calls = false;
    if (dsi_chat_parse(reply.data(), reply.size(), chat_flags, &parsed, nullptr) != DSI_OK) {
        message["content"] = reply;  // not valid DSML: the reply as it is
        return message;
    }
    const Json result = take_json(parsed);
    const Json &calls = result["tool_calls"];
    const std::string content = result.value("content", "");
    message["content"] = content.empty() && !calls.empty() ? Json() : Json(content);
    if (result["reasoning_content"].is_string()) message["reasoning_content"] = result["reasoning_content"];
    if (!calls.empty()) {
        Json list = Json::array();
        for (size_t i = 0; i < calls.size(); ++i)
            list.push_back(tool_call_json(calls[i], static_cast<int>(i), call_id_prefix, false));
        message["tool_calls"] = std::move(list);
        *tool_calls = true;
    }
    return message;
}

Json usage_json(const Usage &u) {
    return {{"prompt_tokens", u.prompt_tokens},
            {"completion_tokens", u.completion_tokens},
            {"total_tokens", u.prompt_tokens + u.completion_tokens},
            {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
}

}  // namespace server
