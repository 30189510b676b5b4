// MLA decode attention on the tensor cores (launched by launch_flash_attn, cuda/attention.cu): each
// cached latent row read once for all query heads of a token, V the row's first DV values.
#include "cuda/mla.cuh"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "cuda/attention.cuh"
#include "cuda/attention_tc.cuh"
#include "cuda/mma.cuh"

namespace mf {

namespace {

// All query heads of a latent (16 a block) against one read of each row. The block moves through its
// split in tiles of 64 positions, copied to shared memory with cp.async one tile ahead, once for K
// and V alike (V is the row's prefix). Its 8 warps: warp w scores positions 8w .. 8w + 7 of the tile
// for all 16 heads (S = Q K^T, mma.sync over DK); the tile's row maxima meet in shared memory, every
// warp applies the same running max, and the weights P go to shared memory; then warp w adds P V for
// its DV / 8 output columns over all 64 positions. (One block an SM fits: 8 warps rather than 4 halve
// each warp's serial mma chain a tile.) With W = 16 warps (DK a multiple of 64: DeepSeek's 576), warps
// w and w + 8 score the same 8 positions over the two halves of DK and meet in shared memory, and each
// warp adds P V for DV / 16 columns: every warp's chain a tile (the queries' load, the K copies, the
// scores, P V, the output) is about half as long, the block being one CUDA block per latent and split
// (the whole attention below 128 positions). Precision as flash_attn_tile_kernel: hi + lo halves for Q
// and P, log2 units.
constexpr int kMlaTile = 64;                    // positions per block step
constexpr int kMlaWarpPos = 8;                  // positions a warp scores: one n8 fragment
constexpr int kMlaPosWarps = kMlaTile / kMlaWarpPos;  // warps that score a tile's positions

template <int DK, int DV, int W>
struct MlaSmem {
    static constexpr int ROW = DK + 8;
    static constexpr int P_ROW = kMlaTile + 8;
    __half q_hi[kTileHeads][ROW];
    __half q_lo[kTileHeads][ROW];
    __half kv[2][kMlaTile][ROW];
    __half p_hi[kTileHeads][P_ROW];
    __half p_lo[kTileHeads][P_ROW];
    float tile_max[kMlaPosWarps][kTileHeads];
    float sum[W][kTileHeads];
    float s_part[W > kMlaPosWarps ? kMlaPosWarps : 1][WARP_SIZE][4];  // the second half of DK's scores
};

template <int DK, int DV, int W>
__global__ void __launch_bounds__(W * WARP_SIZE, 1)
flash_attn_mla_kernel(RowsF32 q, const char* __restrict__ kv, Shape4 ks,
                      const float* __restrict__ mask, float* __restrict__ out, float* __restrict__ ws, int group,
                      int n_kv, int split_rows, int n_splits, float scale, bool q_x4) {
    constexpr int KS = W / kMlaPosWarps;  // warps that share a position group, each a part of DK
    static_assert((KS == 1 || KS == 2) && DK % (32 * KS) == 0 && DV % (16 * W) == 0 && DV <= DK && kMlaTile % W == 0,
                  "tile shapes");
    constexpr int COLS = DV / W;  // output columns a warp owns
    constexpr int VECS = DK / 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    auto& sm = *reinterpret_cast<MlaSmem<DK, DV, W>*>(smem_raw);
    begin_overlapped_kernel();
    const HeadChunk hc = head_chunk(group);
    const int hk = hc.hk, h0 = hc.h0, ng = hc.ng;
    const int split = blockIdx.y;
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const int g = lane / 4, t = lane % 4;
    const int pwarp = warp % kMlaPosWarps, kpart = warp / kMlaPosWarps;  // positions, part of DK

    const int j_begin = split * split_rows, j_end = min(n_kv, j_begin + split_rows);
    const char* head = kv + int64_t(hk) * ks.nb[2];
    // A tile's copies: warp w takes rows w, w + W, ..., its lanes a row's 16-byte pieces in turn (one
    // row address a row, the pieces at constant offsets from it).
    auto issue = [&](int i, int buf) {
        const int j0 = j_begin + kMlaTile * i;
#pragma unroll
        for (int rr = 0; rr < kMlaTile / W; ++rr) {
            const int r = warp + W * rr;
            const bool in = j0 + r < j_end;
            const char* row = head + int64_t(in ? j0 + r : j_begin) * ks.nb[1];
#pragma unroll
            for (int c0 = 0; c0 < VECS; c0 += WARP_SIZE) {
                const int c = c0 + lane;
                if (c < VECS) cp_async16_or_zero(&sm.kv[buf][r][8 * c], row + 16 * c, in);
            }
        }
        cp_async_commit();
    };
    const int n_tiles = j_end > j_begin ? (j_end - j_begin + kMlaTile - 1) / kMlaTile : 0;
    if (n_tiles > 0) issue(0, 0);  // the first tile's copies are under way while the queries load
    // q.at with the strides divided once (both parts have 4-byte elements: mla_kernel_fits, the
    // backend's concat check).
    const float* qa = reinterpret_cast<const float*>(q.a);
    const float* qb = q.b ? reinterpret_cast<const float*>(q.b) : qa;
    const int64_t da = q.sa.ne[0], a_head = q.sa.nb[1] / 4, a_token = q.sa.nb[2] / 4, b_head = q.sb.nb[1] / 4,
                  b_token = q.sb.nb[2] / 4;
    const auto query = [=](int e, int head, int token) {
        return e < da ? __ldg(qa + int64_t(token) * a_token + int64_t(head) * a_head + e)
                      : __ldg(qb + int64_t(token) * b_token + int64_t(head) * b_head + (e - da));
    };
    if (q_x4) {
        load_queries_x4<DK, MlaSmem<DK, DV, W>::ROW, W * WARP_SIZE>(sm.q_hi, sm.q_lo, qa, qb, int(da),
                                                                   int(a_head), int(b_head), h0, ng, scale);
    } else {
        load_queries<DK, MlaSmem<DK, DV, W>::ROW, W * WARP_SIZE>(sm.q_hi, sm.q_lo, query, hc, scale);
    }

    float o[COLS / 8][4] = {};
    float m_row[2] = {-INFINITY, -INFINITY};  // rows g, g + 8; the same in every warp
    float l_row[2] = {0.0f, 0.0f};            // this lane's part of the row sums (its positions)
    for (int i = 0; i < n_tiles; ++i) {
        const int buf = i & 1;
        __syncthreads();  // every warp is done with tile i - 1 (its buffer is refilled next) and its P
        if (i + 1 < n_tiles) {
            issue(i + 1, buf ^ 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();  // tile i (and, the first time, the queries) visible to every warp
        const int pw = kMlaWarpPos * pwarp;  // this warp's positions in the tile
        // S for 8 positions: rows g, g + 8 at positions 2t, 2t + 1; one ldmatrix gives two K steps.
        // Four accumulators (the two K steps of an ldmatrix, times hi and lo) make four independent
        // chains of DK / 8 mma each instead of one of DK / 2: with one block an SM the chain's
        // latency, not the tensor pipe, bounds the scores.
        float sp[2][2][4] = {};
#pragma unroll 2
        for (int k0 = kpart * (DK / KS); k0 < (kpart + 1) * (DK / KS); k0 += 32) {
            uint32_t kb[4];
            ldmatrix_x4<false>(kb, &sm.kv[buf][pw + lane % 8][k0 + 8 * (lane / 8)]);
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                uint32_t qh[4], ql[4];
                ldmatrix_x4<false>(qh, &sm.q_hi[lane % 16][k0 + 16 * h + 8 * (lane / 16)]);
                ldmatrix_x4<false>(ql, &sm.q_lo[lane % 16][k0 + 16 * h + 8 * (lane / 16)]);
                const uint32_t b[2] = {kb[2 * h], kb[2 * h + 1]};
                mma_16816<__half>(sp[h][0], qh, b);
                mma_16816<__half>(sp[h][1], ql, b);
            }
        }
        float s[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) s[e] = (sp[0][0][e] + sp[1][0][e]) + (sp[0][1][e] + sp[1][1][e]);
        if constexpr (KS == 2) {  // the second half of DK's scores meet the first's
            if (kpart == 1) {
#pragma unroll
                for (int e = 0; e < 4; ++e) sm.s_part[pwarp][lane][e] = s[e];
            }
            __syncthreads();
#pragma unroll
            for (int e = 0; e < 4; ++e) s[e] += sm.s_part[pwarp][lane][e];
        }
        // The position warps (kpart 0) take the tile's maxima and write P; the others only follow.
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int c = 0; c < 2; ++c) {
            const int j = j_begin + kMlaTile * i + pw + 2 * t + c;
            const float mk = j < j_end ? mask[j] * kLog2e : -INFINITY;
            s[c] += mk;
            s[2 + c] += mk;
            mx[0] = fmaxf(mx[0], s[c]);
            mx[1] = fmaxf(mx[1], s[2 + c]);
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        }
        if (kpart == 0 && t == 0) sm.tile_max[pwarp][g] = mx[0], sm.tile_max[pwarp][g + 8] = mx[1];
        __syncthreads();
        float c_row[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float m_new = m_row[r];
            for (int w = 0; w < kMlaPosWarps; ++w) m_new = fmaxf(m_new, sm.tile_max[w][g + 8 * r]);
            c_row[r] = m_new == -INFINITY ? 1.0f : exp2f(m_row[r] - m_new);
            m_row[r] = m_new;
            l_row[r] *= c_row[r];
        }
        if (kpart == 0) {
            float p[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int r = e / 2;
                p[e] = m_row[r] == -INFINITY ? 0.0f : exp2f(s[e] - m_row[r]);
                l_row[r] += p[e];
            }
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                pack_hi_lo(p[2 * r], p[2 * r + 1], *reinterpret_cast<uint32_t*>(&sm.p_hi[g + 8 * r][pw + 2 * t]),
                           *reinterpret_cast<uint32_t*>(&sm.p_lo[g + 8 * r][pw + 2 * t]));
            }
        }
#pragma unroll
        for (int nf = 0; nf < COLS / 8; ++nf) {
            o[nf][0] *= c_row[0];
            o[nf][1] *= c_row[0];
            o[nf][2] *= c_row[1];
            o[nf][3] *= c_row[1];
        }
        __syncthreads();  // every warp's P is in shared memory
        const int c0 = COLS * warp;
#pragma unroll
        for (int ks0 = 0; ks0 < kMlaTile; ks0 += 16) {
            uint32_t ph[4], pl[4];
            ldmatrix_x4<false>(ph, &sm.p_hi[lane % 16][ks0 + 8 * (lane / 16)]);
            ldmatrix_x4<false>(pl, &sm.p_lo[lane % 16][ks0 + 8 * (lane / 16)]);
#pragma unroll
            for (int n0 = 0; n0 < COLS; n0 += 16) {
                uint32_t vb[4];
                ldmatrix_x4<true>(vb, &sm.kv[buf][ks0 + lane % 8 + 8 * ((lane / 8) % 2)][c0 + n0 + 8 * (lane / 16)]);
                const uint32_t b0[2] = {vb[0], vb[1]}, b1[2] = {vb[2], vb[3]};
                mma_16816<__half>(o[n0 / 8], ph, b0);
                mma_16816<__half>(o[n0 / 8], pl, b0);
                mma_16816<__half>(o[n0 / 8 + 1], ph, b1);
                mma_16816<__half>(o[n0 / 8 + 1], pl, b1);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l_row[r] += __shfl_xor_sync(0xffffffffu, l_row[r], 1);
        l_row[r] += __shfl_xor_sync(0xffffffffu, l_row[r], 2);
    }
    __syncthreads();
    if (t == 0) sm.sum[warp][g] = l_row[0], sm.sum[warp][g + 8] = l_row[1];
    __syncthreads();
    // The lane's two adjacent columns of each fragment as one 8-byte store (DV and DV + 2 are even).
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int h = g + 8 * r;
        if (h >= ng) continue;
        float l = 0.0f;
#pragma unroll
        for (int w = 0; w < W; ++w) l += sm.sum[w][h];
        const int64_t row = h0 + h;
        const float inv = n_splits == 1 ? (l > 0.0f ? 1.0f / l : 0.0f) : 1.0f;
        float* dst = n_splits == 1 ? out + row * DV : ws + (row * n_splits + split) * (DV + 2);
#pragma unroll
        for (int nf = 0; nf < COLS / 8; ++nf) {
            const int e = COLS * warp + 8 * nf + 2 * t;
            *reinterpret_cast<float2*>(dst + e) = make_float2(o[nf][2 * r] * inv, o[nf][2 * r + 1] * inv);
        }
        if (n_splits > 1 && warp == 0 && t == 0) {
            dst[DV] = m_row[r] / kLog2e;  // natural-log units, as the combine kernel expects
            dst[DV + 1] = l;
        }
    }
}

}  // namespace

// The shapes: cuda/mla.cuh.
bool mla_kernel_fits(DType type_k, DType type_v, const Shape4& qs, const void* k, const Shape4& ks, const void* v,
                     const Shape4& vs) {
    static const bool on = switched_on("MINFER_CUDA_FA_TILE");
    const int64_t dk = ks.ne[0], dv = vs.ne[0];
    const bool shape = (dk == 576 && dv == 512) || (dk == 288 && dv == 256) || (dk == 544 && dv == 512);
    // V is each K row's start (dim 2's stride matters only with several latents)
    const bool prefix = k == v && ks.nb[1] == vs.nb[1] && (ks.ne[2] == 1 || ks.nb[2] == vs.nb[2]);
    const bool aligned = reinterpret_cast<uintptr_t>(k) % 16 == 0 && ks.nb[1] % 16 == 0 && ks.nb[2] % 16 == 0;
    return on && type_k == DType::F16 && type_v == DType::F16 && shape && prefix && aligned && qs.ne[2] == 1 &&
           qs.nb[0] == 4 && qs.nb[1] % 4 == 0 && ks.nb[0] == 2;
}

MlaGrid mla_grid(const Shape4& qs, const Shape4& ks) {
    const int64_t n_head = qs.ne[1], n_kv = ks.ne[1], n_head_kv = ks.ne[2];
    const int64_t blocks = n_head_kv * ceil_div(n_head / n_head_kv, kTileHeads);
    return {blocks, int(std::max<int64_t>(1, std::min<int64_t>(ceil_div(132, blocks), n_kv / kMlaTile)))};
}

namespace {

// True when the MLA kernel may load its queries as float4s (load_queries_x4): one token, each part's
// rows 16-byte aligned and a whole number of float4s long, its heads within 32-bit offsets.
// MINFER_CUDA_MLA_QX4=0 keeps load_queries.
bool mla_queries_x4(const RowsF32& q, const Shape4& qs) {
    static const bool on = switched_on("MINFER_CUDA_MLA_QX4");
    const auto rows = [&](const char* p, const Shape4& s) {
        return reinterpret_cast<uintptr_t>(p) % 16 == 0 && s.nb[0] == 4 && s.ne[0] % 4 == 0 && s.nb[1] % 16 == 0 &&
               s.nb[1] * qs.ne[1] < (int64_t(1) << 31);
    };
    return on && qs.ne[2] == 1 && rows(q.a, q.sa) && (!q.b || rows(q.b, q.sb));
}

template <int DK, int DV, int W>
void launch_mla_warps(const RowsF32& q, const Shape4& qs, const void* k, const Shape4& ks, const float* mask,
                      float* out, float* ws, float scale, cudaStream_t stream) {
    const int64_t n_kv = ks.ne[1];
    const int group = int(qs.ne[1] / ks.ne[2]);
    const auto [blocks, n_splits] = mla_grid(qs, ks);
    const int split_rows = int(ceil_div(n_kv, n_splits));
    constexpr size_t smem = sizeof(MlaSmem<DK, DV, W>);
    static const bool attr = [] {
        CUDA_CHECK(cudaFuncSetAttribute(flash_attn_mla_kernel<DK, DV, W>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
        return true;
    }();
    (void)attr;
    const dim3 grid(grid_x(blocks), unsigned(n_splits));
    launch_overlapped(flash_attn_mla_kernel<DK, DV, W>, grid, W * WARP_SIZE, smem, stream, q,
                      static_cast<const char*>(k), ks, mask, out, ws, group, int(n_kv), split_rows, n_splits, scale,
                      mla_queries_x4(q, qs));
}

// MINFER_CUDA_MLA16=1: 16 warps where DK splits in two halves of whole 32-element steps (576). Off by
// default until it has been measured against the 8-warp kernel (docs/PERFORMANCE.md, "Ready for the
// next GPU session").
template <int DK, int DV>
void launch_mla_dk(const RowsF32& q, const Shape4& qs, const void* k, const Shape4& ks, const float* mask, float* out,
                float* ws, float scale, cudaStream_t stream) {
    static const bool sixteen = [] {
        const char* v = std::getenv("MINFER_CUDA_MLA16");
        return v && std::strcmp(v, "1") == 0;
    }();
    if constexpr (DK % 64 == 0 && DV % 256 == 0) {
        if (sixteen) {
            launch_mla_warps<DK, DV, 16>(q, qs, k, ks, mask, out, ws, scale, stream);
        } else {
            launch_mla_warps<DK, DV, 8>(q, qs, k, ks, mask, out, ws, scale, stream);
        }
    } else {
        launch_mla_warps<DK, DV, 8>(q, qs, k, ks, mask, out, ws, scale, stream);
    }
    CUDA_CHECK_LAUNCH();
    const int n_splits = mla_grid(qs, ks).n_splits;
    if (n_splits > 1) launch_attn_combine(ws, out, qs.ne[1], n_splits, DV, stream);
}

}  // namespace

void launch_mla(const RowsF32& q, const Shape4& qs, const void* k, const Shape4& ks, const float* mask, float* out,
                float* ws, float scale, cudaStream_t stream) {
    const int64_t dk = ks.ne[0];
    if (dk == 576) return launch_mla_dk<576, 512>(q, qs, k, ks, mask, out, ws, scale, stream);
    if (dk == 288) return launch_mla_dk<288, 256>(q, qs, k, ks, mask, out, ws, scale, stream);
    return launch_mla_dk<544, 512>(q, qs, k, ks, mask, out, ws, scale, stream);
}

}  // namespace mf
