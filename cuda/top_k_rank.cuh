// TOP_K's order as one 32-bit key a value, shared by TOP_K's kernels (cuda/moe.cu) and the MUL_MAT_ID
// that routes its own tokens (cuda/matvec_id.cu), so both pick the CPU's experts.
#pragma once

#include <cstdint>

#include "cuda/common.cuh"

namespace mf {

namespace {

// Values a lane holds when one warp ranks a row: value i at lane i % 32, slot i / 32 (rows of up to 64).
constexpr int TOPK_RANK_VALUES = 2;

// One key per number (+0 and -0 alike), larger numbers larger keys, NaN below every number (key 0);
// equal keys rank by index. That is ranks_before's order (cuda/moe.cu), the CPU's partial sort's.
__device__ __forceinline__ uint32_t rank_key(float v) {
    if (isnan(v)) return 0u;
    const uint32_t u = __float_as_uint(v == 0.0f ? 0.0f : v);
    return u & 0x80000000u ? ~u : u | 0x80000000u;
}

}  // namespace

}  // namespace mf
