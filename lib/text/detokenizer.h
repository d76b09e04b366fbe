// Streaming ids -> UTF-8 text. Text comes out only in whole characters, so a character whose
// bytes are spread over several byte-level tokens appears once, when its last byte arrives,
// and the pieces put together equal Tokenizer::decode of all the ids. One thread at a time.
#pragma once

#include "text/tokenizer.h"

#include <memory>
#include <string>
#include <string_view>

namespace dsi {

class Detokenizer {
public:
    // skip_special: added tokens marked special produce no text.
    explicit Detokenizer(std::shared_ptr<const Tokenizer> tokenizer, bool skip_special = false);

    // The text completed by `id`, valid until the next call. An id outside the vocabulary
    // throws DSI_ERR_INVALID_TOKEN and leaves the stream as it was.
    std::string_view push(int32_t id);

    // Ends the stream: an incomplete trailing character becomes U+FFFD. Then starts anew.
    std::string_view flush();

private:
    std::shared_ptr<const Tokenizer> tokenizer_;  // shared: the handle may be freed first
    bool skip_special_;
    std::string pending_;  // bytes received but not yet returned
    std::string text_;     // what the last call returned
};

}  // namespace dsi
