// libFuzzer target for the GGUF reader: parses arbitrary bytes from memory, then touches every key,
// array element and tensor through the public API. Built and run by tests/fuzz/run.sh, not by CMake.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/common.h"
#include "core/gguf.h"

namespace {

// Reads every element of v through the accessors a model loader uses; type mismatches throw mf::Error.
void touch(const mf::GGUFValue& v, int budget) {
    v.type_str();
    v.to_string(4, 64);
    try { v.as_i64(); } catch (const mf::Error&) {}
    try { v.as_u32(); } catch (const mf::Error&) {}
    try { v.as_f32(); } catch (const mf::Error&) {}
    try { v.as_bool(); } catch (const mf::Error&) {}
    try { v.as_str(); } catch (const mf::Error&) {}
    if (!v.is_array()) return;
    try { v.to_i32_vector(); } catch (const mf::Error&) {}
    try { v.to_f32_vector(); } catch (const mf::Error&) {}
    try { v.to_u8_vector(); } catch (const mf::Error&) {}
    try { v.raw_data(); } catch (const mf::Error&) {}
    const uint64_t n = v.size() < uint64_t(budget) ? v.size() : uint64_t(budget);
    for (uint64_t i = 0; i < n; ++i) {
        if (v.elem_type() == mf::GGUFType::STRING) v.str(i);
        touch(v.at(i), budget / 2);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const mf::GGUFFile f = mf::GGUFFile::parse(data, size, "fuzz");
        for (size_t i = 0; i < f.n_kv(); ++i) {
            const mf::GGUFValue& v = f.kv(i);
            if (f.find(v.key()) != &v) __builtin_trap();
            touch(v, 64);
        }
        try { f.get_u32("general.alignment"); } catch (const mf::Error&) {}
        try { f.get_str("general.architecture"); } catch (const mf::Error&) {}
        uint64_t total = 0;
        for (size_t i = 0; i < f.n_tensors(); ++i) {
            const mf::GGUFTensorInfo& t = f.tensor(i);
            if (f.find_tensor(t.name) != &t) __builtin_trap();
            const uint8_t* p = static_cast<const uint8_t*>(t.data);
            if (p < data || t.n_bytes > size || p > data + size - t.n_bytes) __builtin_trap();
            if (t.n_bytes) total += p[0] + p[t.n_bytes - 1];  // the whole extent must be readable
            if (t.offset % f.alignment() != 0) __builtin_trap();
        }
        (void)total;
    } catch (const mf::Error&) {
    }
    return 0;
}
