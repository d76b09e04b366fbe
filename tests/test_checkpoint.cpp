// labels: cpu badinput
// Safetensors / checkpoint layer: exact element conversions, the golden checkpoints,
// and every kind of malformed file, each with its status code and a message that
// names the file and the tensor.
#include <doctest/doctest.h>

#include "expect_error.h"

#include "checkpoint/safetensors.h"
#include "common/error.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const std::string kGoldenBf16 = DSI_TEST_DATA_DIR "/golden/tiny-bf16";
const std::string kGoldenFp8 = DSI_TEST_DATA_DIR "/golden/tiny-fp8";
const std::string kShard1 = "model-00001-of-00002.safetensors";
const std::string kShard2 = "model-00002-of-00002.safetensors";

// A fresh directory under /tmp, removed with everything in it.
struct TempDir {
    std::string path;
    TempDir() {
        char tmpl[] = "/tmp/dsi_test_ckpt_XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        path = tmpl;
    }
    ~TempDir() { fs::remove_all(path); }
    std::string operator/(const std::string &name) const { return path + "/" + name; }
};

std::string read_bytes(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    REQUIRE(in.good());
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string &path, const std::string &bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
    REQUIRE(out.good());
}

// The 8-byte little-endian header length, then header and data, as a writer would.
std::string safetensors_bytes(const std::string &header, const std::string &data, uint64_t header_len_field) {
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[size_t(i)] = char((header_len_field >> (8 * i)) & 0xFF);
    return out + header + data;
}
std::string safetensors_bytes(const std::string &header, const std::string &data) {
    return safetensors_bytes(header, data, header.size());
}

std::string copy_golden(const TempDir &tmp, const std::string &golden) {
    const std::string dst = tmp / "ckpt";
    fs::copy(golden, dst, fs::copy_options::recursive);
    return dst;
}

// Writes a one-file checkpoint member and expects SafetensorsFile::open to refuse it.
void expect_bad_file(const std::string &header, const std::string &data, dsi_status status,
                     const std::vector<std::string> &needles) {
    TempDir tmp;
    const std::string path = tmp / "bad.safetensors";
    write_bytes(path, safetensors_bytes(header, data));
    std::vector<std::string> all = needles;
    all.push_back(path);
    expect_error([&] { dsi::SafetensorsFile::open(path); }, status, all);
}

float bits_float(uint32_t b) {
    float f;
    std::memcpy(&f, &b, 4);
    return f;
}
uint32_t float_bits(float f) {
    uint32_t b;
    std::memcpy(&b, &f, 4);
    return b;
}

}  // namespace

// ---- conversions -------------------------------------------------------------------

TEST_CASE("e4m3_to_float decodes all 256 E4M3FN codes exactly") {
    for (int c = 0; c < 256; ++c) {
        const int sign = c >> 7, exp = (c >> 3) & 0xF, mant = c & 7;
        const float got = dsi::e4m3_to_float(uint8_t(c));
        INFO("code 0x" << std::hex << c);
        if (exp == 0xF && mant == 7) {
            CHECK(std::isnan(got));
            continue;
        }
        const double mag = exp == 0 ? std::ldexp(mant / 8.0, -6) : std::ldexp(1.0 + mant / 8.0, exp - 7);
        CHECK(double(got) == (sign ? -mag : mag));
        CHECK(bool(std::signbit(got)) == bool(sign));
    }
    CHECK(dsi::e4m3_to_float(0x7E) == 448.0f);  // the largest finite value
    CHECK(dsi::e4m3_to_float(0xFE) == -448.0f);
    CHECK(dsi::e4m3_to_float(0x38) == 1.0f);
    CHECK(dsi::e4m3_to_float(0x01) == std::ldexp(1.0f, -9));  // smallest subnormal
    CHECK(dsi::e4m3_to_float(0x78) == 256.0f);                // no infinities: exp 15 is finite
}

TEST_CASE("bf16_to_float is exact and round-trips every bit pattern") {
    for (uint32_t b = 0; b < 0x10000; ++b) {
        const float f = dsi::bf16_to_float(uint16_t(b));
        const bool nan_code = ((b >> 7) & 0xFF) == 0xFF && (b & 0x7F) != 0;
        CHECK(bool(std::isnan(f)) == nan_code);
        CHECK(float_bits(f) == b << 16);
    }
    CHECK(dsi::bf16_to_float(0x3F80) == 1.0f);
    CHECK(dsi::bf16_to_float(0xC000) == -2.0f);
    CHECK(std::isinf(dsi::bf16_to_float(0x7F80)));
}

TEST_CASE("f16_to_float decodes every half-precision bit pattern exactly") {
    for (uint32_t h = 0; h < 0x10000; ++h) {
        const int sign = int(h >> 15), exp = int((h >> 10) & 0x1F), mant = int(h & 0x3FF);
        const float got = dsi::f16_to_float(uint16_t(h));
        INFO("half 0x" << std::hex << h);
        if (exp == 0x1F) {
            CHECK(bool(std::isnan(got)) == (mant != 0));
            CHECK(bool(std::isinf(got)) == (mant == 0));
        } else {
            const double mag =
                exp == 0 ? std::ldexp(double(mant), -24) : std::ldexp(1.0 + mant / 1024.0, exp - 15);
            CHECK(double(got) == (sign ? -mag : mag));
        }
        CHECK(bool(std::signbit(got)) == bool(sign));
    }
    CHECK(dsi::f16_to_float(0x7BFF) == 65504.0f);
}

TEST_CASE("convert_to_float handles every float dtype and refuses the rest") {
    TempDir tmp;
    const std::string path = tmp / "mixed.safetensors";
    // h: F16 [1, -2, 0.5], i: I32 [7], one U8 byte, f: F32 [3.5] at an odd offset (unaligned).
    std::string data;
    for (uint16_t h : {uint16_t(0x3C00), uint16_t(0xC000), uint16_t(0x3800)})
        data += std::string{char(h & 0xFF), char(h >> 8)};
    data += std::string("\x07\x00\x00\x00", 4);
    data += '\0';
    const float f = 3.5f;
    data.append(reinterpret_cast<const char *>(&f), 4);
    const std::string header = R"({"h":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},)"
                               R"("i":{"dtype":"I32","shape":[1],"data_offsets":[6,10]},)"
                               R"("pad":{"dtype":"U8","shape":[1],"data_offsets":[10,11]},)"
                               R"("f":{"dtype":"F32","shape":[1],"data_offsets":[11,15]}})";
    write_bytes(path, safetensors_bytes(header, data));
    auto file = dsi::SafetensorsFile::open(path);
    const auto &t = file->tensors();

    float out[3] = {0, 0, 0};
    dsi::convert_to_float(t.at("h"), 0, 3, out);
    CHECK(out[0] == 1.0f);
    CHECK(out[1] == -2.0f);
    CHECK(out[2] == 0.5f);
    dsi::convert_to_float(t.at("h"), 2, 1, out);
    CHECK(out[0] == 0.5f);
    dsi::convert_to_float(t.at("f"), 0, 1, out);
    CHECK(out[0] == 3.5f);
    dsi::convert_to_float(t.at("h"), 3, 0, out);  // empty range at the end is fine

    expect_error([&] { dsi::convert_to_float(t.at("i"), 0, 1, out); }, DSI_ERR_CHECKPOINT,
                 {"'i'", path, "I32"});
    expect_error([&] { dsi::convert_to_float(t.at("h"), 2, 2, out); }, DSI_ERR_INVALID_ARGUMENT, {"'h'"});
    expect_error([&] { dsi::convert_to_float(t.at("h"), -1, 1, out); }, DSI_ERR_INVALID_ARGUMENT, {"'h'"});
    expect_error([&] { dsi::convert_to_float(t.at("h"), 1, -1, out); }, DSI_ERR_INVALID_ARGUMENT, {"'h'"});
}

// ---- golden checkpoints --------------------------------------------------------------

TEST_CASE("golden tiny-bf16 opens with every tensor") {
    auto ck = dsi::Checkpoint::open(kGoldenBf16);
    CHECK(ck->dir() == kGoldenBf16);
    CHECK(ck->names().size() == 221);
    CHECK(ck->total_bytes() == 14500544);  // = metadata.total_size of the index
    const dsi::TensorInfo &q = ck->get("model.layers.1.self_attn.q_b_proj.weight");
    CHECK(q.dtype == dsi::DType::BF16);
    CHECK(q.shape == std::vector<int64_t>{192, 128});
    CHECK(q.shape_str() == "[192, 128]");
    CHECK(q.numel() == 192 * 128);
    CHECK(q.nbytes == 192 * 128 * 2);
    CHECK(q.file == kGoldenBf16 + "/" + kShard1);
    const dsi::TensorInfo &bias = ck->get("model.layers.1.mlp.gate.e_score_correction_bias");
    CHECK(bias.dtype == dsi::DType::F32);
    CHECK(bias.shape == std::vector<int64_t>{16});
    CHECK(ck->find("model.layers.1.self_attn.q_b_proj.weight_scale_inv") == nullptr);
    expect_error([&] { ck->get("no.such.tensor"); }, DSI_ERR_CHECKPOINT,
                 {"missing tensor 'no.such.tensor'", kGoldenBf16});
}

TEST_CASE("golden tiny-fp8 opens with F8_E4M3 weights and F32 block scales") {
    auto ck = dsi::Checkpoint::open(kGoldenFp8);
    CHECK(ck->names().size() == 405);
    CHECK(ck->total_bytes() == 7801160);
    const dsi::TensorInfo &q = ck->get("model.layers.1.self_attn.q_b_proj.weight");
    CHECK(q.dtype == dsi::DType::F8_E4M3);
    CHECK(q.shape == std::vector<int64_t>{192, 128});
    CHECK(q.nbytes == 192 * 128);
    const dsi::TensorInfo &s = ck->get("model.layers.1.self_attn.q_b_proj.weight_scale_inv");
    CHECK(s.dtype == dsi::DType::F32);
    CHECK(s.shape == std::vector<int64_t>{2, 1});
    CHECK(ck->get("model.embed_tokens.weight").dtype == dsi::DType::BF16);
    CHECK(std::string(dsi::dtype_name(q.dtype)) == "F8_E4M3");
    CHECK(dsi::dtype_size(dsi::DType::I64) == 8);
}

TEST_CASE("dequantised tiny-fp8 equals tiny-bf16 bit for bit") {
    auto fp8 = dsi::Checkpoint::open(kGoldenFp8);
    auto bf16 = dsi::Checkpoint::open(kGoldenBf16);
    // Partial edge blocks (144 and 192 rows), several 128-column blocks, experts.
    for (const char *name :
         {"model.layers.1.self_attn.q_b_proj.weight", "model.layers.1.self_attn.kv_a_proj_with_mqa.weight",
          "model.layers.0.mlp.down_proj.weight", "model.layers.2.mlp.experts.3.down_proj.weight",
          "model.layers.3.self_attn.o_proj.weight"}) {
        INFO(name);
        const dsi::TensorInfo &w = fp8->get(name);
        const dsi::TensorInfo &s = fp8->get(std::string(name) + "_scale_inv");
        const dsi::TensorInfo &ref = bf16->get(name);
        REQUIRE(w.shape == ref.shape);
        const int64_t rows = w.shape[0], cols = w.shape[1];
        REQUIRE(s.shape == std::vector<int64_t>{(rows + 127) / 128, (cols + 127) / 128});
        std::vector<float> wf(size_t(w.numel())), sf(size_t(s.numel())), rf(size_t(ref.numel()));
        dsi::convert_to_float(w, 0, w.numel(), wf.data());
        dsi::convert_to_float(s, 0, s.numel(), sf.data());
        dsi::convert_to_float(ref, 0, ref.numel(), rf.data());
        int64_t mismatches = 0;
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < cols; ++c) {
                const float deq = wf[size_t(r * cols + c)] * sf[size_t((r / 128) * s.shape[1] + c / 128)];
                mismatches += float_bits(deq) != float_bits(rf[size_t(r * cols + c)]);
            }
        CHECK(mismatches == 0);
    }
}

// ---- malformed safetensors files -----------------------------------------------------

TEST_CASE("unreadable paths are DSI_ERR_IO") {
    TempDir tmp;
    const std::string empty = tmp / "empty.safetensors";
    write_bytes(empty, "");
    expect_error([&] { dsi::SafetensorsFile::open(empty); }, DSI_ERR_IO, {empty, "empty"});
    expect_error([&] { dsi::SafetensorsFile::open(tmp.path); }, DSI_ERR_IO, {tmp.path, "directory"});
    const std::string missing = tmp / "missing.safetensors";
    expect_error([&] { dsi::SafetensorsFile::open(missing); }, DSI_ERR_IO, {missing});
}

TEST_CASE("a file shorter than the 8-byte length prefix is DSI_ERR_FORMAT") {
    TempDir tmp;
    const std::string path = tmp / "short.safetensors";
    write_bytes(path, "\x05\x00\x00");
    expect_error([&] { dsi::SafetensorsFile::open(path); }, DSI_ERR_FORMAT, {path, "too short"});
}

TEST_CASE("header length past the end of the file") {
    TempDir tmp;
    const std::string path = tmp / "long.safetensors";
    write_bytes(path, safetensors_bytes("{}", "", 1000));
    expect_error([&] { dsi::SafetensorsFile::open(path); }, DSI_ERR_FORMAT, {path, "header length 1000"});
    // The largest possible length must not wrap around in the bounds check.
    write_bytes(path, safetensors_bytes("{}", "", ~0ull));
    expect_error([&] { dsi::SafetensorsFile::open(path); }, DSI_ERR_FORMAT, {path, "past the end"});
}

TEST_CASE("a golden shard cut inside its header or inside its data") {
    TempDir tmp;
    const std::string golden = read_bytes(kGoldenBf16 + "/" + kShard1);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | uint8_t(golden[size_t(i)]);
    const std::string path = tmp / kShard1;

    SUBCASE("cut in the header") {
        write_bytes(path, golden.substr(0, size_t(8 + header_len / 2)));
        expect_error([&] { dsi::SafetensorsFile::open(path); }, DSI_ERR_FORMAT, {path, "truncated"});
    }
    SUBCASE("cut in the data") {
        // The tensor stored last is the one whose bytes are cut off.
        const json header = json::parse(golden.substr(8, size_t(header_len)));
        std::string last;
        uint64_t last_end = 0;
        for (auto it = header.begin(); it != header.end(); ++it)
            if (it.key() != "__metadata__" && it.value()["data_offsets"][1].get<uint64_t>() > last_end) {
                last_end = it.value()["data_offsets"][1].get<uint64_t>();
                last = it.key();
            }
        write_bytes(path, golden.substr(0, golden.size() - 100));
        expect_error([&] { dsi::SafetensorsFile::open(path); }, DSI_ERR_FORMAT,
                     {path, "'" + last + "'", "past the end of the data"});
    }
}

TEST_CASE("header JSON that is garbage, or not an object") {
    expect_bad_file("{\"w\": {\"dtype\": ", "", DSI_ERR_FORMAT, {"not valid JSON"});
    expect_bad_file("\x01\x02garbage", "", DSI_ERR_FORMAT, {"not valid JSON"});
    expect_bad_file("[1, 2, 3]", "", DSI_ERR_FORMAT, {"not a JSON object"});
    expect_bad_file(R"({"w": [1]})", "", DSI_ERR_FORMAT, {"'w'", "not an object"});
}

TEST_CASE("__metadata__ must be an object of strings") {
    expect_bad_file(R"({"__metadata__": {"format": 1}})", "", DSI_ERR_FORMAT, {"__metadata__", "'format'"});
    expect_bad_file(R"({"__metadata__": "pt"})", "", DSI_ERR_FORMAT, {"__metadata__"});
}

TEST_CASE("tensor entries with a bad dtype, shape or data_offsets") {
    const std::string d8(8, '\0');
    SUBCASE("unknown dtype") {
        expect_bad_file(R"({"w":{"dtype":"F8_E5M2","shape":[8],"data_offsets":[0,8]}})", d8, DSI_ERR_FORMAT,
                        {"'w'", "unsupported dtype 'F8_E5M2'"});
        expect_bad_file(R"({"w":{"dtype":7,"shape":[8],"data_offsets":[0,8]}})", d8, DSI_ERR_FORMAT,
                        {"'w'", "dtype"});
    }
    SUBCASE("missing or unexpected fields") {
        expect_bad_file(R"({"w":{"dtype":"U8","shape":[8]}})", d8, DSI_ERR_FORMAT, {"'w'", "data_offsets"});
        expect_bad_file(R"({"w":{"dtype":"U8","shape":[8],"data_offsets":[0,8],"x":1}})", d8, DSI_ERR_FORMAT,
                        {"'w'", "'x'"});
    }
    SUBCASE("shape") {
        expect_bad_file(R"({"w":{"dtype":"U8","shape":[-8],"data_offsets":[0,8]}})", d8, DSI_ERR_FORMAT,
                        {"'w'", "non-negative"});
        expect_bad_file(R"({"w":{"dtype":"U8","shape":[2.5],"data_offsets":[0,8]}})", d8, DSI_ERR_FORMAT,
                        {"'w'", "non-negative integers"});
        expect_bad_file(R"({"w":{"dtype":"U8","shape":8,"data_offsets":[0,8]}})", d8, DSI_ERR_FORMAT,
                        {"'w'", "shape"});
        expect_bad_file(
            R"({"w":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,8]}})",
            d8, DSI_ERR_FORMAT, {"'w'", "overflows"});
        expect_bad_file(R"({"w":{"dtype":"I64","shape":[4611686018427387904],"data_offsets":[0,8]}})", d8,
                        DSI_ERR_FORMAT, {"'w'", "overflows"});
    }
    SUBCASE("size does not match the shape") {
        expect_bad_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", d8, DSI_ERR_FORMAT,
                        {"'w'", "8 bytes", "needs 12"});
    }
    SUBCASE("offsets") {
        expect_bad_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(4, '\0'),
                        DSI_ERR_FORMAT, {"'w'", "past the end of the data"});
        expect_bad_file(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[8,0]}})", d8, DSI_ERR_FORMAT,
                        {"'w'", "begin 8 > end 0"});
        expect_bad_file(R"({"w":{"dtype":"U8","shape":[8],"data_offsets":[0]}})", d8, DSI_ERR_FORMAT,
                        {"'w'", "data_offsets"});
        expect_bad_file(R"({"w":{"dtype":"U8","shape":[8],"data_offsets":[-1,7]}})", d8, DSI_ERR_FORMAT,
                        {"'w'", "data_offsets"});
    }
    SUBCASE("overlapping tensors") {
        expect_bad_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                        std::string(12, '\0'), DSI_ERR_FORMAT, {"'a'", "'b'", "overlap"});
    }
}

TEST_CASE("a valid hand-written file: metadata, empty tensors, every dtype") {
    TempDir tmp;
    const std::string path = tmp / "ok.safetensors";
    const std::string header = R"({"__metadata__":{"format":"pt"},)"
                               R"("e":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]},)"
                               R"("s":{"dtype":"BOOL","shape":[],"data_offsets":[0,1]},)"
                               R"("d":{"dtype":"F64","shape":[1],"data_offsets":[1,9]},)"
                               R"("z":{"dtype":"I16","shape":[2,0],"data_offsets":[9,9]}})";
    write_bytes(path, safetensors_bytes(header, std::string(9, '\x01')));
    auto file = dsi::SafetensorsFile::open(path);
    REQUIRE(file->tensors().size() == 4);
    CHECK(file->tensors().at("e").nbytes == 0);
    CHECK(file->tensors().at("s").numel() == 1);
    CHECK(file->tensors().at("s").shape_str() == "[]");
    CHECK(file->tensors().at("d").data == file->tensors().at("s").data + 1);
    CHECK(file->path() == path);
}

// ---- checkpoint directories -----------------------------------------------------------

TEST_CASE("checkpoint directories that are missing or hold no weights") {
    TempDir tmp;
    const std::string missing = tmp / "nope";
    expect_error([&] { dsi::Checkpoint::open(missing); }, DSI_ERR_IO, {missing});
    expect_error([&] { dsi::Checkpoint::open(tmp.path); }, DSI_ERR_IO,
                 {"no model.safetensors.index.json or model.safetensors in " + tmp.path});
    write_bytes(tmp / "file", "x");
    expect_error([&] { dsi::Checkpoint::open(tmp / "file"); }, DSI_ERR_IO, {tmp / "file", "not a directory"});
}

TEST_CASE("a single model.safetensors without an index") {
    TempDir tmp;
    write_bytes(tmp / "model.safetensors",
                safetensors_bytes(R"({"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})",
                                  std::string("\x80\x3F\x00\xC0", 4)));
    auto ck = dsi::Checkpoint::open(tmp.path);
    REQUIRE(ck->names() == std::vector<std::string>{"w"});
    float out[2];
    dsi::convert_to_float(ck->get("w"), 0, 2, out);
    CHECK(out[0] == 1.0f);
    CHECK(out[1] == -2.0f);
    expect_error([&] { ck->get("v"); }, DSI_ERR_CHECKPOINT, {"missing tensor 'v' in " + tmp.path});
}

TEST_CASE("sharded checkpoints with a broken index or shard") {
    TempDir tmp;
    const std::string dir = copy_golden(tmp, kGoldenBf16);
    const std::string index_path = dir + "/model.safetensors.index.json";
    json index = json::parse(read_bytes(index_path));

    SUBCASE("missing shard") {
        fs::remove(dir + "/" + kShard2);
        expect_error([&] { dsi::Checkpoint::open(dir); }, DSI_ERR_IO, {dir + "/" + kShard2});
    }
    SUBCASE("index maps a tensor to a shard that lacks it") {
        REQUIRE(index["weight_map"]["lm_head.weight"] == kShard1);
        index["weight_map"]["lm_head.weight"] = kShard2;
        write_bytes(index_path, index.dump());
        expect_error([&] { dsi::Checkpoint::open(dir); }, DSI_ERR_CHECKPOINT,
                     {"index maps 'lm_head.weight' to shard " + kShard2 + " which does not contain it"});
    }
    SUBCASE("index that names a shard outside the directory") {
        index["weight_map"]["lm_head.weight"] = "../" + kShard1;
        write_bytes(index_path, index.dump());
        expect_error([&] { dsi::Checkpoint::open(dir); }, DSI_ERR_FORMAT,
                     {index_path, "'lm_head.weight'", "../" + kShard1});
        index["weight_map"]["lm_head.weight"] = "sub/" + kShard1;
        write_bytes(index_path, index.dump());
        expect_error([&] { dsi::Checkpoint::open(dir); }, DSI_ERR_FORMAT, {index_path, "sub/" + kShard1});
    }
    SUBCASE("malformed index JSON") {
        write_bytes(index_path, "{\"weight_map\": {");
        expect_error([&] { dsi::Checkpoint::open(dir); }, DSI_ERR_FORMAT, {index_path, "not valid JSON"});
        write_bytes(index_path, R"({"metadata": {}})");
        expect_error([&] { dsi::Checkpoint::open(dir); }, DSI_ERR_FORMAT, {index_path, "weight_map"});
        write_bytes(index_path, R"({"weight_map": {"lm_head.weight": 1}})");
        expect_error([&] { dsi::Checkpoint::open(dir); }, DSI_ERR_FORMAT, {index_path, "'lm_head.weight'"});
    }
    SUBCASE("a shard corrupted behind a valid index") {
        const std::string shard = dir + "/" + kShard2;
        const std::string bytes = read_bytes(shard);
        write_bytes(shard, bytes.substr(0, bytes.size() / 2));
        expect_error([&] { dsi::Checkpoint::open(dir); }, DSI_ERR_FORMAT,
                     {shard, "past the end of the data"});
    }
    SUBCASE("tensors the index omits are still found") {
        index["weight_map"].erase("lm_head.weight");
        write_bytes(index_path, index.dump());
        auto ck = dsi::Checkpoint::open(dir);
        CHECK(ck->names().size() == 221);
        REQUIRE(ck->find("lm_head.weight") != nullptr);
        CHECK(ck->find("lm_head.weight")->file == dir + "/" + kShard1);
    }
}
