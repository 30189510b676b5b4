// The device helpers MUL_MAT's decode kernels (cuda/matvec.cu) and MUL_MAT_ID's (cuda/matvec_id.cu) share:
// 16-byte weight loads, activation blocks and their quantizer, chunk staging, the K-quant parts and
// their dots.
#pragma once

#include <cstdint>

#include "cuda/act_quant.cuh"
#include "cuda/common.cuh"
#include "cuda/quants.cuh"

namespace mf {

// In an anonymous namespace, as they were in cuda/matvec.cu: each including file gets its own copy.
namespace {

constexpr int MATVEC_WARPS = 4;  // output rows per CUDA block, one warp each

// True when p + every stride of a dimension that has more than one element is 16-byte aligned.
bool aligned16(const void* p, const Shape4& s) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
    for (int i = 1; i < 4; ++i)
        if (s.ne[i] > 1 && s.nb[i] % 16 != 0) return false;
    return true;
}

// 16 bytes of weights as f32: 4 floats, or 8 halves / bfloat16s.
__device__ __forceinline__ void load16(const float* p, float* out) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    out[0] = v.x, out[1] = v.y, out[2] = v.z, out[3] = v.w;
}
__device__ __forceinline__ void load16(const __half* p, float* out) {
    const uint4 v = *reinterpret_cast<const uint4*>(p);
    const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&words[i]));
        out[2 * i] = f.x, out[2 * i + 1] = f.y;
    }
}

__device__ __forceinline__ void load16(const __nv_bfloat16* p, float* out) {
    const uint4 v = *reinterpret_cast<const uint4*>(p);
    const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&words[i]));
        out[2 * i] = f.x, out[2 * i + 1] = f.y;
    }
}

// ---- legacy weights (32-element blocks) ----------------------------------------------------------

// Activation block ab's 32 quants (act_layout) as 8 words, two 16-byte loads.
__device__ __forceinline__ void load_act_quants(const ActQ& act, int64_t ab, int* q) {
    const int4* xv = reinterpret_cast<const int4*>(act.q + ab * QK);
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const int4 v = xv[i];
        q[4 * i] = v.x, q[4 * i + 1] = v.y, q[4 * i + 2] = v.z, q[4 * i + 3] = v.w;
    }
}

// The activation quants of blocks ab .. ab + NB - 1 of the split layout (8 words a block), with their
// scales and, for the Q8_1 types, sums. tie (scale-early): bits of the weights' loads, and zero
// opaque_zero(); each offset sum then starts from (tie | the scale's bits) & zero, still 0, so the
// first dp4a of a step waits for the weights' scale and the activations' scale as well as the quants.
// ptxas then issues all of a step's loads before its first wait: one round trip a step. Left to
// itself it issues the scales' loads after the first IDPs, which wait for the quants: two (s15a).
template <typename Block, int NB>
struct ActBlocks {
    int q[8 * NB];
    float d[NB], s[NB];
    int o[NB];  // act_offset_sum of each block
    __device__ __forceinline__ ActBlocks(const ActQ& act, int64_t ab, int tie = 0, int zero = 0) {
#pragma unroll
        for (int i = 0; i < NB; ++i) load_act_quants(act, ab + i, q + 8 * i);
#pragma unroll
        for (int i = 0; i < NB; ++i) {
            d[i] = act.d[ab + i];
            s[i] = BlockTraits<Block>::act == ActQuant::Q8_1 ? act.s[ab + i] : 0.0f;
            o[i] = act_offset_sum<Block>(q + 8 * i, (tie | __float_as_int(d[i])) & zero);
        }
    }
};

// Q8_0 (and Q8_1 when WITH_SUM) of one 32-element block held by 8 lanes, 4 consecutive values v each
// (lane % 8 = which 4): the CPU reference's arithmetic (quantize_q8_0_lane's, the maximum over the
// block's 8 lanes). All 32 lanes of the warp call it; those with !in store nothing.
template <bool WITH_SUM>
__device__ __forceinline__ void quantize_block_8_lanes(const float (&v)[4], const ActQ& act, uint32_t block,
                                                       bool in) {
    const int lane = threadIdx.x % WARP_SIZE;
    float amax = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])));
#pragma unroll
    for (int offset = 4; offset > 0; offset >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, offset));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int packed = 0, sum = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int q = int(roundf(v[i] * id));
        packed |= (q & 0xFF) << (8 * i);
        sum += q;
    }
    if (in) *reinterpret_cast<int*>(act.q + int64_t(block) * QK + 4 * (lane % 8)) = packed;
    if (in && lane % 8 == 0) act.d[block] = fp16_bits_to_f32(f32_to_fp16_bits(d));
    if (WITH_SUM) {
        // quantize_row_q8_1_ref: s = fp16(float(sum of the quants) * unrounded d).
#pragma unroll
        for (int offset = 4; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
        if (in && lane % 8 == 0) act.s[block] = fp16_bits_to_f32(f32_to_fp16_bits(__fmul_rn(float(sum), d)));
    }
}

// Copies CHUNK_VECS 16-byte vectors from src (16-byte aligned) into this warp's stage with whole-warp
// 16-byte loads, and returns the stage: blocks of 18..210 bytes allow only 2-byte loads where they lie.
template <int CHUNK_VECS>
__device__ __forceinline__ const uint8_t* stage_chunk(uint4* stage, const uint8_t* src, int lane) {
    const uint4* s = reinterpret_cast<const uint4*>(src);
#pragma unroll
    for (int i = lane; i < CHUNK_VECS; i += WARP_SIZE) stage[i] = s[i];
    __syncwarp();
    return reinterpret_cast<const uint8_t*>(stage);
}

// ---- K-quant weights (256-element super-blocks) --------------------------------------------------

// Four lanes share a super-block, 64 weights each, so a warp step covers 8 super-blocks (2048 weights):
// a lane's 64 weights are whole sub-blocks (two of 32 in Q4_K / Q5_K, four of 16 in Q6_K), so it
// applies their scales to exact integer sums, and its activations are 16-byte runs.
constexpr int K_LANES = 4;
constexpr int K_BLOCKS = WARP_SIZE / K_LANES;

// 16 bytes at p as 4 words: one 16-byte load when VEC (p 16-byte aligned), else 2-byte loads.
template <bool VEC>
__device__ __forceinline__ uint4 load_bytes16(const uint8_t* p) {
    if (VEC) return *reinterpret_cast<const uint4*>(p);
    return make_uint4(load_u32(p), load_u32(p + 4), load_u32(p + 8), load_u32(p + 12));
}

// Part t (0..3) of a super-block: 64 quants as 16 words of 4 bytes, and what scales them.
struct KPart {
    int q[16];
    int sc[4];    // Q4_K / Q5_K: sc[0..1], the scales of sub-blocks 2t, 2t + 1; Q6_K: four 16-element scales
    int mn[2];    // Q4_K / Q5_K: the mins of sub-blocks 2t, 2t + 1
    float d, dmin;
};

// Q4_K / Q5_K part t: elements 64t .. 64t + 63, the low (sub-block 2t) and high (2t + 1) nibbles of
// qs[32t .. 32t + 31]; Q5_K adds bits 2t and 2t + 1 of qh[0 .. 31]. Blocks of 144 and 176 bytes keep
// qh and qs 16-byte aligned whenever the row is.
template <bool VEC, bool Q5>
__device__ __forceinline__ KPart load_k45_part(const uint8_t* p, int t) {
    constexpr int QS = Q5 ? 48 : 16;
    const uint4 a = load_bytes16<VEC>(p + QS + 32 * t), b = load_bytes16<VEC>(p + QS + 32 * t + 16);
    const uint32_t w[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    uint32_t hw[8] = {};
    if (Q5) {
        const uint4 h0 = load_bytes16<VEC>(p + 16), h1 = load_bytes16<VEC>(p + 32);
        const uint32_t h[8] = {h0.x, h0.y, h0.z, h0.w, h1.x, h1.y, h1.z, h1.w};
#pragma unroll
        for (int i = 0; i < 8; ++i) hw[i] = h[i];
    }
    KPart kp;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        kp.q[i] = int((w[i] & 0x0F0F0F0Fu) | (((hw[i] >> (2 * t)) & 0x01010101u) << 4));
        kp.q[8 + i] = int(((w[i] >> 4) & 0x0F0F0F0Fu) | (((hw[i] >> (2 * t + 1)) & 0x01010101u) << 4));
    }
    scale_min_k4(2 * t, p + 4, &kp.sc[0], &kp.mn[0]);
    scale_min_k4(2 * t + 1, p + 4, &kp.sc[1], &kp.mn[1]);
    kp.d = fp16_bits_to_f32(load_u16(p));
    kp.dmin = fp16_bits_to_f32(load_u16(p + 2));
    return kp;
}

template <bool VEC>
__device__ __forceinline__ KPart load_k_part(BlockQ4_K, const uint8_t* p, int t) {
    return load_k45_part<VEC, false>(p, t);
}
template <bool VEC>
__device__ __forceinline__ KPart load_k_part(BlockQ5_K, const uint8_t* p, int t) {
    return load_k45_part<VEC, true>(p, t);
}

// Q6_K part t: half h = t / 2, l in 16 (t % 2) .. + 15, elements 128h + 32k + l for k = 0..3: the
// low nibbles of ql[64h + l] (k = 0) and ql[64h + 32 + l] (k = 1), their high nibbles (k = 2, 3),
// bit pair k of qh[32h + l]; q - 32 per byte gives signed int8. 210-byte blocks allow 2-byte loads only.
template <bool VEC>
__device__ __forceinline__ KPart load_k_part(BlockQ6_K, const uint8_t* p, int t) {
    static_assert(!VEC, "Q6_K blocks are 2-byte aligned");
    const int h = t / 2, r = t % 2;
    const uint4 a4 = load_bytes16<false>(p + 64 * h + 16 * r), b4 = load_bytes16<false>(p + 64 * h + 32 + 16 * r);
    const uint4 h4 = load_bytes16<false>(p + 128 + 32 * h + 16 * r);
    const uint32_t a[4] = {a4.x, a4.y, a4.z, a4.w}, b[4] = {b4.x, b4.y, b4.z, b4.w}, hh[4] = {h4.x, h4.y, h4.z, h4.w};
    KPart kp;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        kp.q[i] = int(__vsub4((a[i] & 0x0F0F0F0Fu) | ((hh[i] & 0x03030303u) << 4), 0x20202020u));
        kp.q[4 + i] = int(__vsub4((b[i] & 0x0F0F0F0Fu) | (((hh[i] >> 2) & 0x03030303u) << 4), 0x20202020u));
        kp.q[8 + i] = int(__vsub4(((a[i] >> 4) & 0x0F0F0F0Fu) | (((hh[i] >> 4) & 0x03030303u) << 4), 0x20202020u));
        kp.q[12 + i] = int(__vsub4(((b[i] >> 4) & 0x0F0F0F0Fu) | (((hh[i] >> 6) & 0x03030303u) << 4), 0x20202020u));
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) kp.sc[k] = int8_t(p[192 + 8 * h + r + 2 * k]);
    kp.d = fp16_bits_to_f32(load_u16(p + 208));
    return kp;
}

__device__ __forceinline__ int dot16(const int* q, int4 x, int acc) {
    acc = __dp4a(q[0], x.x, acc);
    acc = __dp4a(q[1], x.y, acc);
    acc = __dp4a(q[2], x.z, acc);
    return __dp4a(q[3], x.w, acc);
}

// Part t of super-block sb of weight row . activation row a. Same per-super-block formula as the
// CPU's vec_dot_q{4,5}_K_q8_K (d * sumi - dmin * summ, d = dy * dw), applied to this lane's share.
__device__ __forceinline__ float dot_k45_part(const KPart& kp, const ActQ& act, int64_t a, int64_t K, int64_t sb,
                                              int t) {
    const int4* xv = reinterpret_cast<const int4*>(act.q + a * K + sb * QK_K + 64 * t);
    const int s0 = dot16(kp.q + 4, xv[1], dot16(kp.q, xv[0], 0));
    const int s1 = dot16(kp.q + 12, xv[3], dot16(kp.q + 8, xv[2], 0));
    const float* bsum = act.s + a * (K / QK) + sb * (QK_K / QK) + 2 * t;
    const int sumi = kp.sc[0] * s0 + kp.sc[1] * s1;
    const int summ = kp.mn[0] * int(bsum[0]) + kp.mn[1] * int(bsum[1]);
    const float dy = act.d[a * (K / QK_K) + sb];
    return __fsub_rn(__fmul_rn(__fmul_rn(dy, kp.d), float(sumi)), __fmul_rn(__fmul_rn(dy, kp.dmin), float(summ)));
}

__device__ __forceinline__ float dot_k_part(BlockQ4_K, const KPart& kp, const ActQ& act, int64_t a, int64_t K,
                                            int64_t sb, int t) {
    return dot_k45_part(kp, act, a, K, sb, t);
}
__device__ __forceinline__ float dot_k_part(BlockQ5_K, const KPart& kp, const ActQ& act, int64_t a, int64_t K,
                                            int64_t sb, int t) {
    return dot_k45_part(kp, act, a, K, sb, t);
}
// vec_dot_q6_K_q8_K: dw * dy * sumi.
__device__ __forceinline__ float dot_k_part(BlockQ6_K, const KPart& kp, const ActQ& act, int64_t a, int64_t K,
                                            int64_t sb, int t) {
    const int8_t* x = act.q + a * K + sb * QK_K + 128 * (t / 2) + 16 * (t % 2);
    int sumi = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) sumi += kp.sc[k] * dot16(kp.q + 4 * k, *reinterpret_cast<const int4*>(x + 32 * k), 0);
    return __fmul_rn(__fmul_rn(kp.d, act.d[a * (K / QK_K) + sb]), float(sumi));
}

}  // namespace

}  // namespace mf
