// DSML reply parsing: the whole reply (dsi_chat_parse) and the incremental parser fed
// in pieces must agree exactly, on the result or on the error status and message. The
// first input byte picks thinking mode and a piece size; the rest is the reply.
#include "dsinfer.h"
#include "fuzz_common.h"

#include <string>

namespace {

struct Outcome {
    dsi_status status;
    std::string text;  // the result JSON, or the error message
};

Outcome whole(std::string_view reply, unsigned flags) {
    char *json = nullptr;
    const dsi_status st = dsi_chat_parse(reply.data(), reply.size(), flags, &json, nullptr);
    Outcome o{st, st == DSI_OK ? std::string(json) : std::string(dsi_last_error())};
    dsi_free(json);
    return o;
}

Outcome pieces(std::string_view reply, unsigned flags, size_t piece) {
    dsi_chat_parser *p = nullptr;
    if (dsi_chat_parser_create(flags, &p) != DSI_OK) std::abort();
    Outcome o{DSI_OK, ""};
    for (size_t at = 0; at < reply.size() && o.status == DSI_OK; at += piece) {
        char *events = nullptr;
        o.status = dsi_chat_parser_push(p, reply.data() + at, std::min(piece, reply.size() - at), &events);
        dsi_free(events);
    }
    if (o.status == DSI_OK) {
        char *events = nullptr, *result = nullptr;
        o.status = dsi_chat_parser_finish(p, &events, &result);
        if (o.status == DSI_OK) o.text = result;
        dsi_free(events);
        dsi_free(result);
    }
    if (o.status != DSI_OK) o.text = dsi_last_error();
    dsi_chat_parser_free(p);
    return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const unsigned flags = (data[0] & 1) ? DSI_CHAT_THINKING : 0u;
    const size_t piece = 1 + (data[0] >> 1) % 17;
    const std::string_view reply = fuzz::as_text(data + 1, size - 1);
    const Outcome a = whole(reply, flags), b = pieces(reply, flags, piece);
    if (a.status == DSI_ERR_INTERNAL || b.status == DSI_ERR_INTERNAL || a.status != b.status || a.text != b.text) {
        std::fprintf(stderr, "whole: %d %s\npieces of %zu: %d %s\n", a.status, a.text.c_str(), piece, b.status,
                     b.text.c_str());
        std::abort();
    }
    return 0;
}
