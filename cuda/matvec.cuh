// Launchers for MUL_MAT in its decode shape (few activation columns): weights F32, F16, BF16, Q8_0, Q4_0,
// Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K times f32 activations. Prefill-sized products of the 32-element
// block types have a tensor-core kernel of their own (cuda/matmul).
#pragma once

#include <cuda_runtime.h>

#include "core/dtype.h"
#include "cuda/common.cuh"
#include "cuda/quants.cuh"

namespace mf {

// w [K, M, B2, B3] of T (float, __half or __nv_bfloat16; packed rows, dims 1..3 any byte strides) times
// x f32 [K, N, C2, C3] (packed rows; C2 % B2 == 0, C3 % B3 == 0, weight batch = x batch / ratio)
// -> dst f32 contiguous [M, N, C2, C3], dst[m, n] = w row m . x row n.
template <typename T>
void launch_matvec_float(const void* w, const Shape4& sw, const float* x, const Shape4& sx, float* dst,
                         cudaStream_t stream);

// Bytes of device scratch launch_matvec_q needs for activations of shape sx (their quantized copy).
size_t matvec_q_scratch_bytes(const Shape4& sx);

// As launch_matvec_float for weights of Block (a block tag of cuda/quants.cuh; K a multiple of its
// block size). The activations are first quantized in scratch (16-byte aligned, at least
// matvec_q_scratch_bytes(sx)) to the weight type's CPU vec_dot_type (Q8_0, Q8_1 or Q8_K) with the CPU's
// reference arithmetic, then dotted with int8 dp4a, so both backends compute the same integer block
// sums and differ only in how the scaled sums are added up.
// x_quantized: scratch already holds x quantized to this Block's activation type (BlockTraits::act),
// left there by an earlier launch on this stream with the same x, sx and unchanged x data; then the
// quantization is skipped (q, k, v and gate, up read one activation: quantize it once).
// add: null, or f32 contiguous of dst's shape, added to each result as it is stored (dst[i] = dot + add[i],
// rounded as an ADD node after the product; add may be dst itself, element for element).
// quantize_inside (only where matvec_q_quantizes_inside, and not x_quantized): no quantizer launch and
// scratch untouched; each warp of the matvec quantizes its batch's row of x into shared memory itself,
// to the same bits. For decode's small per-head products (MLA's W_UK and W_UV: K = 128 and 512), whose
// quantizer launch took longer than the product.
template <typename Block>
void launch_matvec_q(const void* w, const Shape4& sw, const float* x, const Shape4& sx, void* scratch,
                     size_t scratch_bytes, bool x_quantized, float* dst, cudaStream_t stream,
                     const float* add = nullptr, bool quantize_inside = false);

// The largest row launch_matvec_q quantizes inside the matvec.
constexpr int kMatvecQuantizeInsideMaxK = 512;
// Whether launch_matvec_q can quantize x inside the matvec for weights of type w: a 32-element block
// type, one column (decode), packed rows of at most kMatvecQuantizeInsideMaxK elements.
bool matvec_q_quantizes_inside(DType w, const Shape4& sx);

}  // namespace mf
