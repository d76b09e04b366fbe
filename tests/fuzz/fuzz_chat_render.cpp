// dsi_chat_render on arbitrary conversation JSON, with and without thinking mode.
#include "dsinfer.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (unsigned flags : {0u, unsigned(DSI_CHAT_THINKING)}) {
        char *prompt = nullptr;
        const dsi_status st =
            dsi_chat_render(reinterpret_cast<const char *>(data), size, flags, &prompt, nullptr);
        if (st == DSI_ERR_INTERNAL) {
            std::fprintf(stderr, "DSI_ERR_INTERNAL: %s\n", dsi_last_error());
            std::abort();
        }
        dsi_free(prompt);
    }
    return 0;
}
