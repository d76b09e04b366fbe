// A Hugging Face tokenizer.json (byte-level BPE) that encodes and decodes exactly as the
// `tokenizers` library does with add_special_tokens=False. Immutable after loading, so every
// const method may be called from any number of threads at once.
#pragma once

#include "text/utf8.h"  // dsi::utf8, used with the tokenizer's byte strings

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace dsi {

// What an id is: no token (a gap in the ids), a vocabulary entry, or an added token
// marked special (control) or not.
enum class TokenKind { None, Normal, Special, Added };

class Tokenizer {
public:
    // Both throw dsi::Error: DSI_ERR_IO (file), DSI_ERR_FORMAT (malformed or unsupported
    // content; the message starts with `origin` and names the offending field). load_file
    // also reads a tokenizer_config.json next to the file for add_special (BOS/EOS).
    static std::unique_ptr<Tokenizer> load_file(const std::string &path);
    static std::unique_ptr<Tokenizer> load_json(const std::string &text, const std::string &origin);

    ~Tokenizer();
    Tokenizer(const Tokenizer &) = delete;
    Tokenizer &operator=(const Tokenizer &) = delete;

    // With parse_special, added tokens written in the text become their ids (HF's default);
    // without, the whole text goes through the BPE model as plain text. add_special puts the
    // post_processor template's ids around the text (HF's add_special_tokens=True); a
    // post_processor type whose ids are unknown throws DSI_ERR_UNSUPPORTED. Invalid UTF-8
    // throws DSI_ERR_PARSE naming the byte offset.
    std::vector<int32_t> encode(std::string_view text, bool parse_special, bool add_special = false) const;

    // HF decode (skip_special_tokens as given); bytes that are not UTF-8 become U+FFFD.
    // An id outside [0, n_vocab()) throws DSI_ERR_INVALID_TOKEN.
    std::string decode(const int32_t *ids, size_t n, bool skip_special = false) const;

    // TokenKind::None for an id outside [0, n_vocab()) or one no token has.
    TokenKind kind(int32_t id) const;

    // The raw bytes token `id` decodes to, before UTF-8 repair (a byte-level token may hold
    // part of a character). Empty for an id no token has; throws like decode() when out of range.
    std::string_view token_bytes(int32_t id) const;

    // Highest id of the model vocabulary and the added tokens, plus one.
    int32_t n_vocab() const;

    // The id of an added token or vocabulary entry with exactly this text, or -1.
    int32_t token_id(std::string_view text) const;

private:
    struct Impl;
    explicit Tokenizer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace dsi

// The C handle. Sessions hand out the tokenizer of a model directory through the same type.
struct dsi_tokenizer {
    std::shared_ptr<const dsi::Tokenizer> impl;
};
