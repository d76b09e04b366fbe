// Temporary checkpoints rewritten from the shipped tiny ones (tests/data/golden), for
// the bad-input tests: read every tensor, edit tensors and config, write one
// model.safetensors + config.json into a fresh directory, open it through the C API.
#pragma once

#include <doctest/doctest.h>

#include "checkpoint/safetensors.h"
#include "dsinfer.h"

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace badinput {

namespace fs = std::filesystem;
using nlohmann::json;

inline const std::string kGolden = std::string(DSI_TEST_DATA_DIR) + "/golden";

struct Tensor {
    std::string dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
};
using Tensors = std::map<std::string, Tensor>;

inline Tensors read_checkpoint(const std::string &dir) {
    auto ckpt = dsi::Checkpoint::open(dir);
    Tensors out;
    for (const auto &name : ckpt->names()) {
        const dsi::TensorInfo &t = ckpt->get(name);
        out[name] = Tensor{dsi::dtype_name(t.dtype), t.shape, std::vector<uint8_t>(t.data, t.data + t.nbytes)};
    }
    return out;
}

inline void write_safetensors(const std::string &path, const Tensors &tensors) {
    json header = json::object();
    size_t offset = 0;
    for (const auto &[name, t] : tensors) {
        header[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
        offset += t.bytes.size();
    }
    std::string h = header.dump();
    h.append((8 - h.size() % 8) % 8, ' ');
    std::ofstream f(path, std::ios::binary);
    const uint64_t n = h.size();
    f.write(reinterpret_cast<const char *>(&n), 8);
    f.write(h.data(), static_cast<std::streamsize>(h.size()));
    for (const auto &[name, t] : tensors) f.write(reinterpret_cast<const char *>(t.bytes.data()), t.bytes.size());
}

// A temporary checkpoint made from `source` with edits to its tensors and config.
struct TempModel {
    std::string dir;
    TempModel(const std::string &source, const std::function<void(Tensors &)> &edit_tensors,
              const std::function<void(json &)> &edit_config) {
        char tmpl[] = "/tmp/dsinfer-model-XXXXXX";
        dir = mkdtemp(tmpl);
        Tensors t = read_checkpoint(kGolden + "/" + source);
        if (edit_tensors) edit_tensors(t);
        write_safetensors(dir + "/model.safetensors", t);
        json cfg = json::parse(std::ifstream(kGolden + "/" + source + "/config.json"));
        if (edit_config) edit_config(cfg);
        std::ofstream(dir + "/config.json") << cfg.dump(2);
    }
    ~TempModel() { fs::remove_all(dir); }
};

inline dsi_status open_status(const TempModel &m, std::string *message, dsi_session **keep = nullptr) {
    dsi_session_params p = dsi_session_default_params();
    p.backend = DSI_BACKEND_CPU;
    p.n_threads = 2;
    dsi_session *s = nullptr;
    const dsi_status st = dsi_session_open(m.dir.c_str(), &p, &s);
    *message = dsi_last_error();
    if (keep)
        *keep = s;
    else
        dsi_session_free(s);
    return st;
}

inline bool has(const std::string &s, const std::string &part) { return s.find(part) != std::string::npos; }

}  // namespace badinput
