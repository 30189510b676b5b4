// Test helpers for the safetensors and convert suites: a writer of small safetensors files (valid
// ones, or with a hand-made header) and of tiny Hugging Face checkpoint folders.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/common.h"
#include "core/dtype.h"

namespace mf_test {

struct StTensor {
    std::string name;
    std::string dtype;           // "F32", "F16", "BF16", "I64", ...
    std::vector<int64_t> shape;  // row-major, as torch
    std::vector<uint8_t> bytes;
};

// A tensor of f32 values stored as dtype (F32, F16 or BF16).
inline StTensor st_tensor(const std::string& name, const std::vector<int64_t>& shape, const std::vector<float>& v,
                          const std::string& dtype = "F32") {
    StTensor t{name, dtype, shape, {}};
    for (float x : v) {
        if (dtype == "F32") {
            uint8_t b[4];
            std::memcpy(b, &x, 4);
            t.bytes.insert(t.bytes.end(), b, b + 4);
        } else {
            const uint16_t h = dtype == "F16" ? mf::fp32_to_fp16(x) : mf::fp32_to_bf16(x);
            t.bytes.push_back(uint8_t(h & 0xff));
            t.bytes.push_back(uint8_t(h >> 8));
        }
    }
    return t;
}

// The header safetensors' writer makes for ts (data laid out in order, no padding).
inline nlohmann::ordered_json st_header(const std::vector<StTensor>& ts) {
    nlohmann::ordered_json h = nlohmann::ordered_json::object();
    h["__metadata__"] = {{"format", "pt"}};
    uint64_t at = 0;
    for (const auto& t : ts) {
        h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {at, at + t.bytes.size()}}};
        at += t.bytes.size();
    }
    return h;
}

// Writes header (as given) then every tensor's bytes; returns the file's size.
inline size_t write_safetensors_raw(const std::string& path, const std::string& header, const std::vector<StTensor>& ts) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    const uint64_t n = header.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out.write(header.data(), std::streamsize(header.size()));
    size_t size = 8 + header.size();
    for (const auto& t : ts) {
        out.write(reinterpret_cast<const char*>(t.bytes.data()), std::streamsize(t.bytes.size()));
        size += t.bytes.size();
    }
    return size;
}

inline void write_safetensors(const std::string& path, const std::vector<StTensor>& ts) {
    write_safetensors_raw(path, st_header(ts).dump(), ts);
}

inline void write_text(const std::string& path, const std::string& text) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

inline bool file_exists(const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0;
}

// A fresh empty folder under TMPDIR.
inline std::string temp_dir(const std::string& name) {
    const char* tmp = std::getenv("TMPDIR");
    static int counter = 0;
    const std::string dir = std::string(tmp ? tmp : "/tmp") + "/minfer_st_" + std::to_string(::getpid()) + "_" +
                            std::to_string(counter++) + "_" + name;
    std::string cmd = "rm -rf '" + dir + "' && mkdir -p '" + dir + "'";
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("cannot make " + dir);
    return dir;
}

inline void remove_dir(const std::string& dir) {
    const std::string cmd = "rm -rf '" + dir + "'";
    if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "cannot remove %s\n", dir.c_str());
}

// The message of the mf::Error f throws ("" when it throws none).
template <typename F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const mf::Error& e) {
        return e.what();
    }
    return "";
}

}  // namespace mf_test
