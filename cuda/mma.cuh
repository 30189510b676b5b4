// Warp-level tensor-core helpers (sm_80+): the f16 / bf16 mma.sync m16n8k16 with f32 accumulators and
// the ldmatrix loads that produce its fragments from row-major tiles in shared memory.
#pragma once

#include <type_traits>

#include "cuda/common.cuh"

namespace mf {

// d += a (16 x 16, row-major) . b (16 x 8, column-major), f32 accumulators. Fragments (PTX ISA,
// mma.m16n8k16 .f16/.bf16), g = lane / 4, t = lane % 4: a[0] row g, k 2t, 2t + 1; a[1] row g + 8;
// a[2], a[3] as a[0], a[1] at k + 8; b[0] column g, k 2t, 2t + 1; b[1] k + 8; d[0], d[1] row g,
// columns 2t, 2t + 1; d[2], d[3] row g + 8. Two halves per register, the lower k (or column) low.
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    if constexpr (std::is_same_v<T, __half>) {
        asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    } else {
        asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
}

// Four 8 x 8 matrices of 16-bit values from shared memory: lane l gives the address of row l % 8 of
// matrix l / 8 (16 contiguous bytes, 16-byte aligned); register i gets matrix i, lane l holding row
// l / 4, columns 2 (l % 4) and 2 (l % 4) + 1 (TRANS: column l / 4, rows 2 (l % 4) and 2 (l % 4) + 1).
template <bool TRANS>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row_addr) {
    const unsigned a = unsigned(__cvta_generic_to_shared(row_addr));
    if constexpr (TRANS) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a));
    } else {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a));
    }
}

// Two floats as one register of halves (lo in the low half), rounded to nearest.
__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
}

}  // namespace mf
