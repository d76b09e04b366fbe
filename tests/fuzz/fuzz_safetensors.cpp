// safetensors: the header JSON and the tensor table of one file (SafetensorsFile::open
// maps a path, so each input is written to a temporary file first), then every tensor
// that opened is converted to float where its dtype allows.
#include "checkpoint/safetensors.h"
#include "fuzz_common.h"

#include <unistd.h>

#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const std::string path = "/tmp/dsinfer-fuzz-" + std::to_string(getpid()) + ".safetensors";
    FILE *f = std::fopen(path.c_str(), "wb");
    if (!f) std::abort();
    if (size) std::fwrite(data, 1, size, f);
    std::fclose(f);
    try {
        auto file = dsi::SafetensorsFile::open(path);
        std::vector<float> out;
        for (const auto &[name, t] : file->tensors()) {
            const int64_t n = std::min<int64_t>(t.numel(), 4096);
            out.resize(static_cast<size_t>(n));
            try {
                dsi::convert_to_float(t, 0, n, out.data());
            } catch (const dsi::Error &e) {
                fuzz::check_refusal(e);
            }
        }
    } catch (const dsi::Error &e) {
        fuzz::check_refusal(e);
    }
    return 0;
}
