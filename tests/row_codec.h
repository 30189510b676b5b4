// Host-side row conversion for tests: f32 values <-> rows of any dtype, only through the dtype
// table's to_float/from_float (the functions under test elsewhere are never used to check themselves).
#pragma once

#include <cstdint>
#include <vector>

#include "core/dtype.h"

namespace mf_test {

// x holds rows of ne0 values; returns them converted to type, row after row.
inline std::vector<uint8_t> encode(mf::DType type, const std::vector<float>& x, int64_t ne0) {
    const int64_t rows = int64_t(x.size()) / ne0;
    const size_t row_size = mf::dtype_row_size(type, ne0);
    std::vector<uint8_t> out(row_size * size_t(rows));
    for (int64_t r = 0; r < rows; ++r)
        mf::dtype_traits(type).from_float(x.data() + r * ne0, out.data() + size_t(r) * row_size, ne0);
    return out;
}

// bytes holds rows of ne0 elements of type; returns their f32 values.
inline std::vector<float> decode(mf::DType type, const std::vector<uint8_t>& bytes, int64_t ne0) {
    const size_t row_size = mf::dtype_row_size(type, ne0);
    const int64_t rows = int64_t(bytes.size() / row_size);
    std::vector<float> out(size_t(rows * ne0));
    for (int64_t r = 0; r < rows; ++r)
        mf::dtype_traits(type).to_float(bytes.data() + size_t(r) * row_size, out.data() + r * ne0, ne0);
    return out;
}

}  // namespace mf_test
