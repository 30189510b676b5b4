// Launchers for MUL_MAT in its prefill shape (many activation columns) on the tensor cores: weights of
// the 32-element block types Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 in int8 tiles ("MMQ"), and F16 / BF16 weights
// in half tiles; decode stays in cuda/matvec.
#pragma once

#include <cuda_runtime.h>

#include "cuda/common.cuh"
#include "cuda/quants.cuh"

namespace mf {

// True for the block types launch_matmul_q takes: those of 32 elements, one m16n8k32 mma's K each.
template <typename Block>
constexpr bool matmul_q_supported() {
    return BlockTraits<Block>::elems == QK;
}

// True when launch_matmul_q takes w: packed rows of whole blocks, rows and their lengths 4-byte
// aligned (the kernel copies them in 4-byte pieces). Q4_0, Q5_0 and Q8_0 rows of an odd number of blocks are not; the
// matvec kernel takes those.
template <typename Block>
bool matmul_q_fits(const void* w, const Shape4& sw);

// w [K, M] of Block (matmul_q_supported, matmul_q_fits) times x f32 [K, N] (packed rows)
// -> dst f32 contiguous [M, N], dst[m, n] = w row m . x row n. Same contract as launch_matvec_q
// (cuda/matvec.cuh) for 2-D operands: x is quantized into scratch (at least matvec_q_scratch_bytes(sx),
// 16-byte aligned) with the CPU's reference arithmetic unless x_quantized says an earlier launch left
// it there, and leaves it there for the next one; each block's integer sum is exact, so the result
// differs from the CPU's only in how the scaled sums are added up.
template <typename Block>
void launch_matmul_q(const void* w, const Shape4& sw, const float* x, const Shape4& sx, void* scratch,
                     size_t scratch_bytes, bool x_quantized, float* dst, cudaStream_t stream);

// True when launch_matmul_float takes these operands: 2-D, packed rows 16-byte aligned, K % 8 == 0.
template <typename T>
bool matmul_float_fits(const void* w, const Shape4& sw, const float* x, const Shape4& sx);

// Scratch launch_matmul_float needs for x of shape sx: its hi and lo halves, [K, N] T each.
template <typename T>
size_t matmul_float_scratch_bytes(const Shape4& sx);

// w [K, M] of T (__half or __nv_bfloat16) times x f32 [K, N] -> dst f32 contiguous [M, N], dst[m, n] =
// w row m . x row n, for operands matmul_float_fits accepts. Each activation is multiplied as T(x) +
// T(x - T(x)), so the result keeps f32 activations' precision (to 2^-17 of x for bf16) and differs from
// the CPU's only in summation order. The two halves are written into scratch (at least
// matmul_float_scratch_bytes(sx), 16-byte aligned) first, overwriting whatever it held.
template <typename T>
void launch_matmul_float(const void* w, const Shape4& sw, const float* x, const Shape4& sx, void* scratch,
                         size_t scratch_bytes, float* dst, cudaStream_t stream);

}  // namespace mf
