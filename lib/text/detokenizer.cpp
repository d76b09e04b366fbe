#include "text/detokenizer.h"

#include "text/utf8.h"

namespace dsi {

Detokenizer::Detokenizer(std::shared_ptr<const Tokenizer> tokenizer, bool skip_special)
    : tokenizer_(std::move(tokenizer)), skip_special_(skip_special) {}

// Everything before a trailing truncated sequence decodes the same whatever bytes follow, so
// emitting it now, ill-formed parts as U+FFFD, gives exactly the whole-sequence decode.
std::string_view Detokenizer::push(int32_t id) {
    std::string_view bytes = tokenizer_->token_bytes(id);
    if (!(skip_special_ && tokenizer_->kind(id) == TokenKind::Special)) pending_ += bytes;
    size_t ready = utf8::stable_prefix(pending_);
    text_.clear();
    utf8::append_lossy(text_, std::string_view(pending_).substr(0, ready));
    pending_.erase(0, ready);
    return text_;
}

std::string_view Detokenizer::flush() {
    text_.clear();
    utf8::append_lossy(text_, pending_);
    pending_.clear();
    return text_;
}

}  // namespace dsi
