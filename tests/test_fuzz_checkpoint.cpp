// labels: cpu badinput
// Random corruption of a checkpoint's metadata never crashes or hangs the library:
// opening returns DSI_OK or an error with a message, and a model that did open still
// evaluates (or fails cleanly). Weight bytes themselves are not corrupted here:
// safetensors carries no checksum, so changed weights are a different model, not an
// error. Runs under the sanitizers in CI, where an out-of-bounds read would abort.
#include <doctest/doctest.h>

#include "dsinfer.h"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

const std::string kSource = std::string(DSI_TEST_DATA_DIR) + "/golden/tiny-fp8";

std::vector<char> slurp(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    return std::vector<char>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void dump(const std::string &path, const std::vector<char> &bytes) {
    std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Opens the model in `dir`; if it opens, evaluates a few tokens. Returns the status of
// whichever step failed, or DSI_OK.
dsi_status try_model(const std::string &dir) {
    dsi_session_params p = dsi_session_default_params();
    p.backend = DSI_BACKEND_CPU;
    p.n_threads = 1;
    dsi_session *s = nullptr;
    dsi_status st = dsi_session_open(dir.c_str(), &p, &s);
    if (st != DSI_OK) {
        CHECK(s == nullptr);
        CHECK(std::strlen(dsi_last_error()) > 0);
        return st;
    }
    dsi_context_params cp = dsi_context_default_params();
    cp.n_ctx = 8;
    dsi_context *c = nullptr;
    st = dsi_context_create(s, &cp, &c);
    if (st == DSI_OK) {
        const int32_t ids[] = {1, 2, 3};
        st = dsi_context_eval(c, ids, 3, 0);
    }
    dsi_context_free(c);
    dsi_session_free(s);
    return st;
}

}  // namespace

TEST_CASE("random corruption of shard headers, index and config never crashes") {
    char tmpl[] = "/tmp/dsinfer-fuzz-XXXXXX";
    const std::string dir = mkdtemp(tmpl);
    const std::vector<std::string> files = {"config.json", "model.safetensors.index.json",
                                            "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
    std::vector<std::vector<char>> original;
    for (const auto &f : files) original.push_back(slurp(kSource + "/" + f));
    auto restore = [&] {
        for (size_t i = 0; i < files.size(); ++i) dump(dir + "/" + files[i], original[i]);
    };
    restore();
    REQUIRE(try_model(dir) == DSI_OK);

    std::mt19937 rng(20261123);
    int failures = 0, opened = 0;
    for (int iter = 0; iter < 300; ++iter) {
        restore();
        const size_t which = rng() % files.size();
        std::vector<char> bytes = original[which];
        // The region that is metadata: whole JSON files, or a shard's 8-byte length plus header.
        size_t meta = bytes.size();
        if (which >= 2) {
            uint64_t n = 0;
            std::memcpy(&n, bytes.data(), 8);
            meta = 8 + static_cast<size_t>(n);
        }
        switch (rng() % 3) {
        case 0:  // flip a few bytes
            for (int k = 1 + static_cast<int>(rng() % 4); k > 0; --k)
                bytes[rng() % meta] = static_cast<char>(rng() & 0xFF);
            break;
        case 1:  // truncate anywhere (data region included)
            bytes.resize(rng() % bytes.size());
            break;
        default:  // overwrite a byte with a JSON-significant character
            bytes[rng() % meta] = "{}[]\",:0-9e"[rng() % 11];
            break;
        }
        dump(dir + "/" + files[which], bytes);
        const dsi_status st = try_model(dir);
        failures += st != DSI_OK;
        opened += st == DSI_OK;
    }
    MESSAGE("300 corruptions: " << failures << " refused with an error, " << opened << " harmless");
    CHECK(failures > 200);  // most corruptions must be detected, not silently accepted
    fs::remove_all(dir);
}
