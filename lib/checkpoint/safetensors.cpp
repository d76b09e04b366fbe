#include "checkpoint/safetensors.h"

#include "common/error.h"
#include "common/file.h"
#include "common/json_text.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace dsi {

using json = nlohmann::json;

namespace {

struct DTypeEntry {
    DType type;
    const char *name;
    size_t size;
};

// The dtypes a DeepSeek checkpoint (or its auxiliary files) may contain. Others that
// safetensors defines (F8_E5M2, F8_E8M0, U16, ...) are refused on open rather than
// mis-read later.
constexpr DTypeEntry kDTypes[] = {
    {DType::F32, "F32", 4}, {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2}, {DType::F8_E4M3, "F8_E4M3", 1},
    {DType::I8, "I8", 1},   {DType::U8, "U8", 1},   {DType::I16, "I16", 2},   {DType::I32, "I32", 4},
    {DType::I64, "I64", 8}, {DType::F64, "F64", 8}, {DType::BOOL, "BOOL", 1},
};

// The safetensors reference implementation refuses headers above 100 MB; a larger
// length is a corrupt file, not a real header.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

const DTypeEntry *find_dtype(const std::string &name) {
    for (const auto &e : kDTypes)
        if (name == e.name) return &e;
    return nullptr;
}

const DTypeEntry &dtype_entry(DType t) {
    for (const auto &e : kDTypes)
        if (e.type == t) return e;
    fail(DSI_ERR_INTERNAL, "unknown DType value %d", static_cast<int>(t));
}

// Owns a file descriptor so every early throw closes it.
struct Fd {
    int fd = -1;
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
};

uint64_t read_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

// A JSON value that must be a non-negative integer; nlohmann keeps unsigned and
// signed integers apart, and floats such as 3.0 are not offsets or dimensions.
bool as_u64(const json &v, uint64_t *out) {
    if (v.is_number_unsigned()) {
        *out = v.get<uint64_t>();
        return true;
    }
    if (v.is_number_integer() && v.get<int64_t>() >= 0) {
        *out = static_cast<uint64_t>(v.get<int64_t>());
        return true;
    }
    return false;
}

struct ParsedEntry {
    TensorInfo info;
    uint64_t begin = 0, end = 0;
};

ParsedEntry parse_entry(const std::string &path, const std::string &name, const json &v, uint64_t data_size) {
    const char *f = path.c_str(), *n = name.c_str();
    if (!v.is_object()) fail(DSI_ERR_FORMAT, "%s: tensor '%s': header entry is not an object", f, n);
    for (auto it = v.begin(); it != v.end(); ++it)
        if (it.key() != "dtype" && it.key() != "shape" && it.key() != "data_offsets")
            fail(DSI_ERR_FORMAT, "%s: tensor '%s': unexpected field '%s'", f, n, it.key().c_str());
    if (!v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
        fail(DSI_ERR_FORMAT, "%s: tensor '%s': needs dtype, shape and data_offsets", f, n);

    const json &jd = v["dtype"];
    if (!jd.is_string()) fail(DSI_ERR_FORMAT, "%s: tensor '%s': dtype is not a string", f, n);
    const DTypeEntry *dt = find_dtype(jd.get<std::string>());
    if (!dt)
        fail(DSI_ERR_FORMAT, "%s: tensor '%s': unsupported dtype '%s'", f, n, jd.get<std::string>().c_str());

    ParsedEntry e;
    e.info.name = name;
    e.info.dtype = dt->type;
    e.info.file = path;

    const json &js = v["shape"];
    if (!js.is_array()) fail(DSI_ERR_FORMAT, "%s: tensor '%s': shape is not an array", f, n);
    uint64_t numel = 1;
    for (const json &d : js) {
        uint64_t dim = 0;
        if (!as_u64(d, &dim))
            fail(DSI_ERR_FORMAT, "%s: tensor '%s': shape entries must be non-negative integers", f, n);
        if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
            __builtin_mul_overflow(numel, dim, &numel))
            fail(DSI_ERR_FORMAT, "%s: tensor '%s': shape %s overflows", f, n, js.dump().c_str());
        e.info.shape.push_back(static_cast<int64_t>(dim));
    }
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(dt->size), &nbytes))
        fail(DSI_ERR_FORMAT, "%s: tensor '%s': shape %s overflows", f, n, js.dump().c_str());

    const json &jo = v["data_offsets"];
    if (!jo.is_array() || jo.size() != 2 || !as_u64(jo[0], &e.begin) || !as_u64(jo[1], &e.end))
        fail(DSI_ERR_FORMAT, "%s: tensor '%s': data_offsets must be [begin, end] non-negative integers", f,
             n);
    if (e.begin > e.end)
        fail(DSI_ERR_FORMAT, "%s: tensor '%s': data_offsets begin %llu > end %llu", f, n,
             (unsigned long long)e.begin, (unsigned long long)e.end);
    if (e.end > data_size)
        fail(DSI_ERR_FORMAT,
             "%s: tensor '%s': data_offsets end %llu is past the end of the data (%llu bytes); "
             "file truncated?",
             f, n, (unsigned long long)e.end, (unsigned long long)data_size);
    if (e.end - e.begin != nbytes)
        fail(DSI_ERR_FORMAT, "%s: tensor '%s': %llu bytes but shape %s of %s needs %llu", f, n,
             (unsigned long long)(e.end - e.begin), js.dump().c_str(), dt->name, (unsigned long long)nbytes);
    e.info.nbytes = static_cast<size_t>(nbytes);
    return e;
}

void check_metadata(const std::string &path, const json &v) {
    if (!v.is_object()) fail(DSI_ERR_FORMAT, "%s: __metadata__ is not an object", path.c_str());
    for (auto it = v.begin(); it != v.end(); ++it)
        if (!it.value().is_string())
            fail(DSI_ERR_FORMAT, "%s: __metadata__ value '%s' is not a string", path.c_str(),
                 it.key().c_str());
}

// Sorted by begin, each tensor must end before the next starts. Empty tensors may
// share an offset with their neighbour.
void check_no_overlap(const std::string &path, std::vector<ParsedEntry> &entries) {
    std::sort(entries.begin(), entries.end(), [](const ParsedEntry &a, const ParsedEntry &b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    for (size_t i = 1; i < entries.size(); ++i)
        if (entries[i].begin < entries[i - 1].end)
            fail(DSI_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap (bytes %llu..%llu and %llu..%llu)",
                 path.c_str(), entries[i - 1].info.name.c_str(), entries[i].info.name.c_str(),
                 (unsigned long long)entries[i - 1].begin, (unsigned long long)entries[i - 1].end,
                 (unsigned long long)entries[i].begin, (unsigned long long)entries[i].end);
}

// The format requires the tensors to cover the data section exactly, without gaps. A
// header length that is off by a few bytes (shortened into its own padding) would
// otherwise shift every tensor of the file silently.
void check_coverage(const std::string &path, const std::vector<ParsedEntry> &sorted, uint64_t data_size) {
    uint64_t covered = 0;
    for (const ParsedEntry &e : sorted) {
        if (e.begin != covered)
            fail(DSI_ERR_FORMAT,
                 "%s: tensor '%s' starts at data byte %llu but the previous tensor ends at %llu; the tensors must "
                 "cover the data section without gaps (header length wrong?)",
                 path.c_str(), e.info.name.c_str(), (unsigned long long)e.begin, (unsigned long long)covered);
        covered = e.end;
    }
    if (covered != data_size)
        fail(DSI_ERR_FORMAT,
             "%s: the tensors cover %llu bytes but the data section after the header is %llu bytes; the header "
             "length or the file size is wrong",
             path.c_str(), (unsigned long long)covered, (unsigned long long)data_size);
}

}  // namespace

const char *dtype_name(DType t) {
    return dtype_entry(t).name;
}
size_t dtype_size(DType t) {
    return dtype_entry(t).size;
}

int64_t TensorInfo::numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

std::string TensorInfo::shape_str() const {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) {
        if (i) s += ", ";
        s += std::to_string(shape[i]);
    }
    return s + "]";
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string &path) {
    const char *f = path.c_str();
    Fd fd;
    size_t file_size = 0;
    fd.fd = open_regular_file(path, "safetensors file", &file_size);
    // mmap of length 0 fails with EINVAL, so an empty file is reported here.
    if (file_size == 0) fail(DSI_ERR_IO, "%s is empty", f);
    const uint64_t size = static_cast<uint64_t>(file_size);
    if (size < 8)
        fail(DSI_ERR_FORMAT, "%s: %llu bytes is too short for a safetensors file", f,
             (unsigned long long)size);

    std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
    file->path_ = path;
    void *map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.fd, 0);
    if (map == MAP_FAILED) fail(DSI_ERR_IO, "cannot map %s: %s", f, std::strerror(errno));
    file->map_ = map;  // owned from here: the destructor unmaps on any later throw
    file->map_size_ = size;

    const uint8_t *base = static_cast<const uint8_t *>(map);
    const uint64_t header_len = read_le64(base);
    if (header_len > size - 8)
        fail(DSI_ERR_FORMAT, "%s: header length %llu is past the end of the file (%llu bytes); truncated?", f,
             (unsigned long long)header_len, (unsigned long long)size);
    if (header_len > kMaxHeaderBytes)
        fail(DSI_ERR_FORMAT, "%s: header length %llu is implausibly large", f,
             (unsigned long long)header_len);

    const std::string_view header_text(reinterpret_cast<const char *>(base + 8), header_len);
    if (std::string problem = json_text_problem(header_text); !problem.empty())
        fail(DSI_ERR_FORMAT, "%s: header: %s", f, problem.c_str());
    json header;
    try {
        header = json::parse(header_text);
    } catch (const json::exception &e) {
        fail(DSI_ERR_FORMAT, "%s: header is not valid JSON: %s", f, e.what());
    }
    if (!header.is_object()) fail(DSI_ERR_FORMAT, "%s: header is not a JSON object", f);

    const uint64_t data_size = size - 8 - header_len;
    const uint8_t *data = base + 8 + header_len;
    std::vector<ParsedEntry> entries;
    for (auto it = header.begin(); it != header.end(); ++it) {
        if (it.key() == "__metadata__") {
            check_metadata(path, it.value());
            continue;
        }
        entries.push_back(parse_entry(path, it.key(), it.value(), data_size));
    }
    check_no_overlap(path, entries);
    check_coverage(path, entries, data_size);
    for (ParsedEntry &e : entries) {
        e.info.data = data + e.begin;
        file->tensors_.emplace(e.info.name, std::move(e.info));
    }
    return file;
}

SafetensorsFile::~SafetensorsFile() {
    if (map_) ::munmap(map_, map_size_);
}

// ---- Checkpoint ------------------------------------------------------------------

namespace {

// The index's shard -> tensors map, in shard order so shards open deterministically.
std::map<std::string, std::vector<std::string>> read_index(const std::string &index_path) {
    const char *f = index_path.c_str();
    json index;
    const std::string text = read_text_file(index_path, "checkpoint index");
    if (std::string problem = json_text_problem(text); !problem.empty())
        fail(DSI_ERR_FORMAT, "%s: %s", f, problem.c_str());
    try {
        index = json::parse(text);
    } catch (const json::exception &e) {
        fail(DSI_ERR_FORMAT, "%s: not valid JSON: %s", f, e.what());
    }
    // Only weight_map matters; "metadata" (total_size) and any other keys are informative.
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
        fail(DSI_ERR_FORMAT, "%s: expected an object with a \"weight_map\" object", f);

    std::map<std::string, std::vector<std::string>> shards;
    const json &wm = index["weight_map"];
    for (auto it = wm.begin(); it != wm.end(); ++it) {
        if (!it.value().is_string())
            fail(DSI_ERR_FORMAT, "%s: weight_map entry for '%s' is not a string", f, it.key().c_str());
        const std::string shard = it.value().get<std::string>();
        // Shards live next to the index; a path component could escape the directory.
        if (shard.empty() || shard == "." || shard.find('/') != std::string::npos ||
            shard.find("..") != std::string::npos || shard.find('\0') != std::string::npos)
            fail(DSI_ERR_FORMAT, "%s: weight_map entry for '%s' names an invalid shard file '%s'", f,
                 it.key().c_str(), shard.c_str());
        shards[shard].push_back(it.key());
    }
    return shards;
}

}  // namespace

std::unique_ptr<Checkpoint> Checkpoint::open(const std::string &dir) {
    struct stat st;
    if (::stat(dir.c_str(), &st) != 0)
        fail(DSI_ERR_IO, "cannot open checkpoint directory %s: %s", dir.c_str(), std::strerror(errno));
    if (!S_ISDIR(st.st_mode)) fail(DSI_ERR_IO, "checkpoint path %s is not a directory", dir.c_str());

    std::unique_ptr<Checkpoint> ck(new Checkpoint());
    ck->dir_ = dir;
    const std::string index_path = dir + "/model.safetensors.index.json";
    const std::string single_path = dir + "/model.safetensors";

    if (is_regular_file(index_path)) {
        for (const auto &[shard, names] : read_index(index_path)) {
            ck->files_.push_back(SafetensorsFile::open(dir + "/" + shard));
            const SafetensorsFile &file = *ck->files_.back();
            for (const std::string &name : names) {
                auto it = file.tensors().find(name);
                if (it == file.tensors().end())
                    fail(DSI_ERR_CHECKPOINT, "%s: index maps '%s' to shard %s which does not contain it",
                         index_path.c_str(), name.c_str(), shard.c_str());
                ck->index_[name] = &it->second;
            }
        }
    } else if (is_regular_file(single_path)) {
        ck->files_.push_back(SafetensorsFile::open(single_path));
    } else {
        fail(DSI_ERR_IO, "no model.safetensors.index.json or model.safetensors in %s", dir.c_str());
    }

    // Tensors the index does not list are still reachable. One that the index omits
    // but two shards hold would be ambiguous.
    std::map<std::string, const TensorInfo *> unindexed;
    for (const auto &file : ck->files_)
        for (const auto &[name, info] : file->tensors()) {
            if (ck->index_.count(name)) continue;
            auto [it, fresh] = unindexed.emplace(name, &info);
            if (!fresh)
                fail(DSI_ERR_CHECKPOINT, "tensor '%s' is in both %s and %s and the index names neither",
                     name.c_str(), it->second->file.c_str(), info.file.c_str());
        }
    ck->index_.insert(unindexed.begin(), unindexed.end());
    return ck;
}

const TensorInfo *Checkpoint::find(const std::string &name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : it->second;
}

const TensorInfo &Checkpoint::get(const std::string &name) const {
    const TensorInfo *t = find(name);
    if (!t) fail(DSI_ERR_CHECKPOINT, "missing tensor '%s' in %s", name.c_str(), dir_.c_str());
    return *t;
}

std::vector<std::string> Checkpoint::names() const {
    std::vector<std::string> out;
    out.reserve(index_.size());
    for (const auto &kv : index_) out.push_back(kv.first);
    return out;
}

size_t Checkpoint::total_bytes() const {
    size_t n = 0;
    for (const auto &kv : index_) n += kv.second->nbytes;
    return n;
}

// ---- element conversions ---------------------------------------------------------

namespace {

float bits_to_float(uint32_t bits) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

// E4M3FN has only 256 codes; a table makes the hot dequantisation loop a lookup.
struct E4M3Table {
    float v[256];
    E4M3Table() {
        for (int c = 0; c < 256; ++c) {
            const uint32_t sign = static_cast<uint32_t>(c & 0x80) << 24;
            const int exp = (c >> 3) & 0xF, mant = c & 0x7;
            if (exp == 0xF && mant == 0x7)
                v[c] = bits_to_float(sign | 0x7FC00000u);  // the only NaN encodings
            else if (exp == 0)                             // zero or subnormal: mant * 2^-9
                v[c] = sign ? -std::ldexp(float(mant), -9) : std::ldexp(float(mant), -9);
            else  // rebias 7 -> 127 and widen the 3-bit mantissa
                v[c] = bits_to_float(sign | (uint32_t(exp + 120) << 23) | (uint32_t(mant) << 20));
        }
    }
};

}  // namespace

float bf16_to_float(uint16_t v) {
    return bits_to_float(uint32_t(v) << 16);
}

float f16_to_float(uint16_t v) {
    const uint32_t sign = uint32_t(v & 0x8000) << 16;
    const uint32_t exp = (v >> 10) & 0x1F, mant = v & 0x3FF;
    if (exp == 0x1F) return bits_to_float(sign | 0x7F800000u | (mant << 13));  // inf / NaN
    if (exp == 0) {  // zero or subnormal: mant * 2^-24, exact in float
        const float mag = std::ldexp(float(mant), -24);
        return sign ? -mag : mag;
    }
    return bits_to_float(sign | ((exp + 112) << 23) | (mant << 13));
}

float e4m3_to_float(uint8_t v) {
    static const E4M3Table table;
    return table.v[v];
}

void convert_to_float(const TensorInfo &t, int64_t first, int64_t count, float *out) {
    const int64_t n = t.numel();
    if (first < 0 || count < 0 || first > n || count > n - first)
        fail(DSI_ERR_INVALID_ARGUMENT, "convert_to_float: elements [%lld, +%lld) out of range for '%s' %s",
             (long long)first, (long long)count, t.name.c_str(), t.shape_str().c_str());
    if (count == 0) return;
    const uint8_t *p = t.data + static_cast<size_t>(first) * dtype_size(t.dtype);
    // memcpy per element: the mapped data need not be aligned for its dtype.
    switch (t.dtype) {
        case DType::F32:
            std::memcpy(out, p, static_cast<size_t>(count) * 4);
            return;
        case DType::BF16:
        case DType::F16: {
            const bool bf = t.dtype == DType::BF16;
            for (int64_t i = 0; i < count; ++i) {
                uint16_t h;
                std::memcpy(&h, p + 2 * i, 2);
                out[i] = bf ? bf16_to_float(h) : f16_to_float(h);
            }
            return;
        }
        case DType::F8_E4M3:
            for (int64_t i = 0; i < count; ++i) out[i] = e4m3_to_float(p[i]);
            return;
        default:
            fail(DSI_ERR_CHECKPOINT, "tensor '%s' in %s has dtype %s, which is not a float type",
                 t.name.c_str(), t.file.c_str(), dtype_name(t.dtype));
    }
}

}  // namespace dsi
