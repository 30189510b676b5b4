// KV-cache stores into quantized rows: SET_ROWS with a q8_0 or q4_0 destination (the cache), so a
// quantized cache is written in place, block by block, bit-identical to the CPU's quantizers.
#pragma once

#include "core/dtype.h"
#include "cuda/common.cuh"

namespace mf {

// src f32 [ne0, n] (strides ss) row i -> row ids[i] of dst (type Q8_0 or Q4_0, rows dst_nb1 bytes apart).
void launch_set_rows_quant(DType type, const float* src, const Shape4& ss, const int32_t* ids, void* dst,
                           int64_t dst_nb1, cudaStream_t stream);

}  // namespace mf
