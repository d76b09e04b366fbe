// Shared by the libFuzzer targets: every entry point must return normally for any
// input. A dsi::Error is the expected way to refuse bad input; anything else escaping
// (another exception, a crash, a leak, a UBSan report) is a finding.
#pragma once

#include "common/error.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <string>
#include <string_view>

namespace fuzz {

// Refusals must use a specific status, never DSI_ERR_INTERNAL.
inline void check_refusal(const dsi::Error &e) {
    if (e.status() == DSI_ERR_INTERNAL) {
        std::fprintf(stderr, "DSI_ERR_INTERNAL for bad input: %s\n", e.what());
        std::abort();
    }
}

inline std::string_view as_text(const uint8_t *data, size_t size) {
    return std::string_view(reinterpret_cast<const char *>(data), size);
}

}  // namespace fuzz
