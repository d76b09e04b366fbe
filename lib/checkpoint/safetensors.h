// Safetensors checkpoints: one memory-mapped file, or a directory of shards with
// model.safetensors.index.json. Every header is validated on open (JSON, dtypes,
// shapes vs byte sizes, offsets inside the file, no overlapping tensors), so later
// code can trust a TensorInfo.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace dsi {

enum class DType { F32, F16, BF16, F8_E4M3, I8, U8, I16, I32, I64, F64, BOOL };

const char *dtype_name(DType t);
size_t dtype_size(DType t);

// A tensor inside a mapped file. `data` stays valid while its Checkpoint lives.
struct TensorInfo {
    std::string name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    const uint8_t *data = nullptr;
    size_t nbytes = 0;
    std::string file;  // path of the shard, for error messages

    int64_t numel() const;
    std::string shape_str() const;  // "[256, 128]"
};

class SafetensorsFile {
public:
    // Maps and validates `path`. Throws dsi::Error: DSI_ERR_IO (cannot open/map),
    // DSI_ERR_FORMAT (truncated, bad header JSON, unknown dtype, offsets out of range
    // or overlapping, byte size != shape x dtype). Messages name the file and tensor.
    static std::unique_ptr<SafetensorsFile> open(const std::string &path);
    ~SafetensorsFile();
    SafetensorsFile(const SafetensorsFile &) = delete;
    SafetensorsFile &operator=(const SafetensorsFile &) = delete;

    const std::string &path() const { return path_; }
    const std::map<std::string, TensorInfo> &tensors() const { return tensors_; }

private:
    SafetensorsFile() = default;
    std::string path_;
    void *map_ = nullptr;
    size_t map_size_ = 0;
    std::map<std::string, TensorInfo> tensors_;
};

class Checkpoint {
public:
    // Opens model.safetensors.index.json (and every shard it names) or, without an
    // index, model.safetensors. Throws DSI_ERR_IO / DSI_ERR_FORMAT; an index entry
    // whose shard lacks the tensor is DSI_ERR_CHECKPOINT.
    static std::unique_ptr<Checkpoint> open(const std::string &dir);

    const std::string &dir() const { return dir_; }
    // NULL if absent.
    const TensorInfo *find(const std::string &name) const;
    // Throws DSI_ERR_CHECKPOINT "missing tensor 'name' in <dir>".
    const TensorInfo &get(const std::string &name) const;
    std::vector<std::string> names() const;
    size_t total_bytes() const;

private:
    std::string dir_;
    std::vector<std::unique_ptr<SafetensorsFile>> files_;
    std::map<std::string, const TensorInfo *> index_;
};

// Element conversions to float32 (exact for every supported float dtype).
float bf16_to_float(uint16_t v);
float f16_to_float(uint16_t v);
float e4m3_to_float(uint8_t v);  // OCP E4M3FN: no infinities, 0x7F/0xFF are NaN

// Converts `count` elements starting at element `first` of a float tensor
// (F32, F16, BF16, F8_E4M3 without scales) into out. Throws DSI_ERR_CHECKPOINT for
// other dtypes.
void convert_to_float(const TensorInfo &t, int64_t first, int64_t count, float *out);

}  // namespace dsi
