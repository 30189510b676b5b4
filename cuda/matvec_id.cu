// MUL_MAT_ID, the expert-indexed matvec: its kernels for float and block weights, and the launchers
// cuda/moe.cuh declares (cuda/moe.cu dispatches to them over weight types).
#include "cuda/moe.cuh"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "cuda/act_quant.cuh"
#include "cuda/matvec.cuh"
#include "cuda/matvec_dot.cuh"
#include "cuda/top_k_rank.cuh"

// ---- MUL_MAT_ID (declared in cuda/moe.cuh) ------------------------------------------------------
// The expert-indexed products share MUL_MAT's activation quantizers (cuda/matvec.cu) and per-type dots
// (cuda/matvec_dot.cuh). Pair p = u + n_used * t of ids [n_used, T] multiplies expert ids[u, t] by
// activation row (n_b == 1 ? 0 : u, t); one warp computes one output row of one pair, so only the chosen
// experts' rows are read. A DeepSeek-V2-Lite decode step has 6 pairs of 1408 (gate, up) or 2048 (down)
// rows: 8448..12288 warps, enough to fill an H200 without splitting rows.
namespace mf {

namespace {

// 0, read from memory nothing writes, so that neither compiler can fold it away: `bits & zero` makes
// what reads the result wait for the loads `bits` came from, at the cost of one AND.
__device__ volatile int g_opaque_zero = 0;
__device__ __forceinline__ int opaque_zero() { return g_opaque_zero; }

// A (slot, token) pair of a MUL_MAT_ID: slot u of token t, pair p = u + n_used * t. The kernels take u
// and t from their grid's y and z (launch_id_slices), so no block divides its index (a 64-bit division
// is a ~100-instruction call, a 32-bit one ~25).
struct IdPair {
    int u, t;
};

// The most tokens (grid z) and slots (grid y) one launch takes: the grid's limit there.
constexpr int64_t kIdMaxTokens = 65535;

// ids[u, t]; an id outside [0, n_expert) gives -1, whose rows come out as zeros (as GET_ROWS: checking
// on the host would cost a sync per graph).
__device__ __forceinline__ int64_t expert_of(const int32_t* ids, const Shape4& si, int64_t n_expert, IdPair pair) {
    const int32_t e = *reinterpret_cast<const int32_t*>(reinterpret_cast<const char*>(ids) + pair.u * si.nb[0] +
                                                        pair.t * si.nb[1]);
    return e >= 0 && e < n_expert ? e : -1;
}

// The activation row of a pair in x's (n, t) row order: x has one row per used slot, or one shared.
__device__ __forceinline__ int64_t act_row_of(const Shape4& sx, IdPair pair) {
    return (sx.ne[1] == 1 ? 0 : pair.u) + sx.ne[1] * int64_t(pair.t);
}

// The lane's share of row m's dot for a pair, float weights (VEC as matvec_float_kernel); 0 for an
// expert id out of range.
template <typename T, bool VEC>
__device__ __forceinline__ float float_id_lane_dot(const char* w, const Shape4& sw, const char* x, const Shape4& sx,
                                                   const int32_t* ids, const Shape4& si, int64_t m, IdPair pair) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int64_t K = sw.ne[0];
    const int64_t e = expert_of(ids, si, sw.ne[2], pair);
    float acc = 0.0f;
    if (e < 0) return acc;
    const T* w_row = reinterpret_cast<const T*>(w + m * sw.nb[1] + e * sw.nb[2]);
    const float* x_row = reinterpret_cast<const float*>(x + sx.row_offset(act_row_of(sx, pair)));
    if (VEC) {
        constexpr int VW = 16 / sizeof(T);
        for (int64_t k = lane * VW; k < K; k += WARP_SIZE * VW) {
            float wv[VW];
            load16(w_row + k, wv);
#pragma unroll
            for (int v = 0; v < VW; v += 4) {
                const float4 xv = *reinterpret_cast<const float4*>(x_row + k + v);
                acc += wv[v] * xv.x + wv[v + 1] * xv.y + wv[v + 2] * xv.z + wv[v + 3] * xv.w;
            }
        }
    } else {
        for (int64_t k = lane; k < K; k += WARP_SIZE) acc += load_f32(w_row + k) * x_row[k];
    }
    return acc;
}

// Block weights: the chunk loops of matvec_q_kernel (32-element blocks, one per lane, a full chunk
// staged through this warp's `stage` when STAGED) and matvec_k_kernel (super-blocks shared by
// K_LANES lanes, Q6_K staged), for one activation row. SPLIT (16, 8 or 4; 0: as stored): the rows are
// split (rows_split, core/quants.h) and SPLIT-byte aligned, so a lane loads its block's quants as
// whole vectors and its scale as one 2-byte load, with no stage.
template <typename Block, bool STAGED, int SPLIT = 0>
struct QIdDot {
    static constexpr int BYTES = BlockTraits<Block>::bytes;
    static constexpr bool SUPER = BlockTraits<Block>::elems == QK_K;
    static constexpr int CHUNK_BLOCKS = SUPER ? K_BLOCKS : WARP_SIZE;  // blocks a warp covers per step
    static constexpr int CHUNK_VECS = CHUNK_BLOCKS * BYTES / 16;
    static constexpr bool STAGE = STAGED && BYTES % 16 != 0;  // Q4_K / Q5_K rows load 16 bytes directly
    static constexpr int STAGE_VECS = STAGE ? CHUNK_VECS : 1;  // a warp's stage
    static_assert(CHUNK_BLOCKS * BYTES % 16 == 0, "a step of blocks must be whole 16-byte vectors");

    __device__ static float lane_dot(const char* w, const Shape4& sw, const Shape4& sx, const int32_t* ids,
                                     const Shape4& si, const ActQ& act, uint4* stage, int64_t m, IdPair pair) {
        const int lane = threadIdx.x % WARP_SIZE;
        const int64_t K = sw.ne[0], n_blk = K / BlockTraits<Block>::elems;
        const int64_t e = expert_of(ids, si, sw.ne[2], pair);
        float acc = 0.0f;
        if (e < 0) return acc;
        const uint8_t* w_row = reinterpret_cast<const uint8_t*>(w + m * sw.nb[1] + e * sw.nb[2]);
        const int64_t a = act_row_of(sx, pair);
        if constexpr (SPLIT != 0) {
            // Lane l takes blocks l, l + 32, ...: its quants, its scale and its activation block each
            // advance by a constant a step. (Two blocks a step, both loaded before either is dotted,
            // compiled to the same schedule: ptxas issues the second's loads after the first's dot.)
            constexpr int QBYTES = BYTES - 2;  // a block's quants; its scale is with the row's scales
            const uint8_t* wq = w_row + lane * QBYTES;
            const uint8_t* wd = w_row + n_blk * QBYTES + 2 * lane;
            int64_t ab = a * n_blk + lane;
            const int zero = opaque_zero();
            for (int blk = lane; blk < int(n_blk); blk += WARP_SIZE) {
                const SplitBlock<SPLIT, Block> w(wq, wd);
                const ActBlocks<Block, 1> x(act, ab, w.tie_bits(), zero);
                acc += block_dot<Block>(w.unpack(), x.q, x.d[0], x.s[0], x.o[0]);
                wq += WARP_SIZE * QBYTES, wd += WARP_SIZE * 2, ab += WARP_SIZE;
            }
            return acc;
        }
        const int sub = SUPER ? lane / K_LANES : lane, part = lane % K_LANES;
        for (int64_t b0 = 0; b0 < n_blk; b0 += CHUNK_BLOCKS) {
            const int64_t blk = b0 + sub;
            if constexpr (SUPER) {
                const uint8_t* q = w_row + blk * BYTES;
                if (STAGE && b0 + CHUNK_BLOCKS <= n_blk)
                    q = stage_chunk<CHUNK_VECS>(stage, w_row + b0 * BYTES, lane) + sub * BYTES;
                if (blk < n_blk) {
                    const KPart kp = load_k_part<STAGED && !STAGE>(Block{}, q, part);
                    acc += dot_k_part(Block{}, kp, act, a, K, blk, part);
                }
            } else {
                // The activation block's loads go out before the weights' (which the stage's barrier
                // would otherwise hold them behind): the two round trips overlap (s13f: +1.4%).
                const ActBlocks<Block, 1> x(act, a * n_blk + (blk < n_blk ? blk : 0));
                if (STAGE && b0 + CHUNK_BLOCKS <= n_blk) {  // a whole chunk: blk < n_blk
                    // Apart from the global path, so its loads are shared-memory loads, not generic ones.
                    const uint8_t* q = stage_chunk<CHUNK_VECS>(stage, w_row + b0 * BYTES, lane) + sub * BYTES;
                    acc += block_dot<Block>(load_block(Block{}, q), x.q, x.d[0], x.s[0], x.o[0]);
                } else if (blk < n_blk) {
                    acc += block_dot<Block>(load_block(Block{}, w_row + blk * BYTES), x.q, x.d[0], x.s[0], x.o[0]);
                }
            }
            if constexpr (STAGE) __syncwarp();  // the next step overwrites this warp's stage
        }
        return acc;
    }

    // Split rows (SPLIT != 0): the lane's shares of rows m0 .. m0 + R - 1 of one expert for one pair
    // (0 for rows past M). A step loads the R rows' blocks together and dots them with one activation
    // block, so R rows wait for the round trips of one. S steps at once (1 or 2: blocks blk and
    // blk + 32 of each row) wait for one round trip together: with S = 2 a decode row of up to 64
    // blocks (V2-Lite's gate_up 64, down 44) is one round trip, for twice the registers. Each row's
    // blocks go to the lanes, and are summed, in lane_dot's order and with its FFMA (the select comes
    // after the sum): lane_dot's bits.
    // expert(): the pair's expert (expert_of, or routed_expert), -1 for none.
    template <int R, int S, typename Expert>
    __device__ static void split_rows_dot(const char* w, const Shape4& sw, const Shape4& sx, Expert expert,
                                          const ActQ& act, int64_t m0, IdPair pair, float (&acc)[R]) {
        static_assert(SPLIT != 0, "split rows only");
        constexpr int QBYTES = BYTES - 2;
        const int lane = threadIdx.x % WARP_SIZE;
        const int64_t M = sw.ne[1], n_blk = sw.ne[0] / QK;
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r] = 0.0f;
        const int64_t e = expert();
        if (e < 0) return;
        const int rows = int(M - m0 < R ? M - m0 : R);
        const uint8_t* w0 = reinterpret_cast<const uint8_t*>(w + m0 * sw.nb[1] + e * sw.nb[2]);
        int64_t ab = act_row_of(sx, pair) * n_blk + lane;
        const int zero = opaque_zero();
        static_assert(S == 1 || S == 2, "one or two steps at once");
        for (int blk = lane; blk < int(n_blk); blk += S * WARP_SIZE, ab += S * WARP_SIZE) {
            // Step 1 (S = 2) takes block blk + 32; a lane without it loads block blk again and does not
            // add it.
            const bool two = S == 2 && blk + WARP_SIZE < int(n_blk);
            SplitBlock<SPLIT, Block> wb[S][R];
            int tie = 0;
#pragma unroll
            for (int s = 0; s < S; ++s) {
                const int b = s == 1 && two ? blk + WARP_SIZE : blk;
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    const uint8_t* row = w0 + (r < rows ? r : 0) * sw.nb[1];  // a row past M loads row 0 again
                    wb[s][r].load(row + b * QBYTES, row + n_blk * QBYTES + 2 * b);
                    tie |= wb[s][r].tie_bits();
                }
            }
            // Step 0's offset sum carries the tie, step 1's activation loads included.
            const ActBlocks<Block, 1> x1(act, two ? ab + WARP_SIZE : ab);  // read only when S = 2
            const ActBlocks<Block, 1> x0(act, ab, S == 2 ? tie | x1.q[0] | __float_as_int(x1.d[0]) : tie, zero);
            // Every row's dot, kept or not: a dot under a branch would take its loads into the branch,
            // after the ones before it had come back.
#pragma unroll
            for (int s = 0; s < S; ++s) {
                const ActBlocks<Block, 1>& x = s == 0 ? x0 : x1;
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    const float dot = block_dot<Block>(wb[s][r].unpack(), x.q, x.d[0], x.s[0], x.o[0]);
                    acc[r] = r < rows && (s == 0 || two) ? acc[r] + dot : acc[r];
                }
            }
        }
    }
};

// rows_dot(m0, pair, acc) for weighted_id_rows from lane_dot(m, pair), one row at a time: the lane's
// shares of rows m0 .. m0 + R - 1's dots (0 past M).
template <typename LaneDot>
struct LaneRows {
    LaneDot lane_dot;
    int64_t M;
    template <int R>
    __device__ __forceinline__ void operator()(int64_t m0, IdPair pair, float (&acc)[R]) const {
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r] = m0 + r < M ? lane_dot(m0 + r, pair) : 0.0f;
    }
};
template <typename LaneDot>
__device__ __forceinline__ LaneRows<LaneDot> lane_rows(LaneDot lane_dot, int64_t M) {
    return {lane_dot, M};
}

// A weighted MUL_MAT_ID's CUDA block (blockDim.x = min(n_used, ID_MAX_WARPS) warps; grid ceil(M /
// ID_SUM_ROWS) x 1 x the tokens from t0, launch_id_slices): warp u takes slots u, u + warps, ... of
// token t for ID_SUM_ROWS rows, so with up to ID_MAX_WARPS slots the grid keeps one warp a (row, pair)
// as the plain form has; the slots' weighted dots meet in shared memory and are summed in slot order;
// with add (f32 [M, T], contiguous), dst = sum + add, what an ADD of the two would write.
// rows_dot(m0, pair, acc): the lane's shares of rows m0 .. m0 + ID_SUM_ROWS - 1's dots for that pair
// (LaneRows, or QIdDot::split_rows_dot). EARLY (SOFTMAX gating of at most 64 experts): the token's
// logits are loaded before the dots, with their loads, instead of after them (SlotWeights::prefetch).
constexpr int ID_SUM_ROWS = 2;
constexpr int ID_MAX_WARPS = 16;
template <bool EARLY = false, typename RowsDot>
__device__ __forceinline__ void weighted_id_rows(const SlotWeights& slot_w, const int32_t* ids, const Shape4& si,
                                                 const Shape4& sw, float* dst, const float* add, int t0,
                                                 RowsDot rows_dot) {
    const int64_t M = sw.ne[1];
    __shared__ float part[ID_SUM_ROWS][MUL_MAT_ID_MAX_SLOTS];
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE, n_warps = blockDim.x / WARP_SIZE;
    const int t = t0 + int(blockIdx.z);  // grid: launch_id_slices, y = 1
    const int64_t m0 = int64_t(blockIdx.x) * ID_SUM_ROWS;
    SlotWeights::Logits logits{};
    if constexpr (EARLY) logits = slot_w.prefetch(t);
    for (int u = warp; u < si.ne[0]; u += n_warps) {
        const IdPair pair{u, t};
        float acc[ID_SUM_ROWS];
        rows_dot(m0, pair, acc);
#pragma unroll
        for (int r = 0; r < ID_SUM_ROWS; ++r) acc[r] = warp_sum(acc[r]);
        const int64_t e = expert_of(ids, si, sw.ne[2], pair);
        const float weight = EARLY ? slot_w.of(e, logits) : slot_w.of(u, t, e);  // after the dots: off their path
        if (lane == 0) {
#pragma unroll
            for (int r = 0; r < ID_SUM_ROWS; ++r) part[r][u] = weight * acc[r];
        }
    }
    __syncthreads();
    if (threadIdx.x < ID_SUM_ROWS && m0 + threadIdx.x < M) {
        float sum = 0.0f;
        for (int v = 0; v < si.ne[0]; ++v) sum += part[threadIdx.x][v];
        const int64_t i = t * M + m0 + threadIdx.x;
        dst[i] = add ? sum + add[i] : sum;
    }
}

// Threads of a weighted MUL_MAT_ID block: a warp a slot, at most ID_MAX_WARPS.
unsigned id_weighted_threads(const Shape4& si) {
    return unsigned(si.ne[0] < ID_MAX_WARPS ? si.ne[0] : ID_MAX_WARPS) * WARP_SIZE;
}

// Grid ceil(M / MATVEC_WARPS) x n_used x the tokens from t0 (launch_id_slices): one warp a (row, pair).
__device__ __forceinline__ IdPair id_pair(int t0) { return {int(blockIdx.y), t0 + int(blockIdx.z)}; }

template <typename T, bool VEC>
__global__ void __launch_bounds__(MATVEC_WARPS* WARP_SIZE)
    matvec_float_id_kernel(const char* w, Shape4 sw, const char* x, Shape4 sx, const int32_t* ids, Shape4 si,
                           float* dst, int t0) {
    begin_overlapped_kernel();
    const int64_t M = sw.ne[1];
    const int64_t m = int64_t(blockIdx.x) * MATVEC_WARPS + threadIdx.x / WARP_SIZE;
    const IdPair pair = id_pair(t0);
    if (m >= M) return;  // warp-uniform
    const float acc = warp_sum(float_id_lane_dot<T, VEC>(w, sw, x, sx, ids, si, m, pair));
    if (threadIdx.x % WARP_SIZE == 0) dst[(pair.u + si.ne[0] * pair.t) * M + m] = acc;
}

template <typename T, bool VEC>
__global__ void __launch_bounds__(ID_MAX_WARPS* WARP_SIZE)
    matvec_float_id_weighted_kernel(const char* w, Shape4 sw, const char* x, Shape4 sx, const int32_t* ids, Shape4 si,
                                    SlotWeights slot_w, float* dst, const float* add, int t0) {
    begin_overlapped_kernel();
    const auto lane_dot = [&](int64_t m, IdPair pair) {
        return float_id_lane_dot<T, VEC>(w, sw, x, sx, ids, si, m, pair);
    };
    weighted_id_rows(slot_w, ids, si, sw, dst, add, t0, lane_rows(lane_dot, sw.ne[1]));
}

// STEPS (split rows; 0: a row at a time): each warp takes ID_ROWS rows at once, STEPS steps a round
// trip (QIdDot::split_rows_dot); the grid's x is then ceil(M / (MATVEC_WARPS * ID_ROWS))
// (QIdKernels::plain_rows). Two steps are capped at 80 registers (6 blocks an SM; uncapped they took
// 84-88, 5 blocks); a minimum of 0 blocks is no minimum, the SASS of no second argument.
constexpr int ID_ROWS = 2;

// The split-row plain kernels' warp: rows m0 .. m0 + ID_ROWS - 1 of expert expert() for one pair, stored
// to out (the pair's [M] outputs).
template <typename Dot, int STEPS, typename Expert>
__device__ __forceinline__ void store_split_rows(const char* w, const Shape4& sw, const Shape4& sx, Expert expert,
                                                 const ActQ& act, int64_t m0, IdPair pair, float* out) {
    const int64_t M = sw.ne[1];
    float acc[ID_ROWS];
    Dot::template split_rows_dot<ID_ROWS, STEPS>(w, sw, sx, expert, act, m0, pair, acc);
#pragma unroll
    for (int r = 0; r < ID_ROWS; ++r) {
        const float v = warp_sum(acc[r]);
        if (threadIdx.x % WARP_SIZE == 0 && m0 + r < M) out[m0 + r] = v;
    }
}

template <typename Block, bool STAGED, int SPLIT, int STEPS>
__global__ void __launch_bounds__(MATVEC_WARPS* WARP_SIZE, STEPS == 2 ? 6 : 0)
    matvec_q_id_kernel(const char* w, Shape4 sw, Shape4 sx, const int32_t* ids, Shape4 si, ActQ act, float* dst,
                       int t0) {
    begin_overlapped_kernel();
    using Dot = QIdDot<Block, STAGED, SPLIT>;
    __shared__ uint4 stage[MATVEC_WARPS][Dot::STAGE_VECS];
    const int warp = threadIdx.x / WARP_SIZE;
    const int64_t M = sw.ne[1];
    const IdPair pair = id_pair(t0);
    float* out = dst + (pair.u + si.ne[0] * pair.t) * M;
    if constexpr (SPLIT != 0 && STEPS > 0) {
        const int64_t m0 = (int64_t(blockIdx.x) * MATVEC_WARPS + warp) * ID_ROWS;
        if (m0 >= M) return;  // warp-uniform
        const auto expert = [&] { return expert_of(ids, si, sw.ne[2], pair); };
        store_split_rows<Dot, STEPS>(w, sw, sx, expert, act, m0, pair, out);
    } else {
        const int64_t m = int64_t(blockIdx.x) * MATVEC_WARPS + warp;
        if (m >= M) return;  // warp-uniform
        const float acc = warp_sum(Dot::lane_dot(w, sw, sx, ids, si, act, stage[warp], m, pair));
        if (threadIdx.x % WARP_SIZE == 0) out[m] = acc;
    }
}

// STEPS (split rows; 0: a row at a time): a warp's ID_SUM_ROWS rows at once, STEPS steps a round trip
// (QIdDot::split_rows_dot). Two steps are capped at 64 registers (5 blocks of 6 warps an SM, as one
// step; uncapped they took 104-116). EARLY: weighted_id_rows' (split rows at once only).
template <typename Block, bool STAGED, int SPLIT, int STEPS, bool EARLY = false>
__global__ void __launch_bounds__(ID_MAX_WARPS* WARP_SIZE, STEPS == 2 ? 2 : 0)
    matvec_q_id_weighted_kernel(const char* w, Shape4 sw, Shape4 sx, const int32_t* ids, Shape4 si, ActQ act,
                                SlotWeights slot_w, float* dst, const float* add, int t0) {
    begin_overlapped_kernel();
    using Dot = QIdDot<Block, STAGED, SPLIT>;
    __shared__ uint4 stage[ID_MAX_WARPS][Dot::STAGE_VECS];
    uint4* my_stage = stage[threadIdx.x / WARP_SIZE];
    static_assert(!EARLY || (SPLIT != 0 && STEPS > 0), "logits loaded early: split rows at once only");
    if constexpr (SPLIT != 0 && STEPS > 0) {
        weighted_id_rows<EARLY>(slot_w, ids, si, sw, dst, add, t0,
                         [&](int64_t m0, IdPair pair, float (&acc)[ID_SUM_ROWS]) {
                             const auto expert = [&] { return expert_of(ids, si, sw.ne[2], pair); };
                             Dot::template split_rows_dot<ID_SUM_ROWS, STEPS>(w, sw, sx, expert, act, m0, pair, acc);
                         });
    } else {
        const auto lane_dot = [&](int64_t m, IdPair pair) {
            return Dot::lane_dot(w, sw, sx, ids, si, act, my_stage, m, pair);
        };
        weighted_id_rows(slot_w, ids, si, sw, dst, add, t0, lane_rows(lane_dot, sw.ne[1]));
    }
}

// The expert TOP_K(route's logits row t, k) puts at slot pair.u: u + 1 rounds, each taking the warp's
// first-ranked value left (the largest rank_key by one redux.sync, then the lowest index holding it),
// so the order is top_k_rank_kernel's and the CPU's, NaN and ties included. ~26 SASS instructions a
// round: ranking all 64 values at once (top_k_rank_kernel) would cost each warp ~900. The whole warp
// calls it. write: lane 0 stores it to ids[u, t] (si's strides), where TOP_K would.
__device__ __forceinline__ int64_t routed_expert(const IdRoute& route, int32_t* ids, const Shape4& si, IdPair pair,
                                                 bool write) {
    const int lane = threadIdx.x % WARP_SIZE, n = int(route.sl.ne[0]);
    const char* row = route.logits + pair.t * route.sl.nb[1];  // logits [n_expert, T] (mul_mat_id_routes)
    uint32_t key[TOPK_RANK_VALUES];
    bool left[TOPK_RANK_VALUES];  // value lane + 32 j exists and is not taken yet
#pragma unroll
    for (int j = 0; j < TOPK_RANK_VALUES; ++j) {
        const int i = lane + j * WARP_SIZE;
        left[j] = i < n;
        key[j] = left[j] ? rank_key(*reinterpret_cast<const float*>(row + int64_t(i) * route.sl.nb[0])) : 0u;
    }
    int e = 0;
    for (int r = 0; r <= pair.u; ++r) {  // pair.u < k <= n: a value is left every round
        uint32_t mine = 0;
#pragma unroll
        for (int j = 0; j < TOPK_RANK_VALUES; ++j) mine = left[j] && key[j] > mine ? key[j] : mine;
        const uint32_t top = __reduce_max_sync(0xffffffffu, mine);
        e = -1;
#pragma unroll
        for (int j = 0; j < TOPK_RANK_VALUES && e < 0; ++j) {  // the lowest index first
            const unsigned holders = __ballot_sync(0xffffffffu, left[j] && key[j] == top);
            if (holders) e = j * WARP_SIZE + __ffs(holders) - 1;
        }
#pragma unroll
        for (int j = 0; j < TOPK_RANK_VALUES; ++j)
            if (lane + j * WARP_SIZE == e) left[j] = false;
    }
    if (write && lane == 0)
        *reinterpret_cast<int32_t*>(reinterpret_cast<char*>(ids) + pair.u * si.nb[0] + pair.t * si.nb[1]) = e;
    return e;
}

// MUL_MAT_ID with the TOP_K before it folded in (IdRoute): matvec_q_id_kernel's split rows, each warp
// taking its pair's expert from the router's logits (routed_expert) instead of from ids; block 0's
// first warp of each pair writes it to ids for the later readers (the down projection). Routing costs a
// warp the logits' load (where it loaded its id) and u + 1 rounds of ~26 instructions; the TOP_K
// launch it replaces was a kernel boundary on the chain.
template <typename Block, int SPLIT, int STEPS>
__global__ void __launch_bounds__(MATVEC_WARPS* WARP_SIZE, STEPS == 2 ? 6 : 0)
    matvec_q_id_routed_kernel(const char* w, Shape4 sw, Shape4 sx, IdRoute route, int32_t* ids, Shape4 si, ActQ act,
                              float* dst, int t0) {
    static_assert(SPLIT != 0 && STEPS > 0, "split rows, a warp's rows at once");
    begin_overlapped_kernel();
    const int warp = threadIdx.x / WARP_SIZE;
    const int64_t M = sw.ne[1];
    const IdPair pair = id_pair(t0);
    const int64_t m0 = (int64_t(blockIdx.x) * MATVEC_WARPS + warp) * ID_ROWS;
    if (m0 >= M) return;  // warp-uniform; block 0's warp 0 always stays
    const auto expert = [&] { return routed_expert(route, ids, si, pair, blockIdx.x == 0 && warp == 0); };
    store_split_rows<QIdDot<Block, false, SPLIT>, STEPS>(w, sw, sx, expert, act, m0, pair,
                                                         dst + (pair.u + si.ne[0] * pair.t) * M);
}

// ---- the routed experts of a decode token in one launch (MINFER_CUDA_MOE_BLOCK=1) ----------------
//
// TOP_K, the stacked gate_up MUL_MAT_ID, SWIGLU's quantization and the weighted down MUL_MAT_ID (with
// the ADD after it) are otherwise four launches, each waiting for the one before. Here they are the
// phases of one persistent launch (one CUDA block an SM, every block resident: a cooperative launch)
// that meet once, at a grid barrier between the gate_up and the down:
//  0. warps 0 .. n_used - 1 of every block rank the router's logits for their slot (routed_expert);
//     block 0 writes ids, where TOP_K would. Each block asks L2 for the down rows it will read.
//  1. unit (slot u, outputs 32 j .. 32 j + 31): warps 0-15 dot gate rows 32 j + 2w, + 1, warps 16-31
//     the same up rows (split_rows_dot, as matvec_q_id_kernel's warps: the same bits); warp 0 then
//     quantizes silu(gate) * up as the SWIGLU quantizer's block u * n_ff / 32 + j (its bits).
//  2. after the barrier, item (row pair m0, slot u): the down's split_rows_dot and the slot's weight
//     (SlotWeights::of) as weighted_id_rows takes them; a row's slots are summed in slot order, plus
//     add: weighted_id_rows' bits.
// The gate_up's own result is never written (the backend folds it only when SWIGLU is its one reader).
constexpr int MOE_BLOCK_WARPS = 32;
constexpr int MOE_BLOCK_PAIRS = 8;  // row pairs a block sums per pass of phase 2
// How long a barrier waits before it traps (a grid not all resident would otherwise hang the device).
constexpr unsigned long long kMoeBarrierTimeoutNs = 2000000000ull;

__device__ __forceinline__ unsigned long long global_ns() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

// Every block of the grid meets here once a launch. bar[0] counts arrivals, bar[1] is a generation the
// last arrival bumps after setting bar[0] back to 0, so the pair is ready for the next launch with no
// reset between launches. Each block's writes before it are visible to every block after it: the
// block's threads meet its first thread at __syncthreads, whose arrival releases (acq_rel, cumulative)
// and whose wait acquires what every other block's arrival released.
__device__ __forceinline__ void moe_grid_barrier(unsigned* bar) {
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned gen, arrived;
        asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(gen) : "l"(bar + 1) : "memory");
        asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;" : "=r"(arrived) : "l"(bar) : "memory");
        if (arrived == gridDim.x - 1) {
            asm volatile("st.relaxed.gpu.global.u32 [%0], 0;" ::"l"(bar) : "memory");
            asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(bar + 1), "r"(gen + 1) : "memory");
        } else {
            const unsigned long long t0 = global_ns();
            unsigned now;
            do {
                asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(now) : "l"(bar + 1) : "memory");
                if (now == gen && global_ns() - t0 > kMoeBarrierTimeoutNs) __trap();
            } while (now == gen);
        }
    }
    __syncthreads();
}

template <typename Block, int SPLIT_GU, int SPLIT_D>
__global__ void __launch_bounds__(MOE_BLOCK_WARPS* WARP_SIZE, 1) moe_block_kernel(MoeBlockArgs a) {
    wait_for_previous_kernel();  // (a no-op: a cooperative launch is not overlapped)
    constexpr bool SUM = BlockTraits<Block>::act == ActQuant::Q8_1;
    using GuDot = QIdDot<Block, false, SPLIT_GU>;
    using DownDot = QIdDot<Block, false, SPLIT_D>;
    __shared__ int experts[MOE_BLOCK_WARPS];
    __shared__ float gu[2][QK];
    __shared__ float part[MOE_BLOCK_PAIRS][ID_SUM_ROWS][MUL_MAT_ID_MAX_SLOTS];
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const int n_used = int(a.si.ne[0]);
    const int64_t n_ff = a.sh.ne[0], M = a.s_d.ne[1];
    const int n_pairs = int((M + ID_SUM_ROWS - 1) / ID_SUM_ROWS);  // moe_block_fits: 32-bit counts
    const int mine = (n_pairs - int(blockIdx.x) + int(gridDim.x) - 1) / int(gridDim.x);  // this block's pairs

    // Phase 0: the experts, and L2 requests for this block's down rows (rows of a pair are adjacent).
    if (warp < n_used) {
        const int64_t e = routed_expert(a.route, a.ids, a.si, IdPair{warp, 0}, blockIdx.x == 0);
        if (lane == 0) experts[warp] = int(e);
    }
    __syncthreads();
    {
        const int lines = int((ID_SUM_ROWS * a.s_d.nb[1] + 127) / 128);  // 128-byte lines of a pair's rows
        for (int i = threadIdx.x; i < mine * n_used * lines; i += blockDim.x) {
            const int item = i / lines, line = i % lines;
            const int64_t pair = blockIdx.x + int64_t(item / n_used) * gridDim.x;
            const int u = item % n_used;
            const int64_t rows = M - pair * ID_SUM_ROWS < ID_SUM_ROWS ? M - pair * ID_SUM_ROWS : ID_SUM_ROWS;
            if (int64_t(line) * 128 >= rows * a.s_d.nb[1]) continue;
            const char* p = a.w_d + pair * ID_SUM_ROWS * a.s_d.nb[1] + experts[u] * a.s_d.nb[2] + int64_t(line) * 128;
            asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
        }
    }

    // Phase 1: the gate_up and SWIGLU's quantization, a unit (slot, 32 outputs) at a time.
    const int units_per_slot = int(n_ff / QK);
    for (int unit = blockIdx.x; unit < n_used * units_per_slot; unit += gridDim.x) {
        const int u = unit / units_per_slot;
        const int64_t j = unit % units_per_slot;
        const int half = warp / (QK / ID_ROWS), pw = warp % (QK / ID_ROWS);  // gate (0) or up (1); row pair
        const int64_t m0 = half * n_ff + j * QK + ID_ROWS * pw;
        const auto expert = [&] { return int64_t(experts[u]); };
        float acc[ID_ROWS];
        GuDot::template split_rows_dot<ID_ROWS, 1>(a.w_gu, a.s_gu, a.sx, expert, a.x_act, m0, IdPair{u, 0}, acc);
#pragma unroll
        for (int r = 0; r < ID_ROWS; ++r) {
            const float v = warp_sum(acc[r]);
            if (lane == 0) gu[half][ID_ROWS * pw + r] = v;
        }
        __syncthreads();
        if (warp == 0) {
            const int e0 = 4 * (lane % 8);
            float v[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) v[i] = silu_f32(gu[0][e0 + i]) * gu[1][e0 + i];
            quantize_block_8_lanes<SUM>(v, a.h_act, uint32_t(u * units_per_slot + j), lane < 8);
        }
        __syncthreads();  // gu is refilled by the next unit
    }

    moe_grid_barrier(a.barrier);
    allow_next_kernel();  // every block has started: the next launch may take the SMs' room

    // Phase 2: the down projection, MOE_BLOCK_PAIRS of this block's row pairs a pass.
    for (int p0 = 0; p0 < mine; p0 += MOE_BLOCK_PAIRS) {
        const int n_here = int(mine - p0 < MOE_BLOCK_PAIRS ? mine - p0 : MOE_BLOCK_PAIRS);
        for (int item = warp; item < n_here * n_used; item += MOE_BLOCK_WARPS) {
            const int lp = item / n_used, u = item % n_used;
            const int64_t m0 = (blockIdx.x + int64_t(p0 + lp) * gridDim.x) * ID_SUM_ROWS;
            const auto expert = [&] { return int64_t(experts[u]); };
            float acc[ID_SUM_ROWS];
            DownDot::template split_rows_dot<ID_SUM_ROWS, 1>(a.w_d, a.s_d, a.sh, expert, a.h_act, m0, IdPair{u, 0},
                                                             acc);
#pragma unroll
            for (int r = 0; r < ID_SUM_ROWS; ++r) acc[r] = warp_sum(acc[r]);
            const float weight = a.slot_w.of(u, 0, experts[u]);
            if (lane == 0) {
#pragma unroll
                for (int r = 0; r < ID_SUM_ROWS; ++r) part[lp][r][u] = weight * acc[r];
            }
        }
        __syncthreads();
        if (threadIdx.x < n_here * ID_SUM_ROWS) {
            const int lp = threadIdx.x / ID_SUM_ROWS, r = threadIdx.x % ID_SUM_ROWS;
            const int64_t m = (blockIdx.x + int64_t(p0 + lp) * gridDim.x) * ID_SUM_ROWS + r;
            if (m < M) {
                float sum = 0.0f;
                for (int v = 0; v < n_used; ++v) sum += part[lp][r][v];
                a.dst[m] = a.add ? sum + a.add[m] : sum;
            }
        }
        __syncthreads();  // part is refilled by the next pass
    }
}

// Launches kernel over token slices of at most kIdMaxTokens, its grid (x, y, the slice's tokens), the
// slice's first token as its last argument.
template <typename Kernel, typename... Args>
void launch_id_slices(Kernel kernel, int64_t x, int64_t y, int64_t n_tokens, unsigned threads, cudaStream_t stream,
                      Args... args) {
    MF_ASSERT_MSG(y <= kIdMaxTokens, "MUL_MAT_ID: more slots than a grid's y");
    for (int64_t t0 = 0; t0 < n_tokens; t0 += kIdMaxTokens) {
        const dim3 grid(grid_x(x), unsigned(y), unsigned(std::min(kIdMaxTokens, n_tokens - t0)));
        launch_overlapped(kernel, grid, threads, 0, stream, args..., int(t0));
    }
}

void check_id_shapes(const Shape4& sw, const Shape4& sx, const Shape4& si) {
    MF_ASSERT(sw.ne[0] == sx.ne[0] && sx.nb[0] == sizeof(float) && sw.ne[3] == 1 && sx.ne[3] == 1);
    MF_ASSERT((sx.ne[1] == 1 || sx.ne[1] == si.ne[0]) && sx.ne[2] == si.ne[1] && si.ne[2] == 1 && si.ne[3] == 1);
}

}  // namespace

template <typename T>
void launch_matvec_float_id(const void* w, const Shape4& sw, const float* x, const Shape4& sx, const int32_t* ids,
                            const Shape4& si, SlotWeights weights, float* dst, const float* add, cudaStream_t stream) {
    check_id_shapes(sw, sx, si);
    MF_ASSERT(!add || weights.data);
    MF_ASSERT(sw.nb[0] == sizeof(T));
    const int64_t M = sw.ne[1], n_pairs = si.ne[0] * si.ne[1];
    if (M == 0 || n_pairs == 0) return;
    const bool vec = sw.ne[0] % (16 / sizeof(T)) == 0 && aligned16(w, sw) && aligned16(x, sx);
    const char* wc = static_cast<const char*>(w);
    const char* xc = reinterpret_cast<const char*>(x);
    if (weights.data) {
        MF_ASSERT(si.ne[0] <= MUL_MAT_ID_MAX_SLOTS);
        auto kernel = vec ? matvec_float_id_weighted_kernel<T, true> : matvec_float_id_weighted_kernel<T, false>;
        launch_id_slices(kernel, ceil_div(M, ID_SUM_ROWS), 1, si.ne[1], id_weighted_threads(si), stream, wc, sw, xc,
                         sx, ids, si, weights, dst, add);
    } else {
        auto kernel = vec ? matvec_float_id_kernel<T, true> : matvec_float_id_kernel<T, false>;
        launch_id_slices(kernel, ceil_div(M, MATVEC_WARPS), si.ne[0], si.ne[1], MATVEC_WARPS * WARP_SIZE, stream, wc,
                         sw, xc, sx, ids, si, dst);
    }
    CUDA_CHECK_LAUNCH();
}

// The two MUL_MAT_ID kernels for one way of reading Block weights: as stored, through a shared-memory
// stage (STAGED) or directly; or split rows loaded in SPLIT-byte vectors, each kernel a row at a time
// (STEPS 0) or a warp's rows at once, one or two steps a round trip.
using RoutedKernel = void (*)(const char*, Shape4, Shape4, IdRoute, int32_t*, Shape4, ActQ, float*, int);
template <typename Block, bool STAGED, int SPLIT, int STEPS>
constexpr RoutedKernel routed_kernel() {
    if constexpr (SPLIT != 0 && !STAGED && STEPS > 0) return matvec_q_id_routed_kernel<Block, SPLIT, STEPS>;
    return nullptr;
}

using WeightedKernel = void (*)(const char*, Shape4, Shape4, const int32_t*, Shape4, ActQ, SlotWeights, float*,
                                const float*, int);
template <typename Block, bool STAGED, int SPLIT, int STEPS>
constexpr WeightedKernel weighted_early_kernel() {
    if constexpr (SPLIT != 0 && !STAGED && STEPS > 0)
        return matvec_q_id_weighted_kernel<Block, false, SPLIT, STEPS, true>;
    return nullptr;
}

template <typename Block, bool STAGED, int SPLIT, int PLAIN_STEPS = 0, int WEIGHTED_STEPS = PLAIN_STEPS>
struct QIdKernels {
    static constexpr auto plain = matvec_q_id_kernel<Block, STAGED, SPLIT, PLAIN_STEPS>;
    static constexpr auto weighted = matvec_q_id_weighted_kernel<Block, STAGED, SPLIT, WEIGHTED_STEPS>;
    // The weighted kernel with the logits loaded early (SOFTMAX gating): split rows at once only.
    static constexpr bool has_early = SPLIT != 0 && !STAGED && WEIGHTED_STEPS > 0;
    static constexpr WeightedKernel weighted_early = weighted_early_kernel<Block, STAGED, SPLIT, WEIGHTED_STEPS>();
    // The plain kernel with its TOP_K folded in: split rows a warp's rows at once only (null otherwise).
    static constexpr bool routes = SPLIT != 0 && !STAGED && PLAIN_STEPS > 0;
    static constexpr RoutedKernel routed = routed_kernel<Block, STAGED, SPLIT, PLAIN_STEPS>();
    static constexpr int plain_rows = MATVEC_WARPS * (PLAIN_STEPS > 0 ? ID_ROWS : 1);  // rows a plain block takes
};

namespace {

// Which split-row MUL_MAT_ID kernels take two steps a round trip: MINFER_CUDA_ID_STEPS=plain, weighted
// or both (bit 0: the plain kernel, bit 1: the weighted one); unset, one step. Opt-in: s16b measured
// both at +0.5% on V2-Lite q4_0 (within a round's noise, though above main in all three), and some
// Q8_0 kernels spill under it, unmeasured.
int id_two_steps() {
    const char* v = std::getenv("MINFER_CUDA_ID_STEPS");
    if (!v) return 0;
    const std::string s = v;
    return s == "plain" ? 1 : s == "weighted" ? 2 : s == "both" ? 3 : 0;
}

// The split-row weighted kernels load a token's router logits before their dots (SOFTMAX gating of at
// most 64 experts), not after: the default (s16b: +1.0%); MINFER_CUDA_SLOT_EARLY=0 loads them after.
bool slot_logits_early() {
    static const bool on = switched_on("MINFER_CUDA_SLOT_EARLY");
    return on;
}

// Whether split rows are taken a warp's rows at once (MINFER_CUDA_ID_ROWS=0: a row at a time).
bool id_rows_on() {
    static const bool rows = switched_on("MINFER_CUDA_ID_ROWS");
    return rows;
}

}  // namespace

// Calls pick(QIdKernels<...>{}) for weights at w with strides sw, split or as stored. Split rows take
// a warp's rows at once (id_rows_on), one or two steps a round trip (id_two_steps).
template <typename Block, typename Pick>
void with_id_kernels(const void* w, const Shape4& sw, bool split, Pick pick) {
    const uintptr_t align = reinterpret_cast<uintptr_t>(w) | uintptr_t(sw.nb[1]) | uintptr_t(sw.nb[2]);
    if constexpr (kSplitRows<Block>) {
        if (split) {
            const bool rows = id_rows_on();
            static const int two = id_two_steps();
            MF_ASSERT_MSG(align % 4 == 0, "MUL_MAT_ID: split rows must be 4-byte aligned");
            auto go = [&](auto vec) {
                constexpr int V = decltype(vec)::value;
                if (!rows) return pick(QIdKernels<Block, false, V>{});
                if (two == 1) return pick(QIdKernels<Block, false, V, 2, 1>{});
                if (two == 2) return pick(QIdKernels<Block, false, V, 1, 2>{});
                if (two == 3) return pick(QIdKernels<Block, false, V, 2, 2>{});
                return pick(QIdKernels<Block, false, V, 1, 1>{});
            };
            if (align % 16 == 0) return go(std::integral_constant<int, 16>{});
            if (align % 8 == 0) return go(std::integral_constant<int, 8>{});
            return go(std::integral_constant<int, 4>{});
        }
    }
    MF_ASSERT_MSG(!split, "MUL_MAT_ID: split rows of a type rows_split does not take");
    if (aligned16(w, sw)) return pick(QIdKernels<Block, true, 0>{});
    return pick(QIdKernels<Block, false, 0>{});
}

template <typename Block>
void launch_matvec_q_id(const void* w, const Shape4& sw, bool split, const float* x, const Shape4& sx,
                        const int32_t* ids, const Shape4& si, void* scratch, size_t scratch_bytes, bool x_quantized,
                        SlotWeights weights, float* dst, const float* add, cudaStream_t stream,
                        const IdRoute& route) {
    using Traits = BlockTraits<Block>;
    check_id_shapes(sw, sx, si);
    MF_ASSERT(!add || weights.data);
    MF_ASSERT(!route.logits || !weights.data);
    MF_ASSERT(sw.ne[0] % Traits::elems == 0 && sw.nb[0] == Traits::bytes);
    MF_ASSERT(scratch_bytes >= matvec_q_scratch_bytes(sx) && reinterpret_cast<uintptr_t>(scratch) % 16 == 0);
    const int64_t M = sw.ne[1], n_pairs = si.ne[0] * si.ne[1];
    if (sx.nrows() == 0) return;
    const ActQ act = act_layout(scratch, sx);
    if (!x_quantized) quantize_activations(Traits::act, x, sx, act, stream);
    if (M == 0 || n_pairs == 0) return;
    const char* wc = static_cast<const char*>(w);
    if (weights.data) MF_ASSERT(si.ne[0] <= MUL_MAT_ID_MAX_SLOTS);
    with_id_kernels<Block>(w, sw, split, [&](auto kernels) {
        if (weights.data) {
            auto weighted = kernels.weighted;
            if constexpr (decltype(kernels)::has_early) {
                if (slot_logits_early() && weights.gate == MoeGate::SOFTMAX && weights.shape.ne[0] <= 2 * WARP_SIZE)
                    weighted = kernels.weighted_early;
            }
            launch_id_slices(weighted, ceil_div(M, ID_SUM_ROWS), 1, si.ne[1], id_weighted_threads(si), stream, wc, sw,
                             sx, ids, si, act, weights, dst, add);
        } else if (route.logits) {
            if constexpr (decltype(kernels)::routes) {
                launch_id_slices(kernels.routed, ceil_div(M, kernels.plain_rows), si.ne[0], si.ne[1],
                                 MATVEC_WARPS * WARP_SIZE, stream, wc, sw, sx, route, const_cast<int32_t*>(ids), si,
                                 act, dst);
            } else {
                MF_ASSERT_MSG(false, "MUL_MAT_ID: a route without split rows at once (mul_mat_id_routes)");
            }
        } else {
            launch_id_slices(kernels.plain, ceil_div(M, kernels.plain_rows), si.ne[0], si.ne[1],
                             MATVEC_WARPS * WARP_SIZE, stream, wc, sw, sx, ids, si, act, dst);
        }
    });
    CUDA_CHECK_LAUNCH();
}

bool mul_mat_id_routes(DType type, bool split, const Shape4& sw, const Shape4& sl, const Shape4& si) {
    return split && (type == DType::Q4_0 || type == DType::Q8_0) && id_rows_on() && sl.ne[0] == sw.ne[2] &&
           sl.ne[0] <= WARP_SIZE * TOPK_RANK_VALUES && si.ne[0] <= sl.ne[0] && sl.ne[1] == si.ne[1] && sl.ne[2] == 1 &&
           sl.ne[3] == 1 && si.ne[2] == 1 && si.ne[3] == 1 && sw.ne[1] > 0;  // rows to launch, or no ids written
}

bool moe_block_fits(DType type, const Shape4& s_gu, const Shape4& s_d, const Shape4& sl, const Shape4& si) {
    const int64_t n_ff = s_gu.ne[1] / 2;
    const auto align = [](const Shape4& s) { return uintptr_t(s.nb[1]) | uintptr_t(s.nb[2]); };
    return (type == DType::Q4_0 || type == DType::Q8_0) && id_rows_on() && s_gu.ne[1] % 2 == 0 && n_ff % QK == 0 &&
           s_d.ne[0] == n_ff && s_gu.ne[2] == s_d.ne[2] && sl.ne[0] == s_gu.ne[2] &&
           sl.ne[0] <= WARP_SIZE * TOPK_RANK_VALUES && si.ne[0] >= 1 && si.ne[0] <= MOE_BLOCK_WARPS &&
           si.ne[0] <= sl.ne[0] && si.ne[1] == 1 && sl.ne[1] == 1 && s_d.ne[1] > 0 &&
           // the kernel's 32-bit counts: pairs x slots x 128-byte lines of a pair's rows below 2^31
           s_d.ne[1] < (int64_t(1) << 16) && s_d.nb[1] < (int64_t(1) << 16) && n_ff < (int64_t(1) << 20) &&
           align(s_gu) % 4 == 0 && align(s_d) % 4 == 0;
}

namespace {

template <typename Block, int SPLIT_GU, int SPLIT_D>
void launch_moe_block_typed(const MoeBlockArgs& args, cudaStream_t stream) {
    auto kernel = moe_block_kernel<Block, SPLIT_GU, SPLIT_D>;
    static const int per_sm = [&] {
        int n = 0;
        CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, MOE_BLOCK_WARPS * WARP_SIZE, 0));
        return n;
    }();
    int dev = 0, sms = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    MF_ASSERT_MSG(per_sm >= 1, "MoE block: the kernel does not fit an SM");
    const int64_t units = args.si.ne[0] * (args.sh.ne[0] / QK);
    const int64_t pairs = ceil_div(args.s_d.ne[1], ID_SUM_ROWS);
    const unsigned grid = unsigned(std::min<int64_t>(int64_t(per_sm) * sms, std::max(units, pairs)));
    // Cooperative: every block resident, or the launch is refused. MINFER_CUDA_MOE_BLOCK_PLAIN=1
    // launches plainly (should a captured graph refuse the attribute): the grid is no larger than
    // the device holds at once, and the next launch on this stream cannot start before every block
    // has reached the barrier (allow_next_kernel comes after it). Kernels of the second stream may
    // hold SMs meanwhile, but they wait on nothing of this launch, so they finish and the blocks get
    // to run; only a wait past the barrier's 2 s would trap.
    static const bool plain = [] {
        const char* v = std::getenv("MINFER_CUDA_MOE_BLOCK_PLAIN");
        return v && std::string(v) == "1";
    }();
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeCooperative;
    attr[0].val.cooperative = 1;
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(grid);
    config.blockDim = dim3(MOE_BLOCK_WARPS * WARP_SIZE);
    config.stream = stream;
    config.attrs = attr;
    config.numAttrs = plain ? 0 : 1;
    CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, args));
}

template <typename Block>
void launch_moe_block_split(const MoeBlockArgs& args, cudaStream_t stream) {
    // Split rows' vector width: the widest that divides both matrices' alignment.
    const auto vec = [](const char* w, const Shape4& s) {
        const uintptr_t a = reinterpret_cast<uintptr_t>(w) | uintptr_t(s.nb[1]) | uintptr_t(s.nb[2]);
        return a % 16 == 0 ? 16 : a % 8 == 0 ? 8 : 4;
    };
    const int gu = vec(args.w_gu, args.s_gu), d = vec(args.w_d, args.s_d);
    auto with_d = [&](auto g) {
        constexpr int G = decltype(g)::value;
        if (d == 16) return launch_moe_block_typed<Block, G, 16>(args, stream);
        if (d == 8) return launch_moe_block_typed<Block, G, 8>(args, stream);
        return launch_moe_block_typed<Block, G, 4>(args, stream);
    };
    if (gu == 16) return with_d(std::integral_constant<int, 16>{});
    if (gu == 8) return with_d(std::integral_constant<int, 8>{});
    return with_d(std::integral_constant<int, 4>{});
}

}  // namespace

void launch_moe_block(DType type, const MoeBlockArgs& args, cudaStream_t stream) {
    MF_ASSERT(moe_block_fits(type, args.s_gu, args.s_d, args.route.sl, args.si));
    if (type == DType::Q4_0) launch_moe_block_split<BlockQ4_0>(args, stream);
    else launch_moe_block_split<BlockQ8_0>(args, stream);
    CUDA_CHECK_LAUNCH();
}

template void launch_matvec_float_id<float>(const void*, const Shape4&, const float*, const Shape4&, const int32_t*,
                                            const Shape4&, SlotWeights, float*, const float*, cudaStream_t);
template void launch_matvec_float_id<__half>(const void*, const Shape4&, const float*, const Shape4&, const int32_t*,
                                             const Shape4&, SlotWeights, float*, const float*, cudaStream_t);
template void launch_matvec_float_id<__nv_bfloat16>(const void*, const Shape4&, const float*, const Shape4&,
                                                    const int32_t*, const Shape4&, SlotWeights, float*, const float*,
                                                    cudaStream_t);
#define MF_INSTANTIATE_Q_ID(B)                                                                                  \
    template void launch_matvec_q_id<B>(const void*, const Shape4&, bool, const float*, const Shape4&,         \
                                        const int32_t*, const Shape4&, void*, size_t, bool, SlotWeights, float*, \
                                        const float*, cudaStream_t, const IdRoute&);
MF_INSTANTIATE_Q_ID(BlockQ8_0)
MF_INSTANTIATE_Q_ID(BlockQ4_0)
MF_INSTANTIATE_Q_ID(BlockQ4_1)
MF_INSTANTIATE_Q_ID(BlockQ5_0)
MF_INSTANTIATE_Q_ID(BlockQ5_1)
MF_INSTANTIATE_Q_ID(BlockQ4_K)
MF_INSTANTIATE_Q_ID(BlockQ5_K)
MF_INSTANTIATE_Q_ID(BlockQ6_K)
#undef MF_INSTANTIATE_Q_ID

}  // namespace mf
