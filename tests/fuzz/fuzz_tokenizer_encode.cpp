// Encoding arbitrary bytes with the test tokenizer (byte-level BPE with added tokens):
// invalid UTF-8 is refused; valid text must round-trip, decode(encode(x)) == x, when
// added tokens are not parsed (with parse_special, lstrip may absorb spaces).
#include "fuzz_common.h"
#include "text/tokenizer.h"
#include "text/utf8.h"

#include <memory>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const std::unique_ptr<dsi::Tokenizer> tok =
        dsi::Tokenizer::load_file(DSI_SOURCE_DIR "/tests/data/tokenizer/bytelevel_bpe.json");
    const std::string_view text = fuzz::as_text(data, size);
    const bool valid = dsi::utf8::find_invalid(text) == std::string_view::npos;
    for (bool special : {false, true}) {
        try {
            const std::vector<int32_t> ids = tok->encode(text, special);
            if (!valid) {
                std::fprintf(stderr, "invalid UTF-8 was encoded\n");
                std::abort();
            }
            const std::string back = tok->decode(ids.data(), ids.size());
            if (!special && back != text) {
                std::fprintf(stderr, "decode(encode(x)) != x for %zu bytes\n", size);
                std::abort();
            }
        } catch (const dsi::Error &e) {
            fuzz::check_refusal(e);
            if (valid) {
                std::fprintf(stderr, "valid text refused: %s\n", e.what());
                std::abort();
            }
        }
    }
    return 0;
}
