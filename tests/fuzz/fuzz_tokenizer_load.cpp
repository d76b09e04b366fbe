// tokenizer.json: load arbitrary JSON; a tokenizer that loads then encodes and decodes a
// fixed text.
#include "fuzz_common.h"
#include "text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    try {
        auto tok = dsi::Tokenizer::load_json(std::string(fuzz::as_text(data, size)), "fuzz/tokenizer.json");
        const std::string text = "Hello, world! 123 <|endoftext|> \xe4\xbd\xa0\xe5\xa5\xbd  \n\t x";
        for (bool special : {false, true}) {
            const std::vector<int32_t> ids = tok->encode(text, special);
            (void)tok->decode(ids.data(), ids.size());
        }
    } catch (const dsi::Error &e) {
        fuzz::check_refusal(e);
    }
    return 0;
}
