// What the tensor-core attention kernels share (flash_attn_tile_kernel in cuda/attention.cu, the MLA
// kernel in cuda/mla.cu): a block's 16 query rows, and its queries loaded as f16 hi + lo halves.
#pragma once

#include "cuda/common.cuh"
#include "cuda/mma.cuh"

namespace mf {

constexpr int kTileHeads = 16; // query heads per block
constexpr float kLog2e = 1.4426950408889634f;

// What the tile kernels share. A block's 16 query rows: blockIdx.x is (KV head, chunk of 16 of its
// (token, head) pairs), the pairs in token-major order (pair p: token p / group, query head
// hk * group + p % group); ng of them are real (the rest of the 16 rows are zero queries). With one
// token (decode) the rows are the query heads h0 .. h0 + ng - 1.
struct HeadChunk {
    int hk, h0, ng, p0, group;
    bool one_token;  // decode: no division by the group for a row's token and head
    __device__ __forceinline__ int token(int r) const { return one_token ? 0 : (p0 + r) / group; }
    __device__ __forceinline__ int head(int r) const { return one_token ? h0 + r : hk * group + (p0 + r) % group; }
};
__device__ __forceinline__ HeadChunk head_chunk(int group, int n_tokens = 1) {
    const int pairs = group * n_tokens;
    const int chunks = (pairs + kTileHeads - 1) / kTileHeads;
    const int hk = blockIdx.x / chunks, p0 = (blockIdx.x % chunks) * kTileHeads;
    return {hk, hk * group + p0, min(kTileHeads, pairs - p0), p0, group, n_tokens == 1};
}

// The block's queries (row r: token hc.token(r), head hc.head(r)), scaled into log2 units, as f16
// hi + lo rows of q_hi / q_lo (row stride ROW halves); rows ng .. 15 zero. The whole block (THREADS
// threads) takes part: each thread issues all its loads before it converts any, so the block waits
// for one round trip to memory instead of one per element (36 in a row for the MLA latent's 576).
// q(e, head, token): query element e of a head and token.
template <int DK, int ROW, int THREADS, typename Query>
__device__ __forceinline__ void load_queries(__half (*q_hi)[ROW], __half (*q_lo)[ROW], Query q, const HeadChunk& hc,
                                             float scale) {
    constexpr int N = kTileHeads * DK / THREADS;
    static_assert(kTileHeads * DK % THREADS == 0, "a whole number of query elements a thread");
    float x[N];
#pragma unroll
    for (int k = 0; k < N; ++k) {
        const int i = int(threadIdx.x) + k * THREADS, h = i / DK, e = i % DK;
        x[k] = h < hc.ng ? q(e, hc.head(h), hc.token(h)) : 0.0f;
    }
#pragma unroll
    for (int k = 0; k < N; ++k) {
        const int i = int(threadIdx.x) + k * THREADS, h = i / DK, e = i % DK;
        const float v = x[k] * (scale * kLog2e);
        const __half hi = __float2half_rn(v);
        q_hi[h][e] = hi;
        q_lo[h][e] = __float2half_rn(v - __half2float(hi));
    }
}

// Two weights as f16 hi and lo registers (x = hi + lo to ~2^-22).
__device__ __forceinline__ void pack_hi_lo(float x0, float x1, uint32_t& hi, uint32_t& lo) {
    hi = pack_half2(x0, x1);
    const __half2 h = *reinterpret_cast<const __half2*>(&hi);
    lo = pack_half2(x0 - __low2float(h), x1 - __high2float(h));
}

// load_queries for a decode block of the MLA kernel (one token: row r is head h0 + r) whose query
// parts are rows of float4s: each part 16-byte aligned with a whole number of float4s a row and a head
// stride a multiple of 4 (mla_queries_x4 checks). The same values, a quarter of the instructions: one
// 16-byte load and two 8-byte stores a float4, no division by the row length a float.
template <int DK, int ROW, int THREADS>
__device__ __forceinline__ void load_queries_x4(__half (*q_hi)[ROW], __half (*q_lo)[ROW], const float* qa,
                                                const float* qb, int da, int a_head, int b_head, int h0, int ng,
                                                float scale) {
    constexpr int V = DK / 4, N = (kTileHeads * V + THREADS - 1) / THREADS;
    // Element k of this thread is float4 threadIdx.x + k THREADS: row h[k], float e[k] of it.
    int h[N], e[N];
    h[0] = int(threadIdx.x) / V, e[0] = 4 * (int(threadIdx.x) % V);
#pragma unroll
    for (int k = 1; k < N; ++k) {
        const int v = e[k - 1] / 4 + THREADS % V;
        h[k] = h[k - 1] + THREADS / V + (v >= V);
        e[k] = 4 * (v >= V ? v - V : v);
    }
    float4 x[N];
#pragma unroll
    for (int k = 0; k < N; ++k) {
        x[k] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (h[k] < ng) {  // rows ng .. 15 (and those past the last, h >= 16) are zero
            const int hh = h0 + h[k];
            const float* p = e[k] < da ? qa + (hh * a_head + e[k]) : qb + (hh * b_head + e[k] - da);
            x[k] = __ldg(reinterpret_cast<const float4*>(p));
        }
    }
    const float f = scale * kLog2e;
#pragma unroll
    for (int k = 0; k < N; ++k) {
        if (h[k] >= kTileHeads) break;
        uint2 hi, lo;
        pack_hi_lo(x[k].x * f, x[k].y * f, hi.x, lo.x);
        pack_hi_lo(x[k].z * f, x[k].w * f, hi.y, lo.y);
        *reinterpret_cast<uint2*>(&q_hi[h[k]][e[k]]) = hi;
        *reinterpret_cast<uint2*>(&q_lo[h[k]][e[k]]) = lo;
    }
}

}  // namespace mf
