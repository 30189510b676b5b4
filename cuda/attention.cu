// Flash attention for decode and prefill over a KV cache of f16, q8_0 or q4_0 rows.
//
// Grid: (KV head x group chunk, split, token). A block serves up to kGroupMax query heads that share
// one KV head, so each cached K/V row is read once per group (GQA/MQA), not once per query head.
// Its 4 warps take every 4th position of the block's split; a warp dequantizes one K row in
// registers (lane l holds elements l, l + 32, ...: for q8_0/q4_0 that is one block per step, read
// with one broadcast scale), scores all its query heads with warp sums, and keeps an online softmax
// (running max, sum, weighted V) per head. Warps are merged in shared memory; with several splits
// (decode at long context, where one block per head would leave most SMs idle) each split writes
// (max, sum, acc) to scratch and a second kernel combines them.
//
// ATTN_FUSED (the `--attn fused` backend) is the plain alternative: one block per (KV head, chunk of
// its query heads, token) holds every score of the span in shared memory and normalizes them whole.
#include "cuda/attention.cuh"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "cuda/attention_tc.cuh"
#include "cuda/mla.cuh"
#include "cuda/mma.cuh"

namespace mf {

namespace {

constexpr int kWarps = 4;
// Query heads one block serves. MLA's wide latent rows (576/512) keep 4, so the per-warp partial
// sums still fit in 48 KB of shared memory.
template <int HDV>
constexpr int group_max() { return HDV > 256 ? 4 : 8; }
constexpr int kMinSplitRows = 32;  // fewer positions per split than this is not worth a split

struct KvF16 {};
struct KvQ8_0 {};
struct KvQ4_0 {};

// Element e of a cached row, as f32.
__device__ __forceinline__ float load_kv(KvF16, const char* row, int e) {
    return __half2float(reinterpret_cast<const __half*>(row)[e]);
}
__device__ __forceinline__ float load_kv(KvQ8_0, const char* row, int e) {
    const char* b = row + (e / 32) * 34;  // fp16 scale, 32 int8
    return fp16_bits_to_f32(*reinterpret_cast<const uint16_t*>(b)) * float(int8_t(b[2 + e % 32]));
}
__device__ __forceinline__ float load_kv(KvQ4_0, const char* row, int e) {
    const char* b = row + (e / 32) * 18;  // fp16 scale, 16 bytes: element r < 16 low nibble of byte r, else high of r - 16
    const int r = e % 32;
    const uint8_t byte = uint8_t(b[2 + (r & 15)]);
    const int nib = r < 16 ? (byte & 15) : (byte >> 4);
    return fp16_bits_to_f32(*reinterpret_cast<const uint16_t*>(b)) * float(nib - 8);
}

// Element e of a K row of HDK values whose last HDR are in the tail's f16 row `tail_row`.
template <typename KT, int HDK, int HDR>
__device__ __forceinline__ float load_k(const char* row, const char* tail_row, int e) {
    if constexpr (HDR == 0) return load_kv(KT{}, row, e);
    else return e < HDK - HDR ? load_kv(KT{}, row, e) : load_kv(KvF16{}, tail_row, e - (HDK - HDR));
}

template <typename KT, typename VT, int HDK, int HDV, int HDR = 0>
__global__ void __launch_bounds__(kWarps * WARP_SIZE)
flash_attn_kernel(const float* __restrict__ q, Shape4 qs, const char* __restrict__ k, Shape4 ks,
                  const char* __restrict__ v, Shape4 vs, const float* __restrict__ mask, int64_t mask_nb1,
                  float* __restrict__ out, float* __restrict__ ws, int group, int n_kv, int split_rows,
                  int n_splits, float scale, KTail kt) {
    begin_overlapped_kernel();
    constexpr int kGroupMax = group_max<HDV>();
    constexpr int EK = (HDK + WARP_SIZE - 1) / WARP_SIZE;  // elements per lane
    constexpr int EV = (HDV + WARP_SIZE - 1) / WARP_SIZE;
    const int n_head = int(qs.ne[1]);
    const int group_chunks = (group + kGroupMax - 1) / kGroupMax;
    const int hk = blockIdx.x / group_chunks;
    const int h0 = hk * group + (blockIdx.x % group_chunks) * kGroupMax;  // first query head served
    const int ng = min(kGroupMax, hk * group + group - h0);
    const int split = blockIdx.y, t = blockIdx.z;
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;

    __shared__ float q_sh[kGroupMax][HDK];
    for (int i = threadIdx.x; i < ng * HDK; i += blockDim.x) {
        const int g = i / HDK, e = i % HDK;
        const char* qrow = reinterpret_cast<const char*>(q) + t * qs.nb[2] + (h0 + g) * qs.nb[1];
        q_sh[g][e] = reinterpret_cast<const float*>(qrow)[e] * scale;  // scale folded into q once
    }
    __syncthreads();

    float run_max[kGroupMax], run_sum[kGroupMax], acc[kGroupMax][EV];
#pragma unroll
    for (int g = 0; g < kGroupMax; ++g) {
        run_max[g] = -INFINITY;
        run_sum[g] = 0.0f;
#pragma unroll
        for (int i = 0; i < EV; ++i) acc[g][i] = 0.0f;
    }
    const float* mrow = reinterpret_cast<const float*>(reinterpret_cast<const char*>(mask) + t * mask_nb1);
    const int j_end = min(n_kv, (split + 1) * split_rows);
    // Two positions per step, both rows' loads issued before either is used: at long depth a warp
    // is bound by load latency, and this doubles the bytes it has in flight.
    constexpr int kUnroll = 2;
    for (int j0 = split * split_rows + warp; j0 < j_end; j0 += kWarps * kUnroll) {
        float kf[kUnroll][EK], vf[kUnroll][EV], mk[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
            const int j = j0 + u * kWarps;
            mk[u] = j < j_end ? mrow[j] : -INFINITY;  // the same for the whole warp
            if (mk[u] == -INFINITY) continue;
            const char* krow = k + j * ks.nb[1] + hk * ks.nb[2];
            const char* vrow = v + j * vs.nb[1] + hk * vs.nb[2];
            const char* trow = HDR ? kt.rows + j * kt.nb1 + hk * kt.nb2 : nullptr;
#pragma unroll
            for (int i = 0; i < EK; ++i) {
                const int e = i * WARP_SIZE + lane;
                kf[u][i] = e < HDK ? load_k<KT, HDK, HDR>(krow, trow, e) : 0.0f;
            }
#pragma unroll
            for (int i = 0; i < EV; ++i) {
                const int e = i * WARP_SIZE + lane;
                vf[u][i] = e < HDV ? load_kv(VT{}, vrow, e) : 0.0f;
            }
        }
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
            if (mk[u] == -INFINITY) continue;
#pragma unroll
            for (int g = 0; g < kGroupMax; ++g) {
                if (g >= ng) break;
                float dot = 0.0f;
#pragma unroll
                for (int i = 0; i < EK; ++i) {
                    const int e = i * WARP_SIZE + lane;
                    if (e < HDK) dot += q_sh[g][e] * kf[u][i];
                }
                const float s = warp_sum(dot) + mk[u];
                const float m_new = fmaxf(run_max[g], s);
                const float c = __expf(run_max[g] - m_new);  // 0 on the first visible row
                const float p = __expf(s - m_new);
                run_sum[g] = run_sum[g] * c + p;
#pragma unroll
                for (int i = 0; i < EV; ++i) acc[g][i] = acc[g][i] * c + p * vf[u][i];
                run_max[g] = m_new;
            }
        }
    }

    // Merge the warps.
    __shared__ float max_sh[kWarps][kGroupMax], sum_sh[kWarps][kGroupMax];
    __shared__ float acc_sh[kWarps][kGroupMax][HDV];
    for (int g = 0; g < ng; ++g) {
        if (lane == 0) {
            max_sh[warp][g] = run_max[g];
            sum_sh[warp][g] = run_sum[g];
        }
#pragma unroll
        for (int i = 0; i < EV; ++i) {
            const int e = i * WARP_SIZE + lane;
            if (e < HDV) acc_sh[warp][g][e] = acc[g][i];
        }
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < ng * HDV; idx += blockDim.x) {
        const int g = idx / HDV, e = idx % HDV;
        float m = -INFINITY;
        for (int w = 0; w < kWarps; ++w) m = fmaxf(m, max_sh[w][g]);
        float l = 0.0f, a = 0.0f;
        if (m != -INFINITY) {
            for (int w = 0; w < kWarps; ++w) {
                if (max_sh[w][g] == -INFINITY) continue;
                const float c = __expf(max_sh[w][g] - m);
                l += sum_sh[w][g] * c;
                a += acc_sh[w][g][e] * c;
            }
        }
        const int64_t row = int64_t(t) * n_head + h0 + g;  // (token, query head)
        if (n_splits == 1) {
            out[row * HDV + e] = l > 0.0f ? a / l : 0.0f;  // a query that sees nothing gets zeros
        } else {
            const int64_t part = row * n_splits + split;
            ws[part * (HDV + 2) + e] = a;
            if (e == 0) {
                ws[part * (HDV + 2) + HDV] = m;
                ws[part * (HDV + 2) + HDV + 1] = l;
            }
        }
    }
}

// Merges the splits' partials (per row and split: acc [HD], max, sum) into the output rows. grid =
// (rows, ceil(HD / 32)), kCombineWarps warps: a block first turns the splits' maxima into weights
// exp(m_s - m) in shared memory, once rather than once per element, then lane e of warp w adds splits
// w, w + kCombineWarps, ... of element 32 blockIdx.y + e (32 consecutive floats a warp load), and the
// warps' partial sums meet in shared memory. The first version gave a row one block whose threads
// walked every split in turn for each of their elements: 132 dependent steps per element for MLA's
// 512-wide rows, on 16 blocks.
constexpr int kCombineWarps = 4;

template <int HD>
__global__ void __launch_bounds__(kCombineWarps * WARP_SIZE)
    flash_attn_combine_kernel(const float* __restrict__ ws, float* __restrict__ out, int n_splits) {
    extern __shared__ float weight[];  // [n_splits]
    __shared__ float partial[kCombineWarps][WARP_SIZE];
    begin_overlapped_kernel();
    const int64_t row = blockIdx.x;
    const float* parts = ws + row * n_splits * (HD + 2);
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    float m = -INFINITY;
    for (int s = threadIdx.x; s < n_splits; s += blockDim.x) m = fmaxf(m, parts[s * (HD + 2) + HD]);
    m = block_max(m);
    float l = 0.0f;
    for (int s = threadIdx.x; s < n_splits; s += blockDim.x) {
        const float ms = parts[s * (HD + 2) + HD];
        const float c = ms == -INFINITY ? 0.0f : __expf(ms - m);  // a split with no unmasked position: 0
        weight[s] = c;
        l += parts[s * (HD + 2) + HD + 1] * c;
    }
    l = block_sum(l);  // its barriers also publish weight[]
    const int e = WARP_SIZE * blockIdx.y + lane;
    float a = 0.0f;
    if (e < HD) {
#pragma unroll 8
        for (int s = warp; s < n_splits; s += kCombineWarps) {
            const float c = weight[s];
            if (c != 0.0f) a += parts[s * (HD + 2) + e] * c;  // a split with nothing unmasked adds nothing
        }
    }
    partial[warp][lane] = a;
    __syncthreads();
    if (warp == 0 && e < HD) {
#pragma unroll
        for (int w = 1; w < kCombineWarps; ++w) a += partial[w][lane];
        out[row * HD + e] = l > 0.0f ? a / l : 0.0f;
    }
}

// The combine step after a split flash-attention kernel: rows = query heads x tokens.
template <int HD>
void launch_combine(const float* ws, float* out, int64_t rows, int n_splits, cudaStream_t stream) {
    const dim3 grid(grid_x(rows), unsigned(ceil_div(HD, WARP_SIZE)));
    launch_overlapped(flash_attn_combine_kernel<HD>, grid, kCombineWarps * WARP_SIZE, size_t(n_splits) * sizeof(float),
                      stream, ws, out, n_splits);
    CUDA_CHECK_LAUNCH();
}

// Splits so that the grid has ~8 blocks (32 warps) per SM of a large GPU, each split at least
// kMinSplitRows positions long: decode attention is latency-bound, and with 2 blocks per SM (the
// first version) an 8B decode step at depth 16K read its cache at ~10% of the HBM bandwidth.
int choose_splits(int64_t n_head, int64_t n_head_kv, int64_t n_tokens, int64_t n_kv, int gmax) {
    const int64_t group = n_head / n_head_kv;
    const int64_t blocks = n_head_kv * ((group + gmax - 1) / gmax) * n_tokens;
    const int64_t want = (1056 + blocks - 1) / blocks;
    const int64_t most = std::max<int64_t>(1, n_kv / kMinSplitRows);
    return int(std::max<int64_t>(1, std::min(want, most)));
}

template <typename KT, typename VT, int HDK, int HDV, int HDR = 0>
void launch_typed(const float* q, const Shape4& qs, const void* k, const Shape4& ks, const void* v, const Shape4& vs,
                  const float* mask, int64_t mask_nb1, float* out, float* ws, float scale, cudaStream_t stream,
                  KTail kt = {}) {
    const int64_t n_head = qs.ne[1], n_tokens = qs.ne[2], n_kv = ks.ne[1], n_head_kv = ks.ne[2];
    const int group = int(n_head / n_head_kv);
    const int n_splits = choose_splits(n_head, n_head_kv, n_tokens, n_kv, group_max<HDV>());
    const int split_rows = int(ceil_div(n_kv, n_splits));
    const dim3 grid(grid_x(n_head_kv * ceil_div(group, group_max<HDV>())), unsigned(n_splits), unsigned(n_tokens));
    MF_ASSERT_MSG(n_tokens <= 65535, "flash_attn: too many tokens in one step");
    launch_overlapped(flash_attn_kernel<KT, VT, HDK, HDV, HDR>, grid, kWarps * WARP_SIZE, 0, stream, q, qs,
                      static_cast<const char*>(k), ks, static_cast<const char*>(v), vs, mask, mask_nb1, out, ws, group,
                      int(n_kv), split_rows, n_splits, scale, kt);
    CUDA_CHECK_LAUNCH();
    if (n_splits > 1) {
        launch_combine<HDV>(ws, out, n_head * n_tokens, n_splits, stream);
    }
}


// ---- On the tensor cores: f16 K and V, head sizes 64, 128 or 192/128 ----
//
// A block serves 16 query rows of one KV head (the m16 of mma.m16n8k16): at decode up to 16 query
// heads of its group (a smaller group pads with zero queries) for one split of the positions; at
// prefill 16 (token, head) pairs of the group's heads over all positions, each row with its token's
// mask row, tiles masked whole for all 16 rows skipped after the scores. Each of its 4 warps streams
// tiles of 16 positions (warp w: tiles w, w + 4, ... of the split), K and V rows copied to shared
// memory with cp.async two tiles ahead of use; per tile, S = Q K^T (16 rows x 16 positions) and
// O += P V are mma.sync's, the softmax is online per tile (one rescale per 16 positions instead of per
// position) and no value crosses lanes but a row's max and sum within a quad. Q and P are split into f16 hi + lo parts, each
// multiplied, so the scores and weights keep f32 precision (the CPU's) while K and V are the cache's
// f16 values exactly. Scores are in log2 units (log2 e folded into the query scale) for exp2f.
constexpr int kTilePos = 16;   // positions per warp tile

// s += Q K^T for 16 query rows and 16 positions: k_rows is the first of the 16 K rows in shared memory
// (row stride ROW halves). s[nf] holds rows g, g + 8 at positions 8 nf + 2t, + 1 (mma's d layout).
template <int DK, int ROW>
__device__ __forceinline__ void tile_scores(float (&s)[2][4], const __half (*q_hi)[ROW], const __half (*q_lo)[ROW],
                                            const __half (*k_rows)[ROW], int lane) {
    constexpr int UNROLL = DK <= 256 ? DK / 16 : 4;  // the MLA latent's 36 steps: 4 at a time
#pragma unroll UNROLL
    for (int k0 = 0; k0 < DK; k0 += 16) {
        uint32_t qh[4], ql[4], kb[4];
        ldmatrix_x4<false>(qh, &q_hi[lane % 16][k0 + 8 * (lane / 16)]);
        ldmatrix_x4<false>(ql, &q_lo[lane % 16][k0 + 8 * (lane / 16)]);
        ldmatrix_x4<false>(kb, &k_rows[lane % 8 + 8 * (lane / 16)][k0 + 8 * ((lane / 8) % 2)]);
        const uint32_t b0[2] = {kb[0], kb[1]}, b1[2] = {kb[2], kb[3]};
        mma_16816<__half>(s[0], qh, b0);
        mma_16816<__half>(s[0], ql, b0);
        mma_16816<__half>(s[1], qh, b1);
        mma_16816<__half>(s[1], ql, b1);
    }
}

// Adds the mask (log2 units; positions from j_end on: -inf) to the 16 positions from j0, row g's from
// mask_g and row g + 8's from mask_g8 (the same row for one token), and returns each of the lane's two
// rows' maximum over them (the same across a quad).
__device__ __forceinline__ void mask_and_row_max(float (&s)[2][4], float (&mx)[2], const float* mask_g,
                                                 const float* mask_g8, int j0, int j_end, int t) {
    mx[0] = mx[1] = -INFINITY;
#pragma unroll
    for (int nf = 0; nf < 2; ++nf) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
            const int j = j0 + 8 * nf + 2 * t + c;
            const bool in = j < j_end;
            s[nf][c] += in ? mask_g[j] * kLog2e : -INFINITY;  // -inf stays -inf
            s[nf][2 + c] += in ? mask_g8[j] * kLog2e : -INFINITY;
            mx[0] = fmaxf(mx[0], s[nf][c]);
            mx[1] = fmaxf(mx[1], s[nf][2 + c]);
        }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    }
}

template <int DK, int DV>
struct TileAttnSmem {
    // Rows in halves, padded so rows start 16 bytes apart mod 128: ldmatrix conflict-free.
    static constexpr int ROW_K = DK + 8, ROW_V = DV + 8;
    __half q_hi[kTileHeads][ROW_K];
    __half q_lo[kTileHeads][ROW_K];
    union {
        struct {
            __half k[2][kTilePos][ROW_K];
            __half v[2][kTilePos][ROW_V];
        } tiles[kWarps];
        struct {  // the warps' results, merged once all are done
            float max[kWarps][kTileHeads];
            float sum[kWarps][kTileHeads];
            float acc[kWarps][kTileHeads][DV];
        } merge;
    };
};

template <int DK, int DV>
__global__ void __launch_bounds__(kWarps * WARP_SIZE)
flash_attn_tile_kernel(const float* __restrict__ q, Shape4 qs, const char* __restrict__ k, Shape4 ks,
                       const char* __restrict__ v, Shape4 vs, const float* __restrict__ mask, int64_t mask_nb1,
                       float* __restrict__ out, float* __restrict__ ws, int group, int n_kv, int split_rows,
                       int n_splits, float scale) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    auto& sm = *reinterpret_cast<TileAttnSmem<DK, DV>*>(smem_raw);
    constexpr int VECS_K = DK / 8, VECS_V = DV / 8;  // 16-byte vectors per row
    begin_overlapped_kernel();
    const HeadChunk hc = head_chunk(group, int(qs.ne[2]));
    const int hk = hc.hk, ng = hc.ng;
    const int split = blockIdx.y;
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const int g = lane / 4, t = lane % 4;
    // The mask rows of the lane's two query rows (a padding row takes row 0's).
    const float* mask_g = mask + hc.token(g < ng ? g : 0) * (mask_nb1 / 4);
    const float* mask_g8 = mask + hc.token(g + 8 < ng ? g + 8 : 0) * (mask_nb1 / 4);

    const int j_begin = split * split_rows, j_end = min(n_kv, j_begin + split_rows);
    const char* k_head = k + int64_t(hk) * ks.nb[2];
    const char* v_head = v + int64_t(hk) * vs.nb[2];
    auto& tl = sm.tiles[warp];
    // Tile i of this warp: positions j_begin + kTilePos (warp + kWarps i) ...; rows past the split are zeros.
    auto issue = [&](int i, int buf) {
        const int j0 = j_begin + kTilePos * (warp + kWarps * i);
#pragma unroll
        for (int it = 0; it < kTilePos * VECS_K / WARP_SIZE; ++it) {
            const int idx = lane + it * WARP_SIZE;
            const int r = idx / VECS_K, c = idx % VECS_K;
            const bool in = j0 + r < j_end;
            cp_async16_or_zero(&tl.k[buf][r][8 * c], k_head + (in ? j0 + r : j_begin) * ks.nb[1] + 16 * c, in);
        }
#pragma unroll
        for (int it = 0; it < kTilePos * VECS_V / WARP_SIZE; ++it) {
            const int idx = lane + it * WARP_SIZE;
            const int r = idx / VECS_V, c = idx % VECS_V;
            const bool in = j0 + r < j_end;
            cp_async16_or_zero(&tl.v[buf][r][8 * c], v_head + (in ? j0 + r : j_begin) * vs.nb[1] + 16 * c, in);
        }
        cp_async_commit();
    };
    const int n_tiles = j_end > j_begin + kTilePos * warp
                            ? (j_end - j_begin - kTilePos * warp + kTilePos * kWarps - 1) / (kTilePos * kWarps)
                            : 0;
    if (n_tiles > 0) issue(0, 0);  // the first tile's copies are under way while the queries load
    const int64_t q_head = qs.nb[1] / 4, q_token = qs.nb[2] / 4;
    const auto query = [=](int e, int head, int token) { return q[int64_t(token) * q_token + int64_t(head) * q_head + e]; };
    load_queries<DK, TileAttnSmem<DK, DV>::ROW_K, kWarps * WARP_SIZE>(sm.q_hi, sm.q_lo, query, hc, scale);
    __syncthreads();  // the queries are in shared memory

    float o[DV / 8][4] = {};
    float m_row[2] = {-INFINITY, -INFINITY};  // rows g and g + 8, log2 units, equal across a quad
    float l_row[2] = {0.0f, 0.0f};            // this lane's part of the row sums
    for (int i = 0; i < n_tiles; ++i) {
        const int buf = i & 1;
        if (i + 1 < n_tiles) {
            issue(i + 1, buf ^ 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncwarp();
        // S = Q K^T: s[nf] holds rows g, g + 8 at positions 8 nf + 2t, + 1.
        float s[2][4] = {};
        tile_scores<DK>(s, sm.q_hi, sm.q_lo, tl.k[buf], lane);
        // Mask, then the online softmax of the tile.
        float tile_max[2];
        mask_and_row_max(s, tile_max, mask_g, mask_g8, j_begin + kTilePos * (warp + kWarps * i), j_end, t);
        // A tile masked whole for every row (prefill's causal mask past the rows' tokens) adds nothing.
        if (__all_sync(0xffffffffu, tile_max[0] == -INFINITY && tile_max[1] == -INFINITY)) {
            __syncwarp();
            continue;
        }
        float c_row[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const float m_new = fmaxf(m_row[r], tile_max[r]);
            // Nothing visible yet in this row: keep everything at zero (and exp2f(-inf - -inf) away).
            c_row[r] = m_new == -INFINITY ? 1.0f : exp2f(m_row[r] - m_new);
            m_row[r] = m_new;
            l_row[r] *= c_row[r];
        }
        float p[2][4];
#pragma unroll
        for (int nf = 0; nf < 2; ++nf) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int r = e / 2;
                p[nf][e] = m_row[r] == -INFINITY ? 0.0f : exp2f(s[nf][e] - m_row[r]);
                l_row[r] += p[nf][e];
            }
        }
#pragma unroll
        for (int nf = 0; nf < DV / 8; ++nf) {
            o[nf][0] *= c_row[0];
            o[nf][1] *= c_row[0];
            o[nf][2] *= c_row[1];
            o[nf][3] *= c_row[1];
        }
        // P as the A operand (rows = heads, k = the 16 positions), in hi and lo halves.
        uint32_t ph[4], pl[4];
#pragma unroll
        for (int a = 0; a < 4; ++a) {
            const int nf = a / 2, e = 2 * (a % 2);  // a0: nf 0 row g, a1: nf 0 row g + 8, a2/a3: nf 1
            pack_hi_lo(p[nf][e], p[nf][e + 1], ph[a], pl[a]);
        }
        // O += P V, two 8-column fragments of V per ldmatrix.
#pragma unroll
        for (int n0 = 0; n0 < DV; n0 += 16) {
            uint32_t vb[4];
            ldmatrix_x4<true>(vb, &tl.v[buf][lane % 8 + 8 * ((lane / 8) % 2)][n0 + 8 * (lane / 16)]);
            const uint32_t b0[2] = {vb[0], vb[1]}, b1[2] = {vb[2], vb[3]};
            mma_16816<__half>(o[n0 / 8], ph, b0);
            mma_16816<__half>(o[n0 / 8], pl, b0);
            mma_16816<__half>(o[n0 / 8 + 1], ph, b1);
            mma_16816<__half>(o[n0 / 8 + 1], pl, b1);
        }
        __syncwarp();  // the next issue overwrites this buffer
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l_row[r] += __shfl_xor_sync(0xffffffffu, l_row[r], 1);
        l_row[r] += __shfl_xor_sync(0xffffffffu, l_row[r], 2);
    }

    // Merge the warps (the tiles' shared memory is free once every warp is here).
    __syncthreads();
    auto& mg = sm.merge;
    if (t == 0) {
        mg.max[warp][g] = m_row[0], mg.max[warp][g + 8] = m_row[1];
        mg.sum[warp][g] = l_row[0], mg.sum[warp][g + 8] = l_row[1];
    }
#pragma unroll
    for (int nf = 0; nf < DV / 8; ++nf) {
        mg.acc[warp][g][8 * nf + 2 * t] = o[nf][0];
        mg.acc[warp][g][8 * nf + 2 * t + 1] = o[nf][1];
        mg.acc[warp][g + 8][8 * nf + 2 * t] = o[nf][2];
        mg.acc[warp][g + 8][8 * nf + 2 * t + 1] = o[nf][3];
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < ng * DV; idx += blockDim.x) {
        const int h = idx / DV, e = idx % DV;
        float m = -INFINITY;
        for (int w = 0; w < kWarps; ++w) m = fmaxf(m, mg.max[w][h]);
        float l = 0.0f, a = 0.0f;
        if (m != -INFINITY) {
            for (int w = 0; w < kWarps; ++w) {
                if (mg.max[w][h] == -INFINITY) continue;
                const float c = exp2f(mg.max[w][h] - m);
                l += mg.sum[w][h] * c;
                a += mg.acc[w][h][e] * c;
            }
        }
        const int64_t row = int64_t(hc.token(h)) * qs.ne[1] + hc.head(h);  // out [DV, n_head, T]
        if (n_splits == 1) {
            out[row * DV + e] = l > 0.0f ? a / l : 0.0f;
        } else {
            const int64_t part = row * n_splits + split;
            ws[part * (DV + 2) + e] = a;
            if (e == 0) {
                ws[part * (DV + 2) + DV] = m / kLog2e;  // natural-log units, as the combine kernel expects
                ws[part * (DV + 2) + DV + 1] = l;
            }
        }
    }
}

// Splits for the tile kernel: ~4 blocks per SM of a large GPU, at least one tile per warp each.
int choose_tile_splits(int64_t n_head, int64_t n_head_kv, int64_t n_tokens, int64_t n_kv) {
    const int64_t group = n_head / n_head_kv;
    const int64_t blocks = n_head_kv * ((group * n_tokens + kTileHeads - 1) / kTileHeads);
    const int64_t want = (528 + blocks - 1) / blocks;
    const int64_t most = std::max<int64_t>(1, n_kv / (kTilePos * kWarps));
    return int(std::max<int64_t>(1, std::min(want, most)));
}

// True when the tile kernel takes this attention: f16 K and V with head sizes 64/64, 128/128 or 192/128
// (expanded MLA, --mla-expanded), rows and head offsets 16-byte aligned, one token or many.
// MINFER_CUDA_FA_TILE=0 keeps every call on flash_attn_kernel (and MLA on it too);
// MINFER_CUDA_FA_TILE_PREFILL=0 only the calls of several tokens.
bool tile_kernel_fits(DType type_k, DType type_v, const Shape4& qs, const void* k, const Shape4& ks, const void* v,
                      const Shape4& vs) {
    static const bool on = switched_on("MINFER_CUDA_FA_TILE");
    static const bool prefill = switched_on("MINFER_CUDA_FA_TILE_PREFILL");
    const int64_t dk = ks.ne[0], dv = vs.ne[0];
    const bool aligned = reinterpret_cast<uintptr_t>(k) % 16 == 0 && reinterpret_cast<uintptr_t>(v) % 16 == 0 &&
                         ks.nb[1] % 16 == 0 && ks.nb[2] % 16 == 0 && vs.nb[1] % 16 == 0 && vs.nb[2] % 16 == 0;
    const bool shape = (dk == 64 && dv == 64) || (dk == 128 && dv == 128) || (dk == 192 && dv == 128);
    return on && type_k == DType::F16 && type_v == DType::F16 && shape &&
           (qs.ne[2] == 1 || prefill) && qs.ne[3] == 1 &&
           qs.nb[0] == 4 && qs.nb[1] % 4 == 0 && qs.nb[2] % 4 == 0 && ks.nb[0] == 2 && vs.nb[0] == 2 && aligned;
}

template <int DK, int DV>
void launch_tile(const float* q, const Shape4& qs, const void* k, const Shape4& ks, const void* v, const Shape4& vs,
                 const float* mask, int64_t mask_nb1, float* out, float* ws, float scale, cudaStream_t stream) {
    const int64_t n_head = qs.ne[1], n_tokens = qs.ne[2], n_kv = ks.ne[1], n_head_kv = ks.ne[2];
    const int group = int(n_head / n_head_kv);
    // Splits only while the (token, head) rows alone leave the GPU short of blocks.
    const int n_splits = choose_tile_splits(n_head, n_head_kv, n_tokens, n_kv);
    const int split_rows = int(ceil_div(n_kv, n_splits));
    constexpr size_t smem = sizeof(TileAttnSmem<DK, DV>);
    static const bool attr = [] {
        CUDA_CHECK(cudaFuncSetAttribute(flash_attn_tile_kernel<DK, DV>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        int(smem)));
        return true;
    }();
    (void)attr;
    const dim3 grid(grid_x(n_head_kv * ceil_div(group * n_tokens, kTileHeads)), unsigned(n_splits));
    launch_overlapped(flash_attn_tile_kernel<DK, DV>, grid, kWarps * WARP_SIZE, smem, stream, q, qs,
                      static_cast<const char*>(k), ks, static_cast<const char*>(v), vs, mask, mask_nb1, out, ws,
                      group, int(n_kv), split_rows, n_splits, scale);
    CUDA_CHECK_LAUNCH();
    if (n_splits > 1) {
        launch_combine<DV>(ws, out, n_head * n_tokens, n_splits, stream);  // row token * n_head + head
    }
}

// The (K, V) head sizes with kernels: equal sizes for MHA/GQA/MQA; MLA's latent rows (kv_lora_rank
// + rope dims for K, kv_lora_rank for V): DeepSeek-V2/V3 576/512, attn-lab's llama-1b MLA-256/512
// variants 288/256 and 544/512, and the test fixtures' 40/32; --mla-expanded's per-head rows
// (qk_nope + rope for K, v_head for V): DeepSeek-V2 192/128, the fixtures' 24/16.
#define MF_FLASH_ATTN_HEAD_SIZES(X) \
    X(16, 16) X(32, 32) X(64, 64) X(128, 128) X(256, 256) X(40, 32) X(288, 256) X(544, 512) X(576, 512) \
    X(24, 16) X(192, 128)
// The same MLA latents quantized, their roped part kept apart in f16 (K row, V, rope sizes): the
// scalar and fused kernels only (the tile and MLA kernels take f16 rows whole). V is K's rows, of K's type.
#define MF_MLA_TAIL_SIZES(X) X(40, 32, 8) X(288, 256, 32) X(544, 512, 32) X(576, 512, 64)

template <typename KT, typename VT>
void launch_hd(int64_t hdk, int64_t hdv, const float* q, const Shape4& qs, const void* k, const Shape4& ks,
               const void* v, const Shape4& vs, const float* mask, int64_t mask_nb1, float* out, float* ws,
               float scale, cudaStream_t s) {
#define MF_CASE(K, V)                                                                                    \
    if (hdk == K && hdv == V) {                                                                          \
        launch_typed<KT, VT, K, V>(q, qs, k, ks, v, vs, mask, mask_nb1, out, ws, scale, s);              \
        return;                                                                                          \
    }
    MF_FLASH_ATTN_HEAD_SIZES(MF_CASE)
#undef MF_CASE
    MF_ASSERT_MSG(false, "flash_attn: unsupported head sizes");
}

template <typename KT>
void launch_v(DType type_v, int64_t hdk, int64_t hdv, const float* q, const Shape4& qs, const void* k, const Shape4& ks,
              const void* v, const Shape4& vs, const float* mask, int64_t mask_nb1, float* out, float* ws,
              float scale, cudaStream_t s) {
    switch (type_v) {
        case DType::F16: launch_hd<KT, KvF16>(hdk, hdv, q, qs, k, ks, v, vs, mask, mask_nb1, out, ws, scale, s); return;
        case DType::Q8_0: launch_hd<KT, KvQ8_0>(hdk, hdv, q, qs, k, ks, v, vs, mask, mask_nb1, out, ws, scale, s); return;
        case DType::Q4_0: launch_hd<KT, KvQ4_0>(hdk, hdv, q, qs, k, ks, v, vs, mask, mask_nb1, out, ws, scale, s); return;
        default: MF_ASSERT_MSG(false, "flash_attn: unsupported V type");
    }
}

// A quantized latent with its rope part apart: K's type is V's.
template <typename KT>
void launch_tail(int64_t hdk, int64_t hdv, const float* q, const Shape4& qs, const void* k, const Shape4& ks,
                 const Shape4& vs, const float* mask, int64_t mask_nb1, float* out, float* ws, float scale,
                 cudaStream_t s, const KTail& tail) {
#define MF_CASE(K, V, R)                                                                                 \
    if (hdk == K && hdv == V && tail.width == R) {                                                       \
        launch_typed<KT, KT, K, V, R>(q, qs, k, ks, k, vs, mask, mask_nb1, out, ws, scale, s, tail);     \
        return;                                                                                          \
    }
    MF_MLA_TAIL_SIZES(MF_CASE)
#undef MF_CASE
    MF_ASSERT_MSG(false, "flash_attn: unsupported sizes for a K row with its rope part apart");
}

constexpr int kFusedThreads = 128;
constexpr int kFusedGroupMax = 8;   // query heads one block serves at most (registers of phase 3)
constexpr size_t kFusedStaticSmem = 512;  // block_max / block_sum's static partials, with room to spare

// ATTN_FUSED. A block serves `heads` query heads of one KV head (a group's chunk: fewer than
// kFusedGroupMax when a long span's scores would not fit), so K and V rows are read once per chunk.
// Shared memory: the scaled queries [heads][HDK], then the scores [heads][n_kv].
// Phase 1: warp w scores positions w, w + 4, ..., lanes splitting the K row as flash_attn_kernel
// does. Phase 2: each head's row becomes probabilities with one block max and one block sum: the
// whole row is at hand, so there is no running maximum to rescale by. Phase 3: thread e sums V
// element e over the span for every head at once; p_sh[g][j] is the same address for the whole warp
// (a broadcast) and consecutive threads read consecutive elements of one V row.
template <typename KT, typename VT, int HDK, int HDV, int HDR = 0>
__global__ void __launch_bounds__(kFusedThreads)
attn_fused_kernel(const float* __restrict__ q, Shape4 qs, const char* __restrict__ k, Shape4 ks,
                  const char* __restrict__ v, Shape4 vs, const float* __restrict__ mask, int64_t mask_nb1,
                  float* __restrict__ out, int group, int heads, int n_kv, float scale, KTail kt) {
    extern __shared__ float fused_sh[];
    float* q_sh = fused_sh;               // [heads][HDK]
    float* p_sh = fused_sh + heads * HDK;  // [heads][n_kv]
    constexpr int EK = (HDK + WARP_SIZE - 1) / WARP_SIZE;
    constexpr int kWarpsF = kFusedThreads / WARP_SIZE;
    const int n_head = int(qs.ne[1]);
    const int chunks = (group + heads - 1) / heads;
    const int hk = blockIdx.x / chunks;
    const int h0 = hk * group + (blockIdx.x % chunks) * heads;  // first query head served
    const int ng = min(heads, hk * group + group - h0);
    const int t = blockIdx.y;
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;

    for (int i = threadIdx.x; i < ng * HDK; i += blockDim.x) {
        const int g = i / HDK, e = i % HDK;
        const char* qrow = reinterpret_cast<const char*>(q) + t * qs.nb[2] + (h0 + g) * qs.nb[1];
        q_sh[g * HDK + e] = reinterpret_cast<const float*>(qrow)[e] * scale;
    }
    __syncthreads();

    const float* mrow = reinterpret_cast<const float*>(reinterpret_cast<const char*>(mask) + t * mask_nb1);
    for (int j = warp; j < n_kv; j += kWarpsF) {
        const float m = mrow[j];  // the same for the whole warp
        if (m == -INFINITY) {
            if (lane < ng) p_sh[lane * n_kv + j] = -INFINITY;  // ng <= kFusedGroupMax < WARP_SIZE
            continue;
        }
        const char* krow = k + j * ks.nb[1] + hk * ks.nb[2];
        const char* trow = HDR ? kt.rows + j * kt.nb1 + hk * kt.nb2 : nullptr;
        float kf[EK];
#pragma unroll
        for (int i = 0; i < EK; ++i) {
            const int e = i * WARP_SIZE + lane;
            kf[i] = e < HDK ? load_k<KT, HDK, HDR>(krow, trow, e) : 0.0f;
        }
        for (int g = 0; g < ng; ++g) {
            float dot = 0.0f;
#pragma unroll
            for (int i = 0; i < EK; ++i) {
                const int e = i * WARP_SIZE + lane;
                if (e < HDK) dot += q_sh[g * HDK + e] * kf[i];
            }
            dot = warp_sum(dot);
            if (lane == 0) p_sh[g * n_kv + j] = dot + m;
        }
    }
    __syncthreads();

    // Each thread rescales only the entries it reads, so the heads need no barrier between them
    // beyond the ones inside block_max / block_sum.
    for (int g = 0; g < ng; ++g) {
        float* p = p_sh + g * n_kv;
        float mx = -INFINITY;
        for (int j = threadIdx.x; j < n_kv; j += blockDim.x) mx = fmaxf(mx, p[j]);
        mx = block_max(mx);
        float sum = 0.0f;
        for (int j = threadIdx.x; j < n_kv; j += blockDim.x) {
            const float e = mx == -INFINITY ? 0.0f : __expf(p[j] - mx);  // -inf scores give 0
            p[j] = e;
            sum += e;
        }
        sum = block_sum(sum);
        const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;  // a query that sees nothing gets zeros
        for (int j = threadIdx.x; j < n_kv; j += blockDim.x) p[j] *= inv;
    }
    __syncthreads();

    for (int e = threadIdx.x; e < HDV; e += blockDim.x) {
        float acc[kFusedGroupMax];
#pragma unroll
        for (int g = 0; g < kFusedGroupMax; ++g) acc[g] = 0.0f;
        for (int j = 0; j < n_kv; ++j) {
            if (mrow[j] == -INFINITY) continue;
            const float x = load_kv(VT{}, v + j * vs.nb[1] + hk * vs.nb[2], e);
#pragma unroll
            for (int g = 0; g < kFusedGroupMax; ++g)
                if (g < ng) acc[g] += p_sh[g * n_kv + j] * x;
        }
#pragma unroll
        for (int g = 0; g < kFusedGroupMax; ++g)
            if (g < ng) out[(int64_t(t) * n_head + h0 + g) * HDV + e] = acc[g];
    }
}

// The most query heads (<= kFusedGroupMax, <= group) whose scores fit in smem_limit; 0 if not even one.
int fused_heads(int64_t group, int64_t hdk, int64_t n_kv, size_t smem_limit) {
    for (int64_t h = std::min<int64_t>(group, kFusedGroupMax); h >= 1; --h)
        if (attn_fused_smem_bytes(h, hdk, n_kv) + kFusedStaticSmem <= smem_limit) return int(h);
    return 0;
}

template <typename KT, typename VT, int HDK, int HDV, int HDR = 0>
void launch_fused_typed(const float* q, const Shape4& qs, const void* k, const Shape4& ks, const void* v,
                        const Shape4& vs, const float* mask, int64_t mask_nb1, float* out, float scale,
                        size_t smem_limit, cudaStream_t stream, KTail kt = {}) {
    const int64_t n_head = qs.ne[1], n_tokens = qs.ne[2], n_kv = ks.ne[1], n_head_kv = ks.ne[2];
    const int group = int(n_head / n_head_kv);
    const int heads = fused_heads(group, HDK, n_kv, smem_limit);
    MF_ASSERT_MSG(heads > 0, "attn_fused: the span's scores do not fit in shared memory (supports_op checks this)");
    MF_ASSERT_MSG(n_tokens <= 65535, "attn_fused: too many tokens in one step");
    const size_t smem = attn_fused_smem_bytes(heads, HDK, n_kv);
    auto kernel = attn_fused_kernel<KT, VT, HDK, HDV, HDR>;
    // Past the default 48 KB a kernel must opt in to more dynamic shared memory (up to ~227 KB).
    if (smem > 48 * 1024) CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    const dim3 grid(grid_x(n_head_kv * ceil_div(group, heads)), unsigned(n_tokens));
    kernel<<<grid, kFusedThreads, smem, stream>>>(q, qs, static_cast<const char*>(k), ks, static_cast<const char*>(v),
                                                   vs, mask, mask_nb1, out, group, heads, int(n_kv), scale, kt);
    CUDA_CHECK_LAUNCH();
}

template <typename KT, typename VT>
void launch_fused_hd(int64_t hdk, int64_t hdv, const float* q, const Shape4& qs, const void* k, const Shape4& ks,
                     const void* v, const Shape4& vs, const float* mask, int64_t mask_nb1, float* out, float scale,
                     size_t smem_limit, cudaStream_t s) {
#define MF_CASE(K, V)                                                                                      \
    if (hdk == K && hdv == V) {                                                                            \
        launch_fused_typed<KT, VT, K, V>(q, qs, k, ks, v, vs, mask, mask_nb1, out, scale, smem_limit, s);  \
        return;                                                                                            \
    }
    MF_FLASH_ATTN_HEAD_SIZES(MF_CASE)
#undef MF_CASE
    MF_ASSERT_MSG(false, "attn_fused: unsupported head sizes");
}

template <typename KT>
void launch_fused_v(DType type_v, int64_t hdk, int64_t hdv, const float* q, const Shape4& qs, const void* k,
                    const Shape4& ks, const void* v, const Shape4& vs, const float* mask, int64_t mask_nb1, float* out,
                    float scale, size_t lim, cudaStream_t s) {
    switch (type_v) {
        case DType::F16: launch_fused_hd<KT, KvF16>(hdk, hdv, q, qs, k, ks, v, vs, mask, mask_nb1, out, scale, lim, s); return;
        case DType::Q8_0: launch_fused_hd<KT, KvQ8_0>(hdk, hdv, q, qs, k, ks, v, vs, mask, mask_nb1, out, scale, lim, s); return;
        case DType::Q4_0: launch_fused_hd<KT, KvQ4_0>(hdk, hdv, q, qs, k, ks, v, vs, mask, mask_nb1, out, scale, lim, s); return;
        default: MF_ASSERT_MSG(false, "attn_fused: unsupported V type");
    }
}

template <typename KT>
void launch_fused_tail(int64_t hdk, int64_t hdv, const float* q, const Shape4& qs, const void* k, const Shape4& ks,
                       const Shape4& vs, const float* mask, int64_t mask_nb1, float* out, float scale, size_t lim,
                       cudaStream_t s, const KTail& tail) {
#define MF_CASE(K, V, R)                                                                                          \
    if (hdk == K && hdv == V && tail.width == R) {                                                                \
        launch_fused_typed<KT, KT, K, V, R>(q, qs, k, ks, k, vs, mask, mask_nb1, out, scale, lim, s, tail);       \
        return;                                                                                                   \
    }
    MF_MLA_TAIL_SIZES(MF_CASE)
#undef MF_CASE
    MF_ASSERT_MSG(false, "attn_fused: unsupported sizes for a K row with its rope part apart");
}

// One thread per element: q8_0 / q4_0 row elements (read as the attention kernels read them) into
// f32 at the destination's strides; linear index i is row-major on both sides, as CPY defines.
template <typename KT>
__global__ void cpy_kv_to_f32_kernel(const char* __restrict__ src, Shape4 ss, float* __restrict__ dst, Shape4 sd,
                                     int64_t n) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float x = load_kv(KT{}, src + ss.row_offset(i / ss.ne[0]), int(i % ss.ne[0]));
    *reinterpret_cast<float*>(reinterpret_cast<char*>(dst) + sd.element_offset(i)) = x;
}

// core/ops.h's hadamard_sign, the same bits on the device (test_gpu_attention compares the two).
__device__ __forceinline__ float hadamard_sign_dev(uint32_t i) { return ((i * 2654435761u) >> 31) ? -1.0f : 1.0f; }

// One block per row: the signs (forward), the fast Walsh-Hadamard transform in shared memory, n/2
// butterflies per stage, log2(n) stages, then the orthonormal 1/sqrt(n) and the signs (inverse).
__global__ void hadamard_kernel(const float* __restrict__ x, float* __restrict__ y, int n, bool inverse) {
    extern __shared__ float buf[];
    const float* xr = x + int64_t(blockIdx.x) * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) buf[i] = inverse ? xr[i] : xr[i] * hadamard_sign_dev(i);
    __syncthreads();
    for (int h = 1; h < n; h *= 2) {
        for (int b = threadIdx.x; b < n / 2; b += blockDim.x) {
            const int j = (b / h) * 2 * h + b % h;
            const float u = buf[j], v = buf[j + h];
            buf[j] = u + v;
            buf[j + h] = u - v;
        }
        __syncthreads();
    }
    const float norm = rsqrtf(float(n));
    float* yr = y + int64_t(blockIdx.x) * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) yr[i] = buf[i] * (inverse ? norm * hadamard_sign_dev(i) : norm);
}

bool kv_type_ok(DType t) { return t == DType::F16 || t == DType::Q8_0 || t == DType::Q4_0; }

}  // namespace

void launch_attn_combine(const float* ws, float* out, int64_t rows, int n_splits, int64_t head_dim_v,
                         cudaStream_t stream) {
    switch (head_dim_v) {
        case 16: return launch_combine<16>(ws, out, rows, n_splits, stream);
        case 32: return launch_combine<32>(ws, out, rows, n_splits, stream);
        case 64: return launch_combine<64>(ws, out, rows, n_splits, stream);
        case 128: return launch_combine<128>(ws, out, rows, n_splits, stream);
        case 256: return launch_combine<256>(ws, out, rows, n_splits, stream);
        case 512: return launch_combine<512>(ws, out, rows, n_splits, stream);
        default: MF_ASSERT_MSG(false, "flash_attn combine: unsupported V head size");
    }
}

bool flash_attn_supported(DType type_k, DType type_v, int64_t head_dim_k, int64_t head_dim_v, int64_t tail) {
    if (!kv_type_ok(type_k) || !kv_type_ok(type_v)) return false;
    bool sizes = false;
    if (tail > 0) {  // a quantized latent, V its rows: whole blocks up to the rope part
#define MF_CASE(K, V, R) sizes = sizes || (head_dim_k == K && head_dim_v == V && tail == R);
        MF_MLA_TAIL_SIZES(MF_CASE)
#undef MF_CASE
        return sizes && type_k != DType::F16 && type_v == type_k && (head_dim_k - tail) % 32 == 0;
    }
#define MF_CASE(K, V) sizes = sizes || (head_dim_k == K && head_dim_v == V);
    MF_FLASH_ATTN_HEAD_SIZES(MF_CASE)
#undef MF_CASE
    if (!sizes) return false;
    // Block types need whole blocks per head.
    return (type_k == DType::F16 || head_dim_k % 32 == 0) && (type_v == DType::F16 || head_dim_v % 32 == 0);
}

void launch_hadamard(const float* x, float* y, int64_t n, int64_t rows, bool inverse, cudaStream_t stream) {
    MF_ASSERT_MSG(n >= 2 && n <= 1024 && (n & (n - 1)) == 0, "hadamard: row length");
    if (rows == 0) return;
    const int threads = int(std::min<int64_t>(std::max<int64_t>(n / 2, 32), 256));
    hadamard_kernel<<<grid_x(rows), threads, size_t(n) * sizeof(float), stream>>>(x, y, int(n), inverse);
    CUDA_CHECK_LAUNCH();
}

size_t attn_fused_smem_bytes(int64_t heads, int64_t head_dim_k, int64_t n_kv) {
    return size_t(heads) * size_t(head_dim_k + n_kv) * sizeof(float);
}

bool attn_fused_supported(DType type_k, DType type_v, int64_t head_dim_k, int64_t head_dim_v, int64_t n_kv,
                          size_t smem_limit, int64_t tail) {
    if (!flash_attn_supported(type_k, type_v, head_dim_k, head_dim_v, tail)) return false;
    return n_kv >= 1 && n_kv <= 0x7fffffff && fused_heads(1, head_dim_k, n_kv, smem_limit) == 1;
}

void launch_attn_fused(DType type_k, DType type_v, const float* q, const Shape4& qs, const void* k, const Shape4& ks,
                       const void* v, const Shape4& vs, const float* mask, int64_t mask_nb1, float* out, float scale,
                       size_t lim, cudaStream_t s, const KTail& tail) {
    const int64_t hdk = ks.ne[0] + tail.width, hdv = vs.ne[0];
    if (tail.width > 0) {
        MF_ASSERT_MSG(type_v == type_k && v == k, "attn_fused: a rope part apart needs V to be K's rows");
        switch (type_k) {
            case DType::Q8_0:
                return launch_fused_tail<KvQ8_0>(hdk, hdv, q, qs, k, ks, vs, mask, mask_nb1, out, scale, lim, s, tail);
            case DType::Q4_0:
                return launch_fused_tail<KvQ4_0>(hdk, hdv, q, qs, k, ks, vs, mask, mask_nb1, out, scale, lim, s, tail);
            default: MF_ASSERT_MSG(false, "attn_fused: a rope part apart needs a quantized K");
        }
    }
    switch (type_k) {
        case DType::F16: launch_fused_v<KvF16>(type_v, hdk, hdv, q, qs, k, ks, v, vs, mask, mask_nb1, out, scale, lim, s); return;
        case DType::Q8_0: launch_fused_v<KvQ8_0>(type_v, hdk, hdv, q, qs, k, ks, v, vs, mask, mask_nb1, out, scale, lim, s); return;
        case DType::Q4_0: launch_fused_v<KvQ4_0>(type_v, hdk, hdv, q, qs, k, ks, v, vs, mask, mask_nb1, out, scale, lim, s); return;
        default: MF_ASSERT_MSG(false, "attn_fused: unsupported K type");
    }
}

void launch_cpy_kv_to_f32(DType type, const void* src, const Shape4& ss, float* dst, const Shape4& sd,
                          cudaStream_t stream) {
    const int64_t n = ss.nelements();
    MF_ASSERT_MSG(n == sd.nelements() && ss.ne[0] % 32 == 0, "cpy_kv_to_f32: shapes");
    if (n == 0) return;
    const char* s = static_cast<const char*>(src);
    const unsigned blocks = grid_x(ceil_div(n, 256));
    switch (type) {
        case DType::Q8_0: cpy_kv_to_f32_kernel<KvQ8_0><<<blocks, 256, 0, stream>>>(s, ss, dst, sd, n); break;
        case DType::Q4_0: cpy_kv_to_f32_kernel<KvQ4_0><<<blocks, 256, 0, stream>>>(s, ss, dst, sd, n); break;
        default: MF_ASSERT_MSG(false, "cpy_kv_to_f32: q8_0 or q4_0 rows only");
    }
    CUDA_CHECK_LAUNCH();
}

size_t flash_attn_workspace_bytes(int64_t n_head, int64_t n_head_kv, int64_t n_tokens, int64_t n_kv, int64_t head_dim_v) {
    // Whichever kernel launch_flash_attn picks: the scalar kernel's splits or the tile kernel's.
    const int n_splits = std::max(choose_splits(n_head, n_head_kv, n_tokens, n_kv, head_dim_v > 256 ? 4 : 8),
                                  choose_tile_splits(n_head, n_head_kv, n_tokens, n_kv));
    if (n_splits == 1) return 0;
    return size_t(n_head * n_tokens * n_splits) * size_t(head_dim_v + 2) * sizeof(float);
}

bool flash_attn_takes_split_q(DType type_k, DType type_v, const Shape4& qs, const void* k, const Shape4& ks,
                              const void* v, const Shape4& vs) {
    return !tile_kernel_fits(type_k, type_v, qs, k, ks, v, vs) && mla_kernel_fits(type_k, type_v, qs, k, ks, v, vs);
}

bool flash_attn_split_q_reads_first(const Shape4& qs, const Shape4& ks) {
    const MlaGrid grid = mla_grid(qs, ks);
    return grid.n_splits > 1 || grid.blocks == 1;
}

void launch_flash_attn(DType type_k, DType type_v, const RowsF32& qr, const Shape4& qs, const void* k,
                       const Shape4& ks, const void* v, const Shape4& vs, const float* mask, int64_t mask_nb1,
                       float* out, float* ws, float scale, cudaStream_t s, const KTail& tail) {
    const int64_t hdk = ks.ne[0] + tail.width, hdv = vs.ne[0];
    if (tail.width > 0) {  // a quantized latent: neither the tile nor the MLA kernel (f16 rows) applies
        MF_ASSERT_MSG(!qr.b && type_v == type_k && v == k, "flash_attn: a rope part apart needs V to be K's rows");
        const float* q = reinterpret_cast<const float*>(qr.a);
        switch (type_k) {
            case DType::Q8_0:
                return launch_tail<KvQ8_0>(hdk, hdv, q, qs, k, ks, vs, mask, mask_nb1, out, ws, scale, s, tail);
            case DType::Q4_0:
                return launch_tail<KvQ4_0>(hdk, hdv, q, qs, k, ks, vs, mask, mask_nb1, out, ws, scale, s, tail);
            default: MF_ASSERT_MSG(false, "flash_attn: a rope part apart needs a quantized K");
        }
    }
    // A q in two parts goes to the MLA kernel only: none of the branches before it takes it. Its second
    // part is never one to rotate (a folded ROPE feeds only the latent row's store).
    MF_ASSERT(!qr.b || (flash_attn_takes_split_q(type_k, type_v, qs, k, ks, v, vs) && !qr.rope.x));
    const float* q = reinterpret_cast<const float*>(qr.a);
    if (tile_kernel_fits(type_k, type_v, qs, k, ks, v, vs)) {
        if (hdk == 64) return launch_tile<64, 64>(q, qs, k, ks, v, vs, mask, mask_nb1, out, ws, scale, s);
        if (hdk == 192) return launch_tile<192, 128>(q, qs, k, ks, v, vs, mask, mask_nb1, out, ws, scale, s);
        return launch_tile<128, 128>(q, qs, k, ks, v, vs, mask, mask_nb1, out, ws, scale, s);
    }
    if (mla_kernel_fits(type_k, type_v, qs, k, ks, v, vs)) return launch_mla(qr, qs, k, ks, mask, out, ws, scale, s);
    switch (type_k) {
        case DType::F16: launch_v<KvF16>(type_v, hdk, hdv, q, qs, k, ks, v, vs, mask, mask_nb1, out, ws, scale, s); return;
        case DType::Q8_0: launch_v<KvQ8_0>(type_v, hdk, hdv, q, qs, k, ks, v, vs, mask, mask_nb1, out, ws, scale, s); return;
        case DType::Q4_0: launch_v<KvQ4_0>(type_v, hdk, hdv, q, qs, k, ks, v, vs, mask, mask_nb1, out, ws, scale, s); return;
        default: MF_ASSERT_MSG(false, "flash_attn: unsupported K type");
    }
}

}  // namespace mf
