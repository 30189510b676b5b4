// Hugging Face safetensors checkpoints: a validating reader over mmapped files (one file, or shards
// listed by model.safetensors.index.json) whose tensors convert to f32 rows without copying the file.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace mf {

// One tensor of a safetensors file. Shapes are as stored (row-major: shape.back() varies fastest),
// the reverse of ggml's ne order.
struct SafetensorsTensor {
    std::string name;
    std::string dtype;           // as in the header: "F32", "F16", "BF16", "I64", "F8_E4M3", ...
    std::vector<int64_t> shape;  // empty for a scalar
    uint64_t n_elements = 0;
    uint64_t n_bytes = 0;
    const uint8_t* data = nullptr;   // inside the mapping; not aligned
    const std::string* file = nullptr;  // the path of the file holding it, for messages

    // The element type when it is one the converter reads (F32, F16, BF16); false otherwise.
    bool float_type(DType* out) const;
    // Converts n elements starting at element index first (row-major order) to f32 into dst.
    // Throws Error naming the tensor when its dtype is not F32, F16 or BF16.
    void read_f32(uint64_t first, uint64_t n, float* dst) const;
    // "[4096, 11008]": the shape for messages.
    std::string shape_str() const;
};

// One mapped safetensors file; every offset, length, shape and dtype is checked against the file
// size when it is opened. Move-only; tensor data pointers live as long as the object.
class SafetensorsFile {
public:
    // Maps path read-only and parses its header. Throws Error ("path: what is wrong").
    static SafetensorsFile open(const std::string& path);

    SafetensorsFile(SafetensorsFile&&) noexcept;
    SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
    ~SafetensorsFile();

    const std::string& path() const;
    // The tensors in header order (the JSON object's key order).
    const std::vector<SafetensorsTensor>& tensors() const;
    // The tensor called name, or null.
    const SafetensorsTensor* find(const std::string& name) const;
    // The string pairs of the header's "__metadata__" object (non-string values are skipped).
    const std::map<std::string, std::string>& metadata() const;

private:
    struct Impl;
    explicit SafetensorsFile(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

// Every tensor of an HF checkpoint directory: model.safetensors.index.json names the shards and
// which tensor lives in which; without it, model.safetensors, else every model*.safetensors file.
class SafetensorsCheckpoint {
public:
    // Opens dir's safetensors files. Throws Error when none exists, when a file is corrupt, when the
    // index names a missing shard or a tensor its shard lacks, or when two files hold one name.
    static SafetensorsCheckpoint open(const std::string& dir);

    // The tensor called name, or null.
    const SafetensorsTensor* find(const std::string& name) const;
    // Every tensor, sorted by name.
    std::vector<const SafetensorsTensor*> tensors() const;
    // The files opened, in the order they were read.
    std::vector<std::string> files() const;

private:
    std::vector<SafetensorsFile> files_;
    std::map<std::string, const SafetensorsTensor*> by_name_;
};

}  // namespace mf
