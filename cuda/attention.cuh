// Attention over the KV cache: FLASH_ATTN (split along the cached positions, an online softmax per
// split, a combine step) and ATTN_FUSED (scores in shared memory); K and V rows read in their stored types.
#pragma once

#include "core/dtype.h"
#include "cuda/common.cuh"

namespace mf {

// A K row's last `width` values kept apart in f16 rows (FLASH_ATTN's src4, a quantized MLA latent's
// roped part): the rows and their position and head strides. width 0: none.
struct KTail {
    const char* rows = nullptr;
    int64_t width = 0, nb1 = 0, nb2 = 0;
};

// Whether the kernels cover this combination (K/V types f16, q8_0, q4_0; equal head sizes of
// 16, 32, 64, 128 or 256, and MLA's latents). head_dim_k is the whole K row's, `tail` values of it
// apart (KTail).
bool flash_attn_supported(DType type_k, DType type_v, int64_t head_dim_k, int64_t head_dim_v, int64_t tail = 0);
// Scratch bytes launch_flash_attn needs for these sizes (0 when one split suffices).
size_t flash_attn_workspace_bytes(int64_t n_head, int64_t n_head_kv, int64_t n_tokens, int64_t n_kv, int64_t head_dim_v);
// q f32 [hd, n_head, T] (shape qs), k/v [hd, n_kv, n_head_kv] rows of type_k/type_v (strides ks/vs),
// mask f32 [n_kv, >= T] with row stride mask_nb1 bytes -> out f32 [hd, n_head, T] contiguous.
// ws: flash_attn_workspace_bytes of device scratch. q is one tensor (rows_f32(q, qs)) or, only where
// flash_attn_takes_split_q (the MLA kernel), two side by side (a CONCAT's sources; qs its shape).
// tail: K's rows end in its values (then v is k, of k's quantized type).
void launch_flash_attn(DType type_k, DType type_v, const RowsF32& q, const Shape4& qs, const void* k,
                       const Shape4& ks, const void* v, const Shape4& vs, const float* mask, int64_t mask_nb1,
                       float* out, float* ws, float scale, cudaStream_t stream, const KTail& tail = {});
bool flash_attn_takes_split_q(DType type_k, DType type_v, const Shape4& qs, const void* k, const Shape4& ks,
                              const void* v, const Shape4& vs);
// Whether, with q as two sources, out may lie over them: every query is read before out is written
// (several splits: out is written by the combine launch after the attention's; one block: it loads
// its queries first). Otherwise one block could overwrite queries another has yet to load.
bool flash_attn_split_q_reads_first(const Shape4& qs, const Shape4& ks);

// The combine step after a split attention kernel (cuda/mla.cu's as well as this file's): ws holds,
// for each of `rows` rows and each of n_splits splits, head_dim_v weighted sums then the split's max
// (natural log units) and sum -> out f32 [head_dim_v, rows].
void launch_attn_combine(const float* ws, float* out, int64_t rows, int n_splits, int64_t head_dim_v,
                         cudaStream_t stream);

// ATTN_FUSED: one block per (KV head, chunk of its query heads, token) keeps every score of the span
// in shared memory. Shared bytes a block serving `heads` query heads needs.
size_t attn_fused_smem_bytes(int64_t heads, int64_t head_dim_k, int64_t n_kv);
// Whether the kernel covers this combination: flash_attn_supported's types and head sizes, and a span
// whose scores for one query head fit in smem_limit bytes (the device's opt-in shared memory per block:
// about 56K positions at 227 KB). Longer spans are refused, not chunked.
bool attn_fused_supported(DType type_k, DType type_v, int64_t head_dim_k, int64_t head_dim_v, int64_t n_kv,
                          size_t smem_limit, int64_t tail = 0);
// Same operands as launch_flash_attn; no workspace. smem_limit: as for attn_fused_supported.
void launch_attn_fused(DType type_k, DType type_v, const float* q, const Shape4& qs, const void* k, const Shape4& ks,
                       const void* v, const Shape4& vs, const float* mask, int64_t mask_nb1, float* out, float scale,
                       size_t smem_limit, cudaStream_t stream, const KTail& tail = {});

// CPY of q8_0 / q4_0 rows (packed, any row strides) into f32 of any strides, elements matched in
// row-major order: the naive attention path's dequantized V.
void launch_cpy_kv_to_f32(DType type, const void* src, const Shape4& ss, float* dst, const Shape4& sd,
                          cudaStream_t stream);

// Each of `rows` contiguous rows of n floats (n a power of two, at most 1024) rotated by H S, or by
// its inverse S H (Op::HADAMARD); in place when x == y.
void launch_hadamard(const float* x, float* y, int64_t n, int64_t rows, bool inverse, cudaStream_t stream);

}  // namespace mf
