// The int8 operands the quantized MUL_MAT kernels (cuda/matvec, cuda/matmul) share: activations
// quantized as the CPU does into a split layout (ActQ), and 32-element weight blocks unpacked (QBlock).
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <cuda_runtime.h>

#include "cuda/common.cuh"
#include "cuda/quants.cuh"

namespace mf {

// Activations quantized as the CPU does for the weight type, in a split layout. rows = N * C2 * C3 in
// (n, c2, c3) order, K elements each:
//   q  int8 [rows][K], 16-byte aligned, so 32 quants are two int4 loads;
//   d  f32 [rows][K / 32] (Q8_0, Q8_1: each block's scale, already rounded through fp16 as the CPU's
//      blocks store it) or [rows][K / 256] (Q8_K: each super-block's f32 scale);
//   s  f32 [rows][K / 32] (Q8_1: each block's s = d * sum(q), rounded through fp16; Q8_K: the integer
//      sum of each 32 quants, exact in f32, standing in for block_q8_K's bsums pairs; Q8_0: unused).
// act_layout carves it out of the scratch; matvec_q_scratch_bytes (cuda/matvec.cuh) gives the bytes.
struct ActQ {
    int8_t* q;
    float* d;
    float* s;
};

inline size_t align16(size_t n) { return (n + 15) / 16 * 16; }

inline ActQ act_layout(void* scratch, const Shape4& sx) {
    const size_t rows = size_t(sx.nrows()), K = size_t(sx.ne[0]);
    char* base = static_cast<char*>(scratch);
    float* d = reinterpret_cast<float*>(base + align16(rows * K));
    return {reinterpret_cast<int8_t*>(base), d, d + rows * (K / QK)};
}

// x f32 [K, N, C2, C3] (packed rows, dims 1..3 any byte strides; K a multiple of kind's block) -> act
// laid out by act_layout(scratch, sx): every block quantized bit-identically with the CPU's reference
// quantizer for kind. Defined in cuda/matvec.cu, beside its kernels.
void quantize_activations(ActQuant kind, const float* x, const Shape4& sx, const ActQ& act, cudaStream_t stream);

// SWIGLU fused into the quantization: act as quantize_activations would leave it for x = silu(gate) * up
// (the SWIGLU kernel's formula, so the same bits), gate and up f32 of one shape. Fits: a 32-element
// activation kind (Q8_0 / Q8_1), rows evenly spaced and packed.
bool quantize_swiglu_fits(ActQuant kind, const Shape4& sg, const Shape4& su);
void quantize_swiglu_activations(ActQuant kind, const float* gate, const Shape4& sg, const float* up,
                                 const Shape4& su, const ActQ& act, cudaStream_t stream);

// RMS_NORM (eps) and MUL by w (f32 [K]) fused into the quantization: act as quantize_activations
// would leave it for x = rms_norm(x_in) * w (the kernels' roundings and summation order, so the same
// bits). Fits: a 32-element activation kind (Q8_0 / Q8_1), rows of x_in packed. With out, the product
// rms_norm(x_in) * w is also written there (f32 contiguous, x_in's shape; apart from x_in or exactly
// on it), as RMS_NORM and MUL would write it.
bool quantize_rms_norm_fits(ActQuant kind, const Shape4& sx);
void quantize_rms_norm_activations(ActQuant kind, const float* x, const Shape4& sx, float eps, const float* w,
                                   const ActQ& act, cudaStream_t stream, float* out = nullptr);

// One weight block as 8 ints of 4 bytes each (elements in order, as stored: signed for Q8_0; unsigned
// for Q4_0 / Q5_0, whose offset (8, 16) block_dot takes off once, through the activations' sum; unsigned
// 0..31 for Q4_1 / Q5_1, which add their min through Q8_1's s), its scale
// and min.
struct QBlock {
    int q[8];
    float d, m;
};

// Where a block's bytes come from. Fields inside a block are only 2-byte aligned.
// PtrBytes: shared or global memory, read with 2-byte loads.
struct PtrBytes {
    const uint8_t* p;
    __device__ __forceinline__ uint16_t u16(int off) const { return load_u16(p + off); }
    __device__ __forceinline__ uint32_t u32(int off) const { return load_u32(p + off); }
};
// RegBytes: a run of blocks already in registers as 4-byte words (w[0] = bytes 0..3 of the run), the
// block starting at byte `base`. With unrolled callers every offset is a constant, so w stays in
// registers.
struct RegBytes {
    const uint32_t* w;
    int base;
    __device__ __forceinline__ uint16_t u16(int off) const {
        const int o = base + off;
        return uint16_t(w[o / 4] >> (8 * (o % 4)));
    }
    __device__ __forceinline__ uint32_t u32(int off) const {
        const int o = base + off;
        return o % 4 == 0 ? w[o / 4] : __funnelshift_r(w[o / 4], w[o / 4 + 1], 8 * (o % 4));
    }
};

// SplitBytes: a block of a split row (rows_split, core/quants.h: the row's quants, then its scales),
// its quants already in registers as 4-byte words and its fp16 scale apart. Offsets are the stored
// block's (the scale at 0, quant word i at 2 + 4i), so unpack_block reads both layouts alike.
struct SplitBytes {
    const uint32_t* q;
    uint16_t d;
    __device__ __forceinline__ uint16_t u16(int) const { return d; }  // offset 0: the only 16-bit field
    __device__ __forceinline__ uint32_t u32(int off) const { return q[(off - 2) / 4]; }
};

// The block types rows_split takes (rows_split_fits, core/quants.h).
template <typename Block>
constexpr bool kSplitRows = std::is_same<Block, BlockQ4_0>::value || std::is_same<Block, BlockQ8_0>::value;

// A block of a split row, loaded: its quants from q (VEC-byte aligned; VEC 16, 8 or 4) as whole
// vectors, its scale from dp; unpack() gives it as unpack_block would the stored block.
template <int VEC, typename Block>
struct SplitBlock {
    static_assert(kSplitRows<Block>, "split rows: a 2-byte scale, then the quants");
    static constexpr int WORDS = (BlockTraits<Block>::bytes - 2) / 4;
    static_assert(WORDS * 4 % VEC == 0, "whole vectors");
    uint32_t w[WORDS];
    uint16_t d;
    SplitBlock() = default;
    __device__ __forceinline__ SplitBlock(const uint8_t* q, const uint8_t* dp) { load(q, dp); }
    __device__ __forceinline__ void load(const uint8_t* q, const uint8_t* dp) {
#pragma unroll
        for (int i = 0; i < WORDS; i += VEC / 4) {
            if constexpr (VEC == 16) {
                const uint4 v = *reinterpret_cast<const uint4*>(q + 4 * i);
                w[i] = v.x, w[i + 1] = v.y, w[i + 2] = v.z, w[i + 3] = v.w;
            } else if constexpr (VEC == 8) {
                const uint2 v = *reinterpret_cast<const uint2*>(q + 4 * i);
                w[i] = v.x, w[i + 1] = v.y;
            } else {
                w[i] = *reinterpret_cast<const uint32_t*>(q + 4 * i);
            }
        }
        d = load_u16(dp);
    }
    __device__ __forceinline__ QBlock unpack() const { return unpack_block(Block{}, SplitBytes{w, d}); }
    // Bits of the scale's load and the quants' first: what ActBlocks' `tie` takes (scale-early).
    __device__ __forceinline__ int tie_bits() const { return int(d) | int(w[0]); }
};

// The offset Q4_0 (8) and Q5_0 (16) quants are stored with, in every byte of a word; 0 for the others.
template <typename Block>
constexpr uint32_t kQuantOffset4 = 0;
template <>
constexpr uint32_t kQuantOffset4<BlockQ4_0> = 0x08080808u;
template <>
constexpr uint32_t kQuantOffset4<BlockQ5_0> = 0x10101010u;

// Word i (0..3) of a block's quants as stored and word i + 4: elements 4i .. 4i + 3 and 16 + 4i ..
// 16 + 4i + 3, four bytes each, the lowest element in the low byte (QBlock's q[i], q[i + 4]).
template <typename Src>
__device__ __forceinline__ void unpack_stored_pair(BlockQ8_0, Src p, int i, int& lo, int& hi) {
    lo = int(p.u32(2 + 4 * i));
    hi = int(p.u32(18 + 4 * i));
}

// Q4_0 / Q4_1: low nibbles are elements 0..15, high nibbles 16..31.
template <typename Src>
__device__ __forceinline__ void unpack_stored_pair(BlockQ4_0, Src p, int i, int& lo, int& hi) {
    const uint32_t v = p.u32(2 + 4 * i);
    lo = int(v & 0x0F0F0F0Fu);
    hi = int((v >> 4) & 0x0F0F0F0Fu);
}

template <typename Src>
__device__ __forceinline__ void unpack_stored_pair(BlockQ4_1, Src p, int i, int& lo, int& hi) {
    const uint32_t v = p.u32(4 + 4 * i);
    lo = int(v & 0x0F0F0F0Fu);
    hi = int((v >> 4) & 0x0F0F0F0Fu);
}

// Q5_0 / Q5_1: qh holds the fifth bit of element j at bit j; spread_bit4 moves four of them into place.
template <typename Src>
__device__ __forceinline__ void unpack_q5_pair(Src p, int qs, uint32_t qh, int i, int& lo, int& hi) {
    const uint32_t v = p.u32(qs + 4 * i);
    lo = int((v & 0x0F0F0F0Fu) | spread_bit4(qh >> (4 * i)));
    hi = int(((v >> 4) & 0x0F0F0F0Fu) | spread_bit4(qh >> (16 + 4 * i)));
}

template <typename Src>
__device__ __forceinline__ void unpack_stored_pair(BlockQ5_0, Src p, int i, int& lo, int& hi) {
    unpack_q5_pair(p, 6, p.u32(2), i, lo, hi);
}

template <typename Src>
__device__ __forceinline__ void unpack_stored_pair(BlockQ5_1, Src p, int i, int& lo, int& hi) {
    unpack_q5_pair(p, 8, p.u32(4), i, lo, hi);
}

// The same words with the offset taken off each byte: signed int8 for Q8_0 / Q4_0 / Q5_0 (their
// values as the CPU dots them), unsigned 0..31 for Q4_1 / Q5_1. An mma fragment needs exactly such a
// pair (matmul_q_kernel reads them from raw blocks in shared memory).
template <typename Block, typename Src>
__device__ __forceinline__ void unpack_pair(Block blk, Src p, int i, int& lo, int& hi) {
    unpack_stored_pair(blk, p, i, lo, hi);
    if constexpr (kQuantOffset4<Block> != 0) {
        lo = int(__vsub4(uint32_t(lo), kQuantOffset4<Block>));
        hi = int(__vsub4(uint32_t(hi), kQuantOffset4<Block>));
    }
}

// A block's scale d and min m (0 for the types without one): fp16 at bytes 0 and 2.
template <typename Block, typename Src>
__device__ __forceinline__ void block_scales(Block, Src p, float& d, float& m) {
    d = fp16_bits_to_f32(p.u16(0));
    m = BlockTraits<Block>::act == ActQuant::Q8_1 ? fp16_bits_to_f32(p.u16(2)) : 0.0f;
}

template <typename Block, typename Src>
__device__ __forceinline__ QBlock unpack_block(Block blk, Src p) {
    QBlock b;
#pragma unroll
    for (int i = 0; i < 4; ++i) unpack_stored_pair(blk, p, i, b.q[i], b.q[i + 4]);
    block_scales(blk, p, b.d, b.m);
    return b;
}

// A block at p in shared or global memory.
template <typename Block>
__device__ __forceinline__ QBlock load_block(Block blk, const uint8_t* p) {
    return unpack_block(blk, PtrBytes{p});
}

// offset * the sum of 32 activation quants (8 words) for Block's stored offset (0 without one), plus
// o: what block_dot takes off a stored block's integer dot. One per activation block, shared by every
// row dotted with it.
template <typename Block>
__device__ __forceinline__ int act_offset_sum(const int* xq, int o = 0) {
    if constexpr (kQuantOffset4<Block> != 0) {
#pragma unroll
        for (int i = 0; i < 8; ++i) o = __dp4a(int(kQuantOffset4<Block>), xq[i], o);
    }
    return o;
}

// The integer dot of a weight block with 32 activation quants (8 words), scaled as the CPU's vec_dot
// does: the two scales multiplied first, then the integer sum; the Q8_1 types add min * s unfused, as
// the CPU's reference dot does. The stored quants' dot less xo (act_offset_sum) is exactly the dot of
// the signed values, with no per-byte subtraction.
template <typename Block>
__device__ __forceinline__ float block_dot(const QBlock& wb, const int* xq, float xd, float xs, int xo) {
    int sumi = -xo;
#pragma unroll
    for (int i = 0; i < 8; ++i) sumi = __dp4a(wb.q[i], xq[i], sumi);
    if constexpr (BlockTraits<Block>::act == ActQuant::Q8_1)
        return __fadd_rn(__fmul_rn(float(sumi), __fmul_rn(wb.d, xd)), __fmul_rn(wb.m, xs));
    return float(sumi) * (wb.d * xd);
}

}  // namespace mf
