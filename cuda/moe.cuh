// Launchers for the ops the mixture-of-experts FFN added: MUL_MAT_ID (expert-indexed matvec), TOP_K
// (routing), SUM_ROWS, DIV and SIGMOID (gate weights). Semantics as the Op enum in core/tensor.h.
#pragma once

#include <cuda_runtime.h>

#include "core/dtype.h"
#include "core/tensor.h"
#include "cuda/act_quant.cuh"
#include "cuda/common.cuh"
#include "cuda/quants.cuh"

namespace mf {

// ---- MUL_MAT_ID ----------------------------------------------------------------------------------
// w experts [K, M, n_expert] (packed rows, dims 1..2 any byte strides) times x f32 [K, n_b, T] (packed
// rows; n_b = n_used or 1), ids I32 [n_used, T] (any strides) -> dst f32 contiguous [M, n_used, T]:
// dst[:, u, t] = expert ids[u, t] . x[:, n_b == 1 ? 0 : u, t]. Only the chosen experts' rows are read.
// An id outside [0, n_expert) gives a zero row (the CPU asserts; checking here would cost a sync).
// Weighted (src3, SlotWeights::data non-null): dst f32 contiguous [M, T], dst[:, t] = the sum over u,
// in order, of weights[u, t] times the row above, plus add[:, t] when add (f32 [M, T], contiguous) is
// given (what an ADD of the result and add writes). These two are defined in cuda/matvec_id.cu; the
// per-type dot code they share with MUL_MAT is in cuda/matvec_dot.cuh.

// The slot weights of a weighted MUL_MAT_ID: none (data null), f32 [n_used, T] (gate SLOTS), or the
// router's logits f32 [n_expert, T] (gate SOFTMAX: the slot's share of the token's softmax, times
// scale), any strides; the weighted form takes at most MUL_MAT_ID_MAX_SLOTS slots a token.
constexpr int MUL_MAT_ID_MAX_SLOTS = 64;
struct SlotWeights {
    const char* data = nullptr;
    Shape4 shape{};
    MoeGate gate = MoeGate::SLOTS;
    float scale = 1.0f;
    // The weight of slot u of token t, whose expert is e (-1: none, weight 0). Called by a whole warp
    // (the softmax is a warp's reduction over the token's logits); every lane gets it.
    __device__ float of(int u, int t, int64_t e) const {
        if (gate == MoeGate::SLOTS) return *reinterpret_cast<const float*>(data + u * shape.nb[0] + t * shape.nb[1]);
        const char* row = data + t * shape.nb[1];
        auto logit = [&](int64_t i) { return *reinterpret_cast<const float*>(row + i * shape.nb[0]); };
        const int lane = threadIdx.x % WARP_SIZE;
        float max = -INFINITY;
        for (int64_t i = lane; i < shape.ne[0]; i += WARP_SIZE) max = fmaxf(max, logit(i));
        max = warp_max(max);
        if (max == -INFINITY) return 0.0f;  // every logit masked: zeros, as SOFT_MAX gives
        float sum = 0.0f;
        for (int64_t i = lane; i < shape.ne[0]; i += WARP_SIZE) sum += expf(logit(i) - max);
        sum = warp_sum(sum);
        if (e < 0) return 0.0f;
        const float p_e = expf(logit(e) - max) * (1.0f / sum);
        return scale == 1.0f ? p_e : p_e * scale;
    }
    // SOFTMAX gating of at most 64 experts with token t's logits loaded ahead (prefetch: lane's values
    // i = lane and lane + 32): of()'s arithmetic in its order, so its bits, with no load after the dots.
    struct Logits {
        float v[2];
    };
    __device__ Logits prefetch(int t) const {
        const char* row = data + t * shape.nb[1];
        const int lane = threadIdx.x % WARP_SIZE;
        Logits l;
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const int64_t i = lane + j * WARP_SIZE;
            l.v[j] = i < shape.ne[0] ? *reinterpret_cast<const float*>(row + i * shape.nb[0]) : -INFINITY;
        }
        return l;
    }
    __device__ float of(int64_t e, const Logits& l) const {
        const int lane = threadIdx.x % WARP_SIZE;
        const bool second = lane + WARP_SIZE < shape.ne[0];
        float max = fmaxf(-INFINITY, l.v[0]);
        if (second) max = fmaxf(max, l.v[1]);
        max = warp_max(max);
        if (max == -INFINITY) return 0.0f;
        float sum = lane < shape.ne[0] ? expf(l.v[0] - max) : 0.0f;
        if (second) sum += expf(l.v[1] - max);
        sum = warp_sum(sum);
        // Every lane takes part in the shuffle; e is the same on every lane.
        const float logit_e = __shfl_sync(0xffffffffu, e >= WARP_SIZE ? l.v[1] : l.v[0], int(e % WARP_SIZE));
        if (e < 0) return 0.0f;
        const float p_e = expf(logit_e - max) * (1.0f / sum);
        return scale == 1.0f ? p_e : p_e * scale;
    }
};

// A MUL_MAT_ID that routes its own tokens, the TOP_K before it folded in: its ids [n_used, T] are
// TOP_K(logits, n_used), which each warp ranks itself from logits f32 [n_expert, T] (any strides;
// n_expert <= 64) in TOP_K's order, and which the launch writes to ids for their later readers, where
// TOP_K would have. logits null: ids are read. Only where mul_mat_id_routes.
struct IdRoute {
    const char* logits = nullptr;
    Shape4 sl{};
};

// T: float, __half or __nv_bfloat16.
template <typename T>
void launch_matvec_float_id(const void* w, const Shape4& sw, const float* x, const Shape4& sx, const int32_t* ids,
                            const Shape4& si, SlotWeights weights, float* dst, const float* add, cudaStream_t stream);
// Block: a block tag of cuda/quants.cuh. x is quantized in scratch (matvec_q_scratch_bytes(sx)) in
// the layout launch_matvec_q uses, so x_quantized (scratch already holds x quantized to the Block's
// activation type) works across MUL_MAT and MUL_MAT_ID nodes alike. split: w's rows are in the split
// layout (rows_split, core/quants.h; Q4_0 / Q8_0, rows and matrices 4-byte aligned).
template <typename Block>
void launch_matvec_q_id(const void* w, const Shape4& sw, bool split, const float* x, const Shape4& sx,
                        const int32_t* ids, const Shape4& si, void* scratch, size_t scratch_bytes, bool x_quantized,
                        SlotWeights weights, float* dst, const float* add, cudaStream_t stream,
                        const IdRoute& route = {});

// True for the weight types the two launchers above cover.
bool mul_mat_id_supported(DType type);
// Dispatches on the weight type (mul_mat_id_supported); scratch and x_quantized are used by the
// quantized types only, split (launch_matvec_q_id) by Q4_0 / Q8_0 only.
void launch_mul_mat_id(DType type, const void* w, const Shape4& sw, bool split, const float* x, const Shape4& sx,
                       const int32_t* ids, const Shape4& si, void* scratch, size_t scratch_bytes, bool x_quantized,
                       SlotWeights weights, float* dst, const float* add, cudaStream_t stream,
                       const IdRoute& route = {});
// Whether an unweighted MUL_MAT_ID of these weights (split: in split rows) can take an IdRoute with
// logits of shape sl for ids of shape si: Q4_0 / Q8_0 split rows a warp's rows at once, f32 logits of
// at most 64 experts, one row a token.
bool mul_mat_id_routes(DType type, bool split, const Shape4& sw, const Shape4& sl, const Shape4& si);

// The routed experts of one decode token in one launch (cuda/matvec_id.cu; MINFER_CUDA_MOE_BLOCK=1):
// ids = TOP_K(route's logits, n_used); h = SWIGLU(gate, up) of the stacked gate_up experts' product
// with x (gate the first n_ff rows, up the next n_ff), quantized into h_act as the down's activations;
// dst = the down experts' weighted MUL_MAT_ID of h (plus add): what the four launches write, bit for
// bit, but for the gate_up's product, which is not written. One CUDA block an SM, all resident (a
// cooperative launch), meeting once at a grid barrier; barrier: two zeroed words kept for it.
struct MoeBlockArgs {
    const char* w_gu;    // split rows [K, 2 n_ff, n_expert]
    Shape4 s_gu;
    const char* w_d;     // split rows [n_ff, M, n_expert]
    Shape4 s_d;
    Shape4 sx;           // x's shape, [K, 1, 1]
    ActQ x_act;          // x quantized for the weight type (act_layout of sx)
    IdRoute route;       // the router's logits [n_expert, 1]
    int32_t* ids;        // [n_used, 1], written
    Shape4 si;
    Shape4 sh;           // h's shape, [n_ff, n_used, 1]
    ActQ h_act;          // act_layout of sh, written
    SlotWeights slot_w;  // the down's slot weights
    float* dst;          // [M]
    const float* add;    // [M] or null
    unsigned* barrier;
};
// Whether launch_moe_block takes these shapes: Q4_0 / Q8_0 split rows 4-byte aligned, n_ff a multiple
// of 32, one token, at most 32 slots of at most 64 experts.
bool moe_block_fits(DType type, const Shape4& s_gu, const Shape4& s_d, const Shape4& sl, const Shape4& si);
void launch_moe_block(DType type, const MoeBlockArgs& args, cudaStream_t stream);

// ---- routing and gate weights --------------------------------------------------------------------
// TOP_K: a f32 [n, ne1, ne2, ne3] (any strides) -> dst I32 contiguous [k, ne1, ne2, ne3], per row the
// indices of the k largest values, largest first, ties by index, NaN below every number.
void launch_top_k_f32(const void* a, const Shape4& sa, int k, int32_t* dst, cudaStream_t stream);
// SUM_ROWS: a f32 (any strides) -> dst f32 contiguous [1, ne1, ne2, ne3].
void launch_sum_rows_f32(const void* a, const Shape4& sa, float* dst, cudaStream_t stream);
// DIV: dst f32 contiguous [a.ne] = a / b, b repeated where smaller (a.ne[i] % b.ne[i] == 0); any strides.
void launch_div_f32(const void* a, const Shape4& sa, const void* b, const Shape4& sb, float* dst,
                    cudaStream_t stream);
// SIGMOID: dst f32 contiguous [a.ne] = 1 / (1 + exp(-a)); a any strides.
void launch_sigmoid_f32(const void* a, const Shape4& sa, float* dst, cudaStream_t stream);

}  // namespace mf
