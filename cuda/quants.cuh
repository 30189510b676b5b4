// GGUF block formats on the device: byte layouts (the host structs are in core/quants.h), element
// dequantization bit-exact with core's to_float, and warp quantizers bit-exact with core's *_ref ones.
#pragma once

#include <cstdint>

#include "core/quants.h"  // QK_K, the 256 elements of a K-quant super-block
#include "cuda/common.cuh"

namespace mf {

// ---- layouts (cuda_backend.cu checks the sizes against core/quants.h) ----------------------------
constexpr int QK = 32;           // elements per legacy block (Q4_0 .. Q8_1)
constexpr int Q8_0_BYTES = 34;   // u16 d (fp16); int8 qs[32]; x = d * q
constexpr int Q4_0_BYTES = 18;   // u16 d; u8 qs[16]: element j < 16 in the low nibble of qs[j], j + 16 in
                                 //   its high nibble; x = d * (q - 8)
constexpr int Q4_1_BYTES = 20;   // u16 d, m; u8 qs[16] as Q4_0; x = d * q + m
constexpr int Q5_0_BYTES = 22;   // u16 d; u8 qh[4]: bit j of the little-endian u32 is bit 4 of element j;
                                 //   u8 qs[16] as Q4_0; x = d * (q - 16)
constexpr int Q5_1_BYTES = 24;   // u16 d, m; u8 qh[4]; u8 qs[16]; x = d * q + m
constexpr int Q4_K_BYTES = 144;  // u16 d, dmin; u8 scales[12] (8 six-bit scales and mins, see scale_min_k4);
                                 //   u8 qs[128]: 32-byte chunk c holds sub-block 2c in its low nibbles and
                                 //   2c + 1 in its high nibbles; x = d * sc[s] * q - dmin * m[s]
constexpr int Q5_K_BYTES = 176;  // as Q4_K, with u8 qh[32] between scales and qs: bit s of qh[l] is bit 4
                                 //   of element 32 s + l
constexpr int Q6_K_BYTES = 210;  // u8 ql[128]; u8 qh[64]; int8 scales[16]; u16 d. Half h, l < 32, k < 4:
                                 //   element 128 h + 32 k + l has low bits in ql[64 h + 32 (k & 1) + l]
                                 //   (nibble k >> 1), high bits (qh[32 h + l] >> 2 k) & 3, scale
                                 //   scales[8 h + l / 16 + 2 k]; x = d * scale * (q - 32)

// Tags naming the block formats in templates.
struct BlockQ8_0 {};
struct BlockQ4_0 {};
struct BlockQ4_1 {};
struct BlockQ5_0 {};
struct BlockQ5_1 {};
struct BlockQ4_K {};
struct BlockQ5_K {};
struct BlockQ6_K {};

// The activation format the CPU dots a weight type against (core/dtype.cpp's vec_dot_type).
enum class ActQuant { Q8_0, Q8_1, Q8_K };

// Bytes and elements of one block, and its activation format.
template <typename Block>
struct BlockTraits;
template <>
struct BlockTraits<BlockQ8_0> {
    static constexpr int bytes = Q8_0_BYTES, elems = QK;
    static constexpr ActQuant act = ActQuant::Q8_0;
};
template <>
struct BlockTraits<BlockQ4_0> {
    static constexpr int bytes = Q4_0_BYTES, elems = QK;
    static constexpr ActQuant act = ActQuant::Q8_0;
};
template <>
struct BlockTraits<BlockQ4_1> {
    static constexpr int bytes = Q4_1_BYTES, elems = QK;
    static constexpr ActQuant act = ActQuant::Q8_1;
};
template <>
struct BlockTraits<BlockQ5_0> {
    static constexpr int bytes = Q5_0_BYTES, elems = QK;
    static constexpr ActQuant act = ActQuant::Q8_0;
};
template <>
struct BlockTraits<BlockQ5_1> {
    static constexpr int bytes = Q5_1_BYTES, elems = QK;
    static constexpr ActQuant act = ActQuant::Q8_1;
};
template <>
struct BlockTraits<BlockQ4_K> {
    static constexpr int bytes = Q4_K_BYTES, elems = QK_K;
    static constexpr ActQuant act = ActQuant::Q8_K;
};
template <>
struct BlockTraits<BlockQ5_K> {
    static constexpr int bytes = Q5_K_BYTES, elems = QK_K;
    static constexpr ActQuant act = ActQuant::Q8_K;
};
template <>
struct BlockTraits<BlockQ6_K> {
    static constexpr int bytes = Q6_K_BYTES, elems = QK_K;
    static constexpr ActQuant act = ActQuant::Q8_K;
};

// ---- loads -----------------------------------------------------------------------------------
// Blocks of 18, 22, 34 or 210 bytes guarantee only 2-byte alignment for anything inside one.
__device__ __forceinline__ uint16_t load_u16(const uint8_t* p) { return *reinterpret_cast<const uint16_t*>(p); }
__device__ __forceinline__ uint32_t load_u32(const uint8_t* p) {
    return uint32_t(load_u16(p)) | (uint32_t(load_u16(p + 2)) << 16);
}

// Four bits b0..b3 moved to bit 4 of bytes 0..3: the fifth bit of four Q5_0 / Q5_1 quants at once.
__device__ __forceinline__ uint32_t spread_bit4(uint32_t bits) {
    return ((bits & 1u) << 4) | ((bits & 2u) << 11) | ((bits & 4u) << 18) | ((bits & 8u) << 25);
}

// Scale and min of sub-block j (0..7) of a Q4_K / Q5_K block from its 12 packed bytes, as core's
// get_scale_min_k4: sub-blocks 0-3 keep 6 bits in bytes j and j + 4; sub-blocks 4-7 keep their low
// 4 bits in the nibbles of byte j + 4 and their top 2 bits in the spare bits of bytes j - 4 and j.
__device__ __forceinline__ void scale_min_k4(int j, const uint8_t* q, int* sc, int* m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// ---- element j of one block, as core's dequantize_row_* computes it ----------------------------
// The CPU rounds after every multiply and add (its quant files turn FMA contraction off), so the
// two-operation formulas use _rn intrinsics, which nvcc never fuses: the results are bit-identical.
__device__ __forceinline__ float dequant_q8_0(const uint8_t* blk, int j) {
    return float(int8_t(blk[2 + j])) * fp16_bits_to_f32(load_u16(blk));
}
__device__ __forceinline__ float dequant_q4_0(const uint8_t* blk, int j) {
    const uint8_t byte = blk[2 + (j & 15)];
    const int q = j < 16 ? (byte & 0x0F) : (byte >> 4);
    return float(q - 8) * fp16_bits_to_f32(load_u16(blk));
}
__device__ __forceinline__ float dequant_q4_1(const uint8_t* blk, int j) {
    const uint8_t byte = blk[4 + (j & 15)];
    const int q = j < 16 ? (byte & 0x0F) : (byte >> 4);
    return __fadd_rn(__fmul_rn(float(q), fp16_bits_to_f32(load_u16(blk))), fp16_bits_to_f32(load_u16(blk + 2)));
}
__device__ __forceinline__ float dequant_q5_0(const uint8_t* blk, int j) {
    const uint8_t byte = blk[6 + (j & 15)];
    const int q = (j < 16 ? (byte & 0x0F) : (byte >> 4)) | (((load_u32(blk + 2) >> j) & 1) << 4);
    return float(q - 16) * fp16_bits_to_f32(load_u16(blk));
}
__device__ __forceinline__ float dequant_q5_1(const uint8_t* blk, int j) {
    const uint8_t byte = blk[8 + (j & 15)];
    const int q = (j < 16 ? (byte & 0x0F) : (byte >> 4)) | (((load_u32(blk + 4) >> j) & 1) << 4);
    return __fadd_rn(__fmul_rn(float(q), fp16_bits_to_f32(load_u16(blk))), fp16_bits_to_f32(load_u16(blk + 2)));
}
// Q4_K and Q5_K: d1 = d * sc and m1 = dmin * m per sub-block, then d1 * q - m1.
__device__ __forceinline__ float dequant_q4_k(const uint8_t* blk, int j) {
    const int s = j / 32, l = j % 32;
    int sc, m;
    scale_min_k4(s, blk + 4, &sc, &m);
    const int q = (blk[16 + 32 * (s / 2) + l] >> (4 * (s % 2))) & 0xF;
    const float d1 = __fmul_rn(fp16_bits_to_f32(load_u16(blk)), float(sc));
    const float m1 = __fmul_rn(fp16_bits_to_f32(load_u16(blk + 2)), float(m));
    return __fsub_rn(__fmul_rn(d1, float(q)), m1);
}
__device__ __forceinline__ float dequant_q5_k(const uint8_t* blk, int j) {
    const int s = j / 32, l = j % 32;
    int sc, m;
    scale_min_k4(s, blk + 4, &sc, &m);
    const int q = ((blk[48 + 32 * (s / 2) + l] >> (4 * (s % 2))) & 0xF) | (((blk[16 + l] >> s) & 1) << 4);
    const float d1 = __fmul_rn(fp16_bits_to_f32(load_u16(blk)), float(sc));
    const float m1 = __fmul_rn(fp16_bits_to_f32(load_u16(blk + 2)), float(m));
    return __fsub_rn(__fmul_rn(d1, float(q)), m1);
}
// Q6_K: (d * scale) * (q - 32), in that order.
__device__ __forceinline__ float dequant_q6_k(const uint8_t* blk, int j) {
    const int h = j / 128, k = (j % 128) / 32, l = j % 32;
    const uint8_t low = blk[64 * h + 32 * (k & 1) + l];
    const int q = ((k < 2 ? low & 0xF : low >> 4) | (((blk[128 + 32 * h + l] >> (2 * k)) & 3) << 4)) - 32;
    const int scale = int8_t(blk[192 + 8 * h + l / 16 + 2 * k]);
    return __fmul_rn(__fmul_rn(fp16_bits_to_f32(load_u16(blk + 208)), float(scale)), float(q));
}

// ---- warp quantizers ---------------------------------------------------------------------------

// The 32 lanes of a warp hold one block's values (lane j = element j). Returns this lane's quant and
// the block's fp16 scale bits, with quantize_row_q8_0_ref's arithmetic: the bits match the CPU's.
// d_f32, when given, gets the scale before its fp16 rounding (Q8_1's s = sum * d uses that one).
__device__ __forceinline__ int quantize_q8_0_lane(float x, uint16_t* d_bits, float* d_f32 = nullptr) {
    const float amax = warp_max(fabsf(x));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    *d_bits = f32_to_fp16_bits(d);
    if (d_f32) *d_f32 = d;
    return int(roundf(x * id));
}

// As above for Q4_0 (quantize_row_q4_0_ref): the scale comes from the signed value of largest
// magnitude, the first one on ties, and +0 when the block is all zeros.
__device__ __forceinline__ int quantize_q4_0_lane(float x, uint16_t* d_bits) {
    const int lane = threadIdx.x % WARP_SIZE;
    float amax = fabsf(x);
    int idx = lane;
#pragma unroll
    for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) {
        const float other_amax = __shfl_xor_sync(0xffffffffu, amax, offset);
        const int other_idx = __shfl_xor_sync(0xffffffffu, idx, offset);
        if (other_amax > amax || (other_amax == amax && other_idx < idx)) {
            amax = other_amax;
            idx = other_idx;
        }
    }
    float max = __shfl_sync(0xffffffffu, x, idx);
    if (amax == 0.0f) max = 0.0f;
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    *d_bits = f32_to_fp16_bits(d);
    // _rn intrinsics keep nvcc from fusing into an fma, which would round differently than the CPU.
    const int q = int(__fadd_rn(__fmul_rn(x, id), 8.5f));
    return q < 15 ? q : 15;
}

// One Q8_K super-block across a warp: lane j holds elements 8j .. 8j + 7 in x and gets their quants
// in q. Returns the block's scale d (a full f32, as block_q8_K stores it). quantize_row_q8_K_ref's
// arithmetic: the scale is -127 / (the first value of largest magnitude), q = min(127, round-to-even
// of iscale * x) (nearest_int's magic-number trick is round-to-even too), d = 1 / iscale; an all-zero
// block is all zeros with d = 0.
__device__ __forceinline__ float quantize_q8_k_warp(const float* x, int* q) {
    const int lane = threadIdx.x % WARP_SIZE;
    float amax = 0.0f, max = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        if (fabsf(x[i]) > amax) {  // strict: the first element of a lane wins its ties
            amax = fabsf(x[i]);
            max = x[i];
        }
    }
    int idx = lane;  // lower lanes hold lower elements, so they win ties across lanes
#pragma unroll
    for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) {
        const float other_amax = __shfl_xor_sync(0xffffffffu, amax, offset);
        const float other_max = __shfl_xor_sync(0xffffffffu, max, offset);
        const int other_idx = __shfl_xor_sync(0xffffffffu, idx, offset);
        if (other_amax > amax || (other_amax == amax && other_idx < idx)) {
            amax = other_amax;
            max = other_max;
            idx = other_idx;
        }
    }
    if (amax == 0.0f) {
#pragma unroll
        for (int i = 0; i < 8; ++i) q[i] = 0;
        return 0.0f;
    }
    const float iscale = __fdiv_rn(-127.0f, max);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int v = __float2int_rn(__fmul_rn(iscale, x[i]));
        q[i] = v < 127 ? v : 127;
    }
    return __fdiv_rn(1.0f, iscale);
}

}  // namespace mf
