// Launchers for the element-wise and row-moving kernels: broadcast binary ops, unary activations,
// CPY between F32/F16/BF16 (any strides) and from F32 into Q8_0/Q4_0 blocks, GET_ROWS, SET_ROWS, CONCAT.
#pragma once

#include <cuda_runtime.h>

#include "cuda/common.cuh"
#include "cuda/quants.cuh"

namespace mf {

// ADD and MUL broadcast b over a (a.ne[i] % b.ne[i] == 0); SWIGLU and GEGLU need equal shapes.
enum class BinaryOp { ADD, MUL, SWIGLU, GEGLU };
enum class UnaryOp { SCALE, SILU, GELU };

// dst f32 contiguous [a.ne] = op(a, b repeated); a and b f32 with any byte strides.
void launch_binary_f32(BinaryOp op, const void* a, const Shape4& sa, const void* b, const Shape4& sb, float* dst,
                       cudaStream_t stream);
// dst f32 contiguous [a.ne] = op(a); param is the factor of SCALE (unused otherwise).
void launch_unary_f32(UnaryOp op, float param, const void* a, const Shape4& sa, float* dst, cudaStream_t stream);

// Copies src into dst in row-major element order (same element count, shapes may differ), converting
// the type. Src and Dst are float, __half or __nv_bfloat16; both sides may have any byte strides.
template <typename Src, typename Dst>
void launch_cpy(const void* src, const Shape4& ss, void* dst, const Shape4& sd, cudaStream_t stream);

// f32 src (any strides) -> Q8_0 / Q4_0 blocks in dst, whose rows are packed blocks (nb[0] = block
// bytes, dims 1..3 any strides; sd.ne[0] % 32 == 0). Bit-identical to the CPU's quantize_row_*_ref.
void launch_cpy_f32_q8_0(const float* src, const Shape4& ss, void* dst, const Shape4& sd, cudaStream_t stream);
void launch_cpy_f32_q4_0(const float* src, const Shape4& ss, void* dst, const Shape4& sd, cudaStream_t stream);

// GET_ROWS: src [ne0, n_rows, B2, B3] packed rows of T (float, __half, __nv_bfloat16, or a block tag of
// cuda/quants.cuh: rows dequantized bit-identically to core's to_float),
// ids I32 [n, B2, B3] (any strides) -> dst f32 contiguous [ne0, n, B2, B3].
// An id outside [0, n_rows) yields a row of zeros (the CPU backend asserts; checking on the GPU
// would cost a device-to-host sync per graph).
template <typename T>
void launch_get_rows(const void* src, const Shape4& ss, const int32_t* ids, const Shape4& si, float* dst,
                     cudaStream_t stream);

// SET_ROWS: row i of f32 src [ne0, n] (shape ss; one tensor of any strides, or a CONCAT's two sources
// side by side) converted into row ids[i] of dst [ne0, R] of Dst (float, __half or __nv_bfloat16; any
// strides); ids I32 [n] contiguous. An id outside [0, R) is
// skipped (the CPU asserts; see GET_ROWS for why the GPU does not).
template <typename Dst>
void launch_set_rows(const RowsF32& src, const Shape4& ss, const int32_t* ids, void* dst, const Shape4& sd,
                     cudaStream_t stream);

// SET_ROWS as launch_set_rows, of a CONCAT's two sources (src.b, or src.rope) whose first, src.a, is
// MUL(RMS_NORM(norm.x), norm.w) not launched: the store normalizes the rows of norm.x (f32 [src.sa.ne[0],
// n], rows packed) as it reads them, with the RMS_NORM and MUL kernels' bits; src.a is not read.
template <typename Dst>
void launch_set_rows_normed(const RowsF32& src, const NormOf& norm, const Shape4& ss, const int32_t* ids, void* dst,
                            const Shape4& sd, cudaStream_t stream);

// CONCAT: f32 a and b (any strides) joined along dim into dst f32 contiguous.
void launch_concat_f32(const void* a, const Shape4& sa, const void* b, const Shape4& sb, int dim, float* dst,
                       cudaStream_t stream);

}  // namespace mf
