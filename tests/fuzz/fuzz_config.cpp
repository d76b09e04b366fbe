// config.json: parse_config on arbitrary text; a config that parses is then asked for
// the derived values the loader computes from it.
#include "fuzz_common.h"
#include "model/config.h"
#include "model/rope.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    try {
        const dsi::ModelConfig c = dsi::parse_config(std::string(fuzz::as_text(data, size)), "fuzz/config.json");
        (void)dsi::mla_softmax_scale(c);
        for (int64_t l = 0; l < c.num_hidden_layers; ++l) (void)c.layer_is_moe(l);
    } catch (const dsi::Error &e) {
        fuzz::check_refusal(e);
    }
    return 0;
}
