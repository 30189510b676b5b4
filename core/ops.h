// Graph-building op constructors: each call checks shapes and records a node; nothing is computed here.
// Shapes follow ggml: ne[0] is the row (fastest) dimension. See the Op enum in tensor.h for semantics.
#pragma once

#include "core/tensor.h"

namespace mf {

// a [ne0, n_rows, ...], ids I32 [n] -> f32 [ne0, n]
Tensor* get_rows(Context& ctx, Tensor* a, Tensor* ids);
// a [K, M, B2, B3] (weights), b f32 [K, N, C2, C3] -> f32 [M, N, C2, C3]
Tensor* mul_mat(Context& ctx, Tensor* a, Tensor* b);
// a + b, b broadcast to a's shape
Tensor* add(Context& ctx, Tensor* a, Tensor* b);
// a * b, b broadcast to a's shape
Tensor* mul(Context& ctx, Tensor* a, Tensor* b);
// a * s
Tensor* scale(Context& ctx, Tensor* a, float s);
// a / rms(a) along ne0
Tensor* rms_norm(Context& ctx, Tensor* a, float eps);
// a [head_dim, n_head, n_tokens], pos I32 [n_tokens]: rotate the first n_dims of each head;
// freq_factors (optional) f32 [n_dims / 2] divide each pair's angle
Tensor* rope(Context& ctx, Tensor* a, Tensor* pos, int n_dims, RopeMode mode, float freq_base,
             float freq_scale, Tensor* freq_factors = nullptr);
// softmax over ne0 of (a * s + mask); mask may be null, else f32 [a.ne0, >= a.ne1]
Tensor* soft_max(Context& ctx, Tensor* a, Tensor* mask, float s);
Tensor* silu(Context& ctx, Tensor* a);
Tensor* gelu(Context& ctx, Tensor* a);
// silu(a) * b
Tensor* swiglu(Context& ctx, Tensor* a, Tensor* b);
// gelu(a) * b
Tensor* geglu(Context& ctx, Tensor* a, Tensor* b);
// Writes a (converted) into b; returns a view of b that must be in the graph for the write to happen.
Tensor* cpy(Context& ctx, Tensor* a, Tensor* b);
// a converted to type, as a new contiguous tensor of a's shape
Tensor* cast(Context& ctx, Tensor* a, DType type);
// a made contiguous (a copy when a is a strided view)
Tensor* cont(Context& ctx, Tensor* a);
// Writes row i of src (f32 [ne0, n], converted to dst's type) into row ids[i] of dst [ne0, R];
// returns a view of dst that must be in the graph for the write to happen. ids: I32 [n].
Tensor* set_rows(Context& ctx, Tensor* dst, Tensor* src, Tensor* ids);
// Each row rotated by the orthonormal H S of its length (a power of two), or by its inverse
// (see Op::HADAMARD); a: f32 [n, ...] -> [n, ...]
Tensor* hadamard(Context& ctx, Tensor* a, bool inverse = false);
// The sign S applies to element i of a HADAMARD row: a fixed pseudo-random +1 or -1.
inline float hadamard_sign(uint32_t i) { return ((i * 2654435761u) >> 31) ? -1.0f : 1.0f; }
// Attention of q over a KV cache (see Op::FLASH_ATTN): q f32 [hd_k, n_head, T], k [hd_k, n_kv, n_head_kv],
// v [hd_v, n_kv, n_head_kv], mask f32 [n_kv, >= T] -> f32 [hd_v, n_head, T]. k_tail (optional) f16
// [hd_r, n_kv, n_head_kv]: the K rows' last hd_r values, stored apart; q is then [hd_k + hd_r, ...]
Tensor* flash_attn(Context& ctx, Tensor* q, Tensor* k, Tensor* v, Tensor* mask, float scale, Tensor* k_tail = nullptr);
// A FLASH_ATTN / ATTN_FUSED node's K row width: k's values and its tail's (q's head size).
int64_t attention_key_width(const Tensor* node);
// The same attention as flash_attn with every score of the span materialized (see Op::ATTN_FUSED)
Tensor* attn_fused(Context& ctx, Tensor* q, Tensor* k, Tensor* v, Tensor* mask, float scale, Tensor* k_tail = nullptr);
// a and b joined along dim
Tensor* concat(Context& ctx, Tensor* a, Tensor* b, int dim);
// Expert-indexed matmul (see Op::MUL_MAT_ID): experts [K, M, n_expert], b f32 [K, n_used or 1, T],
// ids I32 [n_used, T] -> f32 [M, n_used, T]; with weights f32 [n_used, T] (any strides) the slots'
// rows are summed, each times its weight, in slot order: -> f32 [M, T]
Tensor* mul_mat_id(Context& ctx, Tensor* experts, Tensor* b, Tensor* ids, Tensor* weights = nullptr);
// The weighted form with each slot's weight taken from the router: softmax(logits[:, t])[ids[u, t]] *
// scale, logits f32 [n_expert, T] (the routing's SOFT_MAX, gather and SCALE folded into the sum)
Tensor* mul_mat_id_softmax_gated(Context& ctx, Tensor* experts, Tensor* b, Tensor* ids, Tensor* logits,
                                 float scale);
// a f32 [n, ...] -> I32 [k, ...]: the indices of the k largest values per row, largest first, ties by index
Tensor* top_k(Context& ctx, Tensor* a, int k);
// a f32 [ne0, ...] (any strides) -> f32 [1, ...]: the sum of each row
Tensor* sum_rows(Context& ctx, Tensor* a);
// a / b, b broadcast to a's shape
Tensor* div(Context& ctx, Tensor* a, Tensor* b);
Tensor* sigmoid(Context& ctx, Tensor* a);

// Views share a's memory. Strides nb1..nb3 are in bytes; offset in bytes from a's first element.
Tensor* view_1d(Context& ctx, Tensor* a, int64_t ne0, size_t offset);
Tensor* view_2d(Context& ctx, Tensor* a, int64_t ne0, int64_t ne1, size_t nb1, size_t offset);
Tensor* view_3d(Context& ctx, Tensor* a, int64_t ne0, int64_t ne1, int64_t ne2, size_t nb1, size_t nb2,
                size_t offset);
Tensor* view_4d(Context& ctx, Tensor* a, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3, size_t nb1,
                size_t nb2, size_t nb3, size_t offset);
// Same elements, new shape; a must be contiguous.
Tensor* reshape_2d(Context& ctx, Tensor* a, int64_t ne0, int64_t ne1);
Tensor* reshape_3d(Context& ctx, Tensor* a, int64_t ne0, int64_t ne1, int64_t ne2);
Tensor* reshape_4d(Context& ctx, Tensor* a, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3);
// Moves source dimension i to position axis_i (ggml_permute semantics).
Tensor* permute(Context& ctx, Tensor* a, int axis0, int axis1, int axis2, int axis3);
// Swaps dimensions 0 and 1.
Tensor* transpose(Context& ctx, Tensor* a);

}  // namespace mf
