// Launchers for the row-wise kernels: RMS_NORM, ROPE (normal and NeoX, partial rotation) and
// SOFT_MAX with an optional broadcast mask. Every kernel gives one CUDA block to one row.
#pragma once

#include <cuda_runtime.h>

#include "cuda/common.cuh"

namespace mf {

// x f32 (rows packed: sx.nb[0] == 4, dims 1..3 any strides) -> dst f32 contiguous [sx.ne]:
// each row divided by sqrt(mean(row^2) + eps), then, when w (f32 [sx.ne[0]]) is given, times w as a
// MUL node after the RMS_NORM would (the norm and its weight in one launch).
void launch_rms_norm_f32(const float* x, const Shape4& sx, float eps, const float* w, float* dst,
                         cudaStream_t stream);

// x f32 [head_dim, n_head, n_tokens, ne3] (rows packed), pos I32 [n_tokens] contiguous -> dst f32
// contiguous. Rotates the first n_dims of each head by
// theta_i = pos * freq_scale * freq_base^(-2i/n_dims) / factors[i] (factors may be null: 1):
// pairs (2i, 2i+1) when neox is false, (i, i + n_dims/2) when true; the rest passes through.
// pos_ready: pos and factors are ready before the graph runs (the kernel may read them before it
// waits for the kernel before it).
void launch_rope_f32(const float* x, const Shape4& sx, const int32_t* pos, bool pos_ready, const float* factors,
                     int n_dims, bool neox, float freq_base, float freq_scale, float* dst, cudaStream_t stream);

// x f32 (rows packed) -> dst f32 contiguous: softmax over ne0 of x * scale + mask. mask is null or f32
// [ne0, >= ne1, M2, M3] (rows packed) with x.ne[2] % M2 == 0 and x.ne[3] % M3 == 0 (row i1 of the
// mask serves row i1 of every head). A row masked entirely to -inf comes out as zeros, as on the CPU.
void launch_soft_max_f32(const float* x, const Shape4& sx, const float* mask, const Shape4& sm, float scale,
                         float* dst, cudaStream_t stream);

}  // namespace mf
