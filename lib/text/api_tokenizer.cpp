// The C API of the tokenizer and the streaming detokenizer (include/dsinfer.h, "Tokenizer").
#include "dsinfer.h"

#include "common/error.h"
#include "common/log.h"
#include "text/detokenizer.h"
#include "text/tokenizer.h"

#include <algorithm>
#include <cstring>
#include <memory>

struct dsi_detokenizer {
    dsi::Detokenizer impl;
};

namespace {

// A handle from dsi_session_tokenizer() or dsi_tokenizer_load() always has an impl; the check
// still keeps a hand-made or zeroed struct from crashing.
const dsi::Tokenizer &tokenizer_of(const dsi_tokenizer *tok, const char *fn) {
    if (!tok || !tok->impl) dsi::fail(DSI_ERR_INVALID_ARGUMENT, "%s: tokenizer is NULL", fn);
    return *tok->impl;
}

void require(bool ok, const char *fn, const char *what) {
    if (!ok) dsi::fail(DSI_ERR_INVALID_ARGUMENT, "%s: %s", fn, what);
}

void require_flags(unsigned flags, unsigned known, const char *fn) {
    if (flags & ~known) dsi::fail(DSI_ERR_INVALID_ARGUMENT, "%s: unknown flags 0x%x", fn, flags & ~known);
}

// Copies `bytes` out as dsi_tokenize/dsi_detokenize specify: the length always, the bytes
// and a NUL when they fit.
void copy_text(const std::string_view bytes, char *text, size_t cap, size_t *text_len, const char *fn) {
    *text_len = bytes.size();
    if (bytes.size() > cap)
        dsi::fail(DSI_ERR_BUFFER_TOO_SMALL, "%s: the text needs %zu bytes, the buffer holds %zu", fn, bytes.size(),
                  cap);
    if (!bytes.empty()) std::memcpy(text, bytes.data(), bytes.size());  // text may be NULL when nothing is copied
    if (cap > bytes.size()) text[bytes.size()] = '\0';
}

}  // namespace

extern "C" dsi_status dsi_tokenizer_load(const char *path, dsi_tokenizer **out) {
    return dsi::guard([&] {
        require(out != nullptr, "dsi_tokenizer_load", "out is NULL");
        *out = nullptr;
        require(path != nullptr, "dsi_tokenizer_load", "path is NULL");
        auto tok = std::make_unique<dsi_tokenizer>();
        tok->impl = dsi::Tokenizer::load_file(path);
        dsi::log_global(DSI_LOG_DEBUG, "tokenizer %s: %d ids", path, tok->impl->n_vocab());
        *out = tok.release();
    });
}

extern "C" void dsi_tokenizer_free(dsi_tokenizer *tok) { delete tok; }

extern "C" int32_t dsi_tokenizer_n_vocab(const dsi_tokenizer *tok) {
    return tok && tok->impl ? tok->impl->n_vocab() : 0;
}

extern "C" int32_t dsi_tokenizer_token_id(const dsi_tokenizer *tok, const char *token_text) {
    int32_t id = -1;
    dsi::guard([&] {
        if (tok && tok->impl && token_text) id = tok->impl->token_id(token_text);
    });
    return id;
}

extern "C" uint32_t dsi_tokenizer_token_attr(const dsi_tokenizer *tok, int32_t id) {
    if (!tok || !tok->impl) return DSI_TOKEN_ATTR_NONE;
    switch (tok->impl->kind(id)) {
    case dsi::TokenKind::None: return DSI_TOKEN_ATTR_NONE;
    case dsi::TokenKind::Normal: return DSI_TOKEN_ATTR_NORMAL;
    case dsi::TokenKind::Special: return DSI_TOKEN_ATTR_CONTROL;
    case dsi::TokenKind::Added: return DSI_TOKEN_ATTR_USER_DEFINED;
    }
    return DSI_TOKEN_ATTR_NONE;
}

extern "C" dsi_status dsi_tokenizer_token_to_piece(const dsi_tokenizer *tok, int32_t id, char *piece, size_t cap,
                                                   size_t *piece_len) {
    return dsi::guard([&] {
        const char *fn = "dsi_tokenizer_token_to_piece";
        const dsi::Tokenizer &t = tokenizer_of(tok, fn);
        require(piece_len != nullptr, fn, "piece_len is NULL");
        require(piece != nullptr || cap == 0, fn, "piece is NULL but cap is not 0");
        copy_text(t.token_bytes(id), piece, cap, piece_len, fn);
    });
}

extern "C" dsi_status dsi_tokenize(const dsi_tokenizer *tok, const char *text, size_t text_len, unsigned flags,
                                   int32_t *ids, size_t cap, size_t *n_ids) {
    return dsi::guard([&] {
        const char *fn = "dsi_tokenize";
        const dsi::Tokenizer &t = tokenizer_of(tok, fn);
        require_flags(flags, DSI_TOKENIZE_PARSE_SPECIAL | DSI_TOKENIZE_ADD_SPECIAL, fn);
        require(n_ids != nullptr, fn, "n_ids is NULL");
        require(text != nullptr || text_len == 0, fn, "text is NULL but text_len is not 0");
        require(ids != nullptr || cap == 0, fn, "ids is NULL but cap is not 0");
        std::vector<int32_t> out = t.encode(std::string_view(text ? text : "", text_len),
                                            (flags & DSI_TOKENIZE_PARSE_SPECIAL) != 0,
                                            (flags & DSI_TOKENIZE_ADD_SPECIAL) != 0);
        *n_ids = out.size();
        if (out.size() > cap)
            dsi::fail(DSI_ERR_BUFFER_TOO_SMALL, "%s: the text needs %zu ids, the buffer holds %zu", fn, out.size(), cap);
        std::copy(out.begin(), out.end(), ids);
    });
}

extern "C" dsi_status dsi_detokenize(const dsi_tokenizer *tok, const int32_t *ids, size_t n_ids, unsigned flags,
                                     char *text, size_t cap, size_t *text_len) {
    return dsi::guard([&] {
        const char *fn = "dsi_detokenize";
        const dsi::Tokenizer &t = tokenizer_of(tok, fn);
        require_flags(flags, DSI_DETOKENIZE_SKIP_SPECIAL, fn);
        require(text_len != nullptr, fn, "text_len is NULL");
        require(ids != nullptr || n_ids == 0, fn, "ids is NULL but n_ids is not 0");
        require(text != nullptr || cap == 0, fn, "text is NULL but cap is not 0");
        copy_text(t.decode(ids, n_ids, (flags & DSI_DETOKENIZE_SKIP_SPECIAL) != 0), text, cap, text_len, fn);
    });
}

extern "C" dsi_status dsi_detokenizer_create(const dsi_tokenizer *tok, unsigned flags, dsi_detokenizer **out) {
    return dsi::guard([&] {
        const char *fn = "dsi_detokenizer_create";
        require(out != nullptr, fn, "out is NULL");
        *out = nullptr;
        tokenizer_of(tok, fn);
        require_flags(flags, DSI_DETOKENIZE_SKIP_SPECIAL, fn);
        *out = new dsi_detokenizer{dsi::Detokenizer(tok->impl, (flags & DSI_DETOKENIZE_SKIP_SPECIAL) != 0)};
    });
}

extern "C" void dsi_detokenizer_free(dsi_detokenizer *detok) { delete detok; }

extern "C" dsi_status dsi_detokenizer_push(dsi_detokenizer *detok, int32_t id, const char **text,
                                           size_t *text_len) {
    return dsi::guard([&] {
        const char *fn = "dsi_detokenizer_push";
        require(detok != nullptr, fn, "detokenizer is NULL");
        require(text != nullptr && text_len != nullptr, fn, "text or text_len is NULL");
        std::string_view piece = detok->impl.push(id);
        *text = piece.data();
        *text_len = piece.size();
    });
}

extern "C" dsi_status dsi_detokenizer_flush(dsi_detokenizer *detok, const char **text, size_t *text_len) {
    return dsi::guard([&] {
        const char *fn = "dsi_detokenizer_flush";
        require(detok != nullptr, fn, "detokenizer is NULL");
        require(text != nullptr && text_len != nullptr, fn, "text or text_len is NULL");
        std::string_view piece = detok->impl.flush();
        *text = piece.data();
        *text_len = piece.size();
    });
}
