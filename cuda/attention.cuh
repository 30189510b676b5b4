// Flash attention over the KV cache (FLASH_ATTN): split along the cached positions, an online
// softmax per split, and a combine step; K and V rows are read in their stored types.
#pragma once

#include "core/dtype.h"
#include "cuda/common.cuh"

namespace mf {

// Whether the kernels cover this combination (K/V types f16, q8_0, q4_0; equal head sizes of
// 16, 32, 64, 128 or 256).
bool flash_attn_supported(DType type_k, DType type_v, int64_t head_dim_k, int64_t head_dim_v);
// Scratch bytes launch_flash_attn needs for these sizes (0 when one split suffices).
size_t flash_attn_workspace_bytes(int64_t n_head, int64_t n_head_kv, int64_t n_tokens, int64_t n_kv, int64_t head_dim_v);
// q f32 [hd, n_head, T] (strides qs), k/v [hd, n_kv, n_head_kv] rows of type_k/type_v (strides ks/vs),
// mask f32 [n_kv, >= T] with row stride mask_nb1 bytes -> out f32 [hd, n_head, T] contiguous.
// ws: flash_attn_workspace_bytes of device scratch.
void launch_flash_attn(DType type_k, DType type_v, const float* q, const Shape4& qs, const void* k, const Shape4& ks,
                       const void* v, const Shape4& vs, const float* mask, int64_t mask_nb1, float* out, float* ws,
                       float scale, cudaStream_t stream);

// Each of `rows` contiguous rows of n floats (n a power of two, at most 1024) times the orthonormal
// Sylvester-Hadamard matrix (Op::HADAMARD); in place when x == y.
void launch_hadamard(const float* x, float* y, int64_t n, int64_t rows, cudaStream_t stream);

}  // namespace mf
