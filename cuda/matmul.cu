// MUL_MAT for prefill: a CUDA block computes a 64 x 64 (or 64 x 128) tile of outputs with mma.sync
// from tiles in shared memory. 32-element block weights: the raw blocks and the int8 activations
// copied in with cp.async one stage ahead of use, m16n8k32, one weight block per mma K step.
// F16 / BF16 weights: half tiles, m16n8k16, the f32 activations split into two halves (see below).
#include "cuda/matmul.cuh"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "cuda/act_quant.cuh"
#include "cuda/mma.cuh"
#include "cuda/matvec.cuh"  // matvec_q_scratch_bytes: both kernels share one quantized x in scratch

namespace mf {

namespace {

// Tiling. Each weight block is read once per TILE_N activation columns (the matvec kernel reads it
// once per 4), and each mma K step is exactly one block, so its int32 result is the block's exact
// integer sum, scaled like matvec_q_kernel's. A CUDA block is 2 x 2 warps; a warp owns FM m16 tiles
// by FN n8 tiles of outputs. The larger a warp's tile, the more mma steps each unpacked weight
// fragment and each activation fragment serve (the MMQ kernel is bound by instructions issued, most
// of them not mma), at the price of registers and of idle work at the matrices' edges.
constexpr int WARPS_M = 2, WARPS_N = 2;             // warps per CUDA block, 2 x 2 over the tile
constexpr int THREADS = WARPS_M * WARPS_N * WARP_SIZE;
constexpr int STAGE_BLOCKS = 4;                     // weight blocks along K per shared-memory stage
constexpr int STAGE_K = STAGE_BLOCKS * QK;          // 128 values of K per stage
constexpr int ROW_BYTES = STAGE_K + 16;             // an activation tile row in shared memory, see QStage

template <int FM, int FN>
struct Tiling {
    static constexpr int FRAGS_M = FM;                 // m16 tiles per warp
    static constexpr int FRAGS_N = FN;                 // n8 tiles per warp
    static constexpr int WARP_M = 16 * FM;             // output rows per warp
    static constexpr int WARP_N = 8 * FN;              // output columns per warp
    static constexpr int TILE_M = WARPS_M * WARP_M;    // weight rows per CUDA block
    static constexpr int TILE_N = WARPS_N * WARP_N;    // activation rows (columns of the product) per CUDA block
    static constexpr int MIN_BLOCKS = FM * FN <= 8 ? 4 : FM * FN <= 16 ? 3 : 2;  // at most 128 / 168 / 255 registers
};
using Tile64 = Tiling<2, 4>;       // 64 x 64: the F16 / BF16 kernel, and MMQ for few columns
using TileWide = Tiling<2, 8>;     // 64 x 128
using TileBig = Tiling<4, 8>;      // 128 x 128: MMQ for products of at least two blocks an SM

// One stage of both operands as they lie in global memory: per weight row its 4 blocks' raw bytes (4 *
// Block's size, copied in 4-byte pieces), per activation row 128 int8 quants and 4 scales (and Q8_1
// sums). Bank-conflict-free fragment reads (8 rows x 4 consecutive words a warp load): rows are a
// multiple of 8 words plus 4 apart, e.g. 20 words for Q4_0 (72 bytes padded to 80), 36 for the 128
// + 16 activation bytes.
template <typename Block, typename Tile>
struct QStage {
    static constexpr int W_BYTES = STAGE_BLOCKS * BlockTraits<Block>::bytes;  // a weight row's raw bytes
    static constexpr int W_ROW = ((W_BYTES / 4 + 3) / 8 * 8 + 4) * 4;          // the same, padded
    alignas(16) uint8_t w[Tile::TILE_M][W_ROW];
    alignas(16) int8_t x_q[Tile::TILE_N][ROW_BYTES];
    float x_d[Tile::TILE_N][STAGE_BLOCKS];
    float x_s[Tile::TILE_N][STAGE_BLOCKS];  // Q8_1 sums (d * sum(q)), for the weights' mins
};

// d = a (16 x 32, row-major) . b (32 x 8, column-major) over int8, exact in int32. Fragments, with
// g = lane / 4, t = lane % 4 (PTX ISA, mma.m16n8k32 .s8): a[0] row g, k 4t..4t+3; a[1] row g + 8,
// same k; a[2], a[3] as a[0], a[1] at k + 16; b[0] column g, k 4t..4t+3; b[1] k + 16; d[0], d[1] row g,
// columns 2t, 2t + 1; d[2], d[3] row g + 8. Four int8 per register, the lowest k in the low byte.
__device__ __forceinline__ void mma_s8(int (&d)[4], const int (&a)[4], const int (&b)[2]) {
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %10, %10, %10};"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(0));
}

// Copies stage s (weight blocks 4s .. 4s + 3) of weight rows m0 .. m0 + TILE_M - 1 and activation
// rows n0 .. n0 + TILE_N - 1 into a QStage with cp.async (the caller commits). Consecutive threads
// copy consecutive bytes of a row, so a warp's copy covers whole sectors: the weight rows' raw blocks
// in PIECE-byte pieces (4 or 8: rows and their lengths PIECE-aligned, and for 8 every stage whole:
// matmul_q_fits / launch_matmul_q), the activation rows' 128 quants in 16-byte vectors, their scales
// (and sums) in 4-byte pieces. Outside the matrices the pieces are zeros: a weight block of zeros has
// scale 0 and adds nothing. Everything that does not change from stage to stage (this thread's rows,
// pointers, which rows are inside) is worked out once, so a stage costs little more than its copies.
template <typename Block, typename Tile, int PIECE>
struct StageCopier {
    static constexpr int BYTES = BlockTraits<Block>::bytes;
    static constexpr int W_BYTES = QStage<Block, Tile>::W_BYTES;
    static constexpr int W_PIECES = W_BYTES / PIECE;          // pieces of a weight row's stage
    static constexpr int W_TOTAL = Tile::TILE_M * W_PIECES;   // pieces of a stage's weight tile
    static constexpr int VECS = STAGE_K / 16;                 // 16-byte vectors of an activation row's stage
    static constexpr int X_STRIDE = THREADS / VECS;           // rows between one thread's vectors
    static constexpr int D_STRIDE = THREADS / STAGE_BLOCKS;   // rows between one thread's scales
    static_assert(W_BYTES % PIECE == 0, "a stage of weight blocks is whole pieces");

    const uint8_t* w;    // weight row m0, block 0
    const int8_t* xq;    // activation row n0, block 0: its quants, scales and (Q8_1) sums
    const float* xd;
    const float* xs;
    uint32_t w_row_bytes, x_row_bytes;  // offsets inside a tile fit 32 bits (launch_matmul_q)
    int w_rows, x_rows;                 // rows of the tiles inside the matrices
    int64_t n_blk;

    __device__ StageCopier(const uint8_t* w_, int64_t w_row_bytes_, int64_t M, int64_t N, int64_t n_blk_, int64_t m0,
                           int64_t n0, const ActQ& act)
        : w(w_ + m0 * w_row_bytes_), xq(act.q + n0 * n_blk_ * QK), xd(act.d + n0 * n_blk_), xs(act.s + n0 * n_blk_),
          w_row_bytes(uint32_t(w_row_bytes_)), x_row_bytes(uint32_t(n_blk_ * QK)),
          w_rows(int(M - m0 < Tile::TILE_M ? M - m0 : Tile::TILE_M)),
          x_rows(int(N - n0 < Tile::TILE_N ? N - n0 : Tile::TILE_N)), n_blk(n_blk_) {}

    // A piece outside the matrices reads nothing; its address is the tile's first (valid) one.
    __device__ __forceinline__ void issue(QStage<Block, Tile>& st, int64_t s) const {
        const int64_t b0 = s * STAGE_BLOCKS;
        const int blocks = int(n_blk - b0 < STAGE_BLOCKS ? n_blk - b0 : STAGE_BLOCKS);
        const int left = blocks * BYTES;  // bytes of each weight row in this stage
        const uint8_t* wb = w + b0 * BYTES;
#pragma unroll
        for (int it = 0; it < (W_TOTAL + THREADS - 1) / THREADS; ++it) {
            const int i = threadIdx.x + THREADS * it;
            if (W_TOTAL % THREADS == 0 || i < W_TOTAL) {
                const int row = i / W_PIECES, c = PIECE * (i % W_PIECES);
                const bool in = row < w_rows && c < left;
                const uint8_t* src = wb + (in ? uint32_t(row) * w_row_bytes + c : 0u);
                if constexpr (PIECE == 8) {
                    cp_async8_or_zero(&st.w[row][c], src, in);
                } else {
                    cp_async4_or_zero(&st.w[row][c], src, in);
                }
            }
        }
        const int v = threadIdx.x % VECS;
        const int8_t* xb = xq + b0 * QK;
#pragma unroll
        for (int it = 0; it < Tile::TILE_N / X_STRIDE; ++it) {
            const int row = threadIdx.x / VECS + X_STRIDE * it;
            const bool in = v / 2 < blocks && row < x_rows;
            cp_async16_or_zero(&st.x_q[row][16 * v], xb + (in ? uint32_t(row) * x_row_bytes + 16 * v : 0u), in);
        }
        const int kb = threadIdx.x % STAGE_BLOCKS;
        const uint32_t d_row = x_row_bytes / QK;
#pragma unroll
        for (int it = 0; it < Tile::TILE_N / D_STRIDE; ++it) {
            const int row = threadIdx.x / STAGE_BLOCKS + D_STRIDE * it;
            const bool in = kb < blocks && row < x_rows;
            const uint32_t at = in ? uint32_t(row) * d_row + kb : 0u;
            cp_async4_or_zero(&st.x_d[row][kb], xd + b0 + at, in);
            if constexpr (BlockTraits<Block>::act == ActQuant::Q8_1) cp_async4_or_zero(&st.x_s[row][kb], xs + b0 + at, in);
        }
    }
};

// The two-stage cp.async ring of both kernels, at the top of step s of n_stages: issues the copies of
// stage s + 1 (issue(s + 1), into the buffer stage s - 1 used), waits for stage s's, and makes them
// visible to every thread. The caller ends each step with a barrier, so the buffer it overwrites next
// is consumed.
template <typename Issue>
__device__ __forceinline__ void next_stage(int64_t s, int64_t n_stages, Issue issue) {
    if (s + 1 < n_stages) {
        issue(s + 1);
        cp_async_commit();
        cp_async_wait<1>();
    } else {
        cp_async_wait<0>();
    }
    __syncthreads();
}

// A warp's accumulators (mma_s8's d layout, FM x FN tiles of Tile) into dst [M, N] (n-major), inside
// the matrix only.
template <typename Tile>
__device__ __forceinline__ void store_tile(const float (&acc)[Tile::FRAGS_M][Tile::FRAGS_N][4], float* dst,
                                           int64_t M, int64_t N, int64_t m0, int64_t n0, int wm, int wn, int g,
                                           int t) {
#pragma unroll
    for (int fm = 0; fm < Tile::FRAGS_M; ++fm) {
#pragma unroll
        for (int fn = 0; fn < Tile::FRAGS_N; ++fn) {
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const int64_t m = m0 + Tile::WARP_M * wm + 16 * fm + g + 8 * (r / 2);
                const int64_t n = n0 + Tile::WARP_N * wn + 8 * fn + 2 * t + r % 2;
                if (m < M && n < N) dst[n * M + m] = acc[fm][fn][r];
            }
        }
    }
}

// grid = (ceil(N / TILE_N), ceil(M / TILE_M)): the column tiles of one weight tile run side by side,
// so the weight tile they share is fetched from DRAM about once. Two stages in shared memory: the
// copies of stage s + 1 are in flight while the warps multiply stage s (dynamic shared memory). Warp
// (wm, wn) owns output rows m0 + WARP_M wm .. and columns n0 + WARP_N wn ..: per weight block, FM x FN
// mma tiles whose A fragments it unpacks from the raw blocks (unpack_pair) and whose int32 sums it
// scales into f32 accumulators with matvec_q_kernel's arithmetic.
template <typename Block, typename Tile, int PIECE>
__global__ void __launch_bounds__(THREADS, Tile::MIN_BLOCKS)
    matmul_q_kernel(const uint8_t* w, int64_t w_row_bytes, int64_t M, int64_t N, int64_t n_blk, ActQ act,
                    float* dst) {
    constexpr bool MIN = BlockTraits<Block>::act == ActQuant::Q8_1;
    constexpr int BYTES = BlockTraits<Block>::bytes;
    constexpr int FRAGS_M = Tile::FRAGS_M, FRAGS_N = Tile::FRAGS_N, WARP_M = Tile::WARP_M, WARP_N = Tile::WARP_N;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    QStage<Block, Tile>* st = reinterpret_cast<QStage<Block, Tile>*>(smem_raw);

    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const int g = lane / 4, t = lane % 4;
    const int wm = warp / WARPS_N, wn = warp % WARPS_N;
    const int64_t n0 = int64_t(blockIdx.x) * Tile::TILE_N, m0 = int64_t(blockIdx.y) * Tile::TILE_M;
    const int64_t n_stages = (n_blk + STAGE_BLOCKS - 1) / STAGE_BLOCKS;

    const StageCopier<Block, Tile, PIECE> copier(w, w_row_bytes, M, N, n_blk, m0, n0, act);
    copier.issue(st[0], 0);
    cp_async_commit();
    float acc[FRAGS_M][FRAGS_N][4] = {};
    for (int64_t s = 0; s < n_stages; ++s) {
        next_stage(s, n_stages, [&](int64_t i) { copier.issue(st[i % 2], i); });
        const QStage<Block, Tile>& cur = st[s % 2];
        const int stage_blocks = int(n_blk - s * STAGE_BLOCKS < STAGE_BLOCKS ? n_blk - s * STAGE_BLOCKS : STAGE_BLOCKS);
        // Not unrolled: unrolling hoists the fragment loads of all four blocks and needs more than
        // 128 registers.
#pragma unroll 1
        for (int kb = 0; kb < stage_blocks; ++kb) {
            int a[FRAGS_M][4];
            float w_d[FRAGS_M][2], w_m[FRAGS_M][2];
#pragma unroll
            for (int fm = 0; fm < FRAGS_M; ++fm) {
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const PtrBytes blk{&cur.w[WARP_M * wm + 16 * fm + g + 8 * h][kb * BYTES]};
                    unpack_pair(Block{}, blk, t, a[fm][h], a[fm][2 + h]);
                    block_scales(Block{}, blk, w_d[fm][h], w_m[fm][h]);
                }
            }
#pragma unroll
            for (int fn = 0; fn < FRAGS_N; ++fn) {
                const int* col = reinterpret_cast<const int*>(&cur.x_q[WARP_N * wn + 8 * fn + g][kb * QK]);
                const int b[2] = {col[t], col[4 + t]};
                float x_d[2], x_s[2] = {};
#pragma unroll
                for (int j = 0; j < 2; ++j) {
                    x_d[j] = cur.x_d[WARP_N * wn + 8 * fn + 2 * t + j][kb];
                    if (MIN) x_s[j] = cur.x_s[WARP_N * wn + 8 * fn + 2 * t + j][kb];
                }
#pragma unroll
                for (int fm = 0; fm < FRAGS_M; ++fm) {
                    int sum[4];
                    mma_s8(sum, a[fm], b);
#pragma unroll
                    for (int r = 0; r < 4; ++r) {
                        const int h = r / 2, j = r % 2;
                        // As matvec_q_kernel and the CPU's vec_dot: the two scales first, then the sum;
                        // the Q8_1 types add min * s unfused.
                        if constexpr (MIN) {
                            acc[fm][fn][r] += __fadd_rn(__fmul_rn(float(sum[r]), __fmul_rn(w_d[fm][h], x_d[j])),
                                                        __fmul_rn(w_m[fm][h], x_s[j]));
                        } else {
                            acc[fm][fn][r] += float(sum[r]) * (w_d[fm][h] * x_d[j]);
                        }
                    }
                }
            }
        }
        __syncthreads();  // stage s is consumed before the next iteration copies stage s + 2 over it
    }

    store_tile<Tile>(acc, dst, M, N, m0, n0, wm, wn, g, t);
}

// ---- F16 / BF16 weights ----
//
// The CPU multiplies f16 / bf16 weights by the f32 activations as they are. Here each activation is
// split into hi = T(x) and lo = T(x - hi) and both are multiplied on the tensor cores: a weight times
// hi + lo is exact in the f32 accumulator's precision for f16 (11 + 11 bits of x), and leaves 2^-17 of
// x for bf16 (8 + 8 bits), far below what summation order already moves. Known limit: an activation
// beyond f16's range (|x| > 65504) turns hi into inf and the row's results into inf/NaN with F16
// weights (BF16 has f32's range). llama.cpp converts activations to f16 for its f16 GEMMs as well;
// a per-row scale would lift it.
constexpr int F_STAGE_K = 64;                  // values of K per shared-memory stage: 4 mma K steps
constexpr int F_ROW = F_STAGE_K + 8;           // a tile row in shared memory: 144 bytes (16-byte aligned
                                               // for ldmatrix, 9 x 16 bytes: its 8 row reads hit 32 banks)
template <typename T, typename Tile>
struct FloatStage {
    alignas(16) T w[Tile::TILE_M][F_ROW];
    alignas(16) T x_hi[Tile::TILE_N][F_ROW];
    alignas(16) T x_lo[Tile::TILE_N][F_ROW];
};

template <typename T>
__device__ __forceinline__ T to_half_type(float v);
template <>
__device__ __forceinline__ __half to_half_type<__half>(float v) {
    return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 to_half_type<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}
template <typename T>
__device__ __forceinline__ float from_half_type(T v) {
    if constexpr (std::is_same_v<T, __half>) {
        return __half2float(v);
    } else {
        return __bfloat162float(v);
    }
}

// x f32 [K, N] (rows x_row_bytes apart) -> hi and lo T [K, N], packed: once per product, so that the
// tile loop copies halves instead of converting each activation tile once per weight tile.
template <typename T>
__global__ void split_hi_lo_kernel(const char* x, int64_t x_row_bytes, int64_t K, int64_t N, T* hi, T* lo) {
    const int64_t quads = K / 4 * N;  // K % 8 == 0
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < quads; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t n = i / (K / 4), k = 4 * (i % (K / 4));
        const float4 f = *reinterpret_cast<const float4*>(x + n * x_row_bytes + k * int64_t(sizeof(float)));
        const float in[4] = {f.x, f.y, f.z, f.w};
        T h[4], l[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            h[j] = to_half_type<T>(in[j]);
            l[j] = to_half_type<T>(in[j] - from_half_type(h[j]));
        }
        *reinterpret_cast<uint2*>(hi + n * K + k) = *reinterpret_cast<const uint2*>(h);
        *reinterpret_cast<uint2*>(lo + n * K + k) = *reinterpret_cast<const uint2*>(l);
    }
}

// K values k0 .. k0 + 63 of weight rows m0 .. m0 + TILE_M - 1 and of the hi / lo activation rows
// n0 .. n0 + TILE_N - 1 into st with cp.async (the caller commits), 16 bytes a copy (K % 8 == 0, rows
// 16-byte aligned: matmul_float_fits). Eight consecutive threads copy one row's 128 bytes, so a warp's
// copy covers 4 rows x 128 contiguous bytes. Outside the matrices: zeros.
template <typename T, typename Tile>
__device__ __forceinline__ void issue_float_stage(FloatStage<T, Tile>& st, const char* w, int64_t w_row_bytes,
                                                  const T* hi, const T* lo, int64_t K, int64_t M, int64_t N,
                                                  int64_t m0, int64_t n0, int64_t k0) {
    constexpr int VECS = F_STAGE_K / 8;           // 16-byte vectors a row
    constexpr int ROWS_AT_ONCE = THREADS / VECS;  // rows one pass of the block covers
    const int r0 = threadIdx.x / VECS, c = 8 * (threadIdx.x % VECS);
    const int64_t k = k0 + c;
    const bool k_in = k < K;
#pragma unroll
    for (int it = 0; it < Tile::TILE_M / ROWS_AT_ONCE; ++it) {
        const int row = r0 + ROWS_AT_ONCE * it;
        const bool in = k_in && m0 + row < M;
        const T* wp = reinterpret_cast<const T*>(w + (m0 + row) * w_row_bytes) + k;
        cp_async16_or_zero(&st.w[row][c], in ? wp : reinterpret_cast<const T*>(w), in);
    }
#pragma unroll
    for (int it = 0; it < Tile::TILE_N / ROWS_AT_ONCE; ++it) {
        const int row = r0 + ROWS_AT_ONCE * it;
        const bool in = k_in && n0 + row < N;
        const int64_t x_at = (n0 + row) * K + k;
        cp_async16_or_zero(&st.x_hi[row][c], in ? hi + x_at : hi, in);
        cp_async16_or_zero(&st.x_lo[row][c], in ? lo + x_at : lo, in);
    }
}

// grid and warps as matmul_q_kernel, two stages in dynamic shared memory with the copies of stage
// s + 1 in flight while the warps multiply stage s: warp (wm, wn) owns WARP_M x WARP_N outputs, FM x FN
// mma tiles, each fed twice per K step (hi and lo activations). Fragments come from shared memory with
// ldmatrix: one x4 load for a 16 x 16 weight fragment, one for two n8 tiles' activation fragments.
template <typename T, typename Tile>
__global__ void __launch_bounds__(THREADS, Tile::MIN_BLOCKS)
    matmul_float_kernel(const char* w, int64_t w_row_bytes, const T* hi, const T* lo, int64_t K, int64_t M,
                        int64_t N, float* dst) {
    static_assert(Tile::FRAGS_N % 2 == 0, "activation fragments are loaded two n8 tiles at a time");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    FloatStage<T, Tile>* st = reinterpret_cast<FloatStage<T, Tile>*>(smem_raw);
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const int g = lane / 4, t = lane % 4;
    const int wm = warp / WARPS_N, wn = warp % WARPS_N;
    const int64_t n0 = int64_t(blockIdx.x) * Tile::TILE_N, m0 = int64_t(blockIdx.y) * Tile::TILE_M;
    const int64_t n_stages = (K + F_STAGE_K - 1) / F_STAGE_K;

    issue_float_stage<T, Tile>(st[0], w, w_row_bytes, hi, lo, K, M, N, m0, n0, 0);
    cp_async_commit();
    float acc[Tile::FRAGS_M][Tile::FRAGS_N][4] = {};
    for (int64_t s = 0; s < n_stages; ++s) {
        next_stage(s, n_stages, [&](int64_t i) {
            issue_float_stage<T, Tile>(st[i % 2], w, w_row_bytes, hi, lo, K, M, N, m0, n0, i * F_STAGE_K);
        });
        const FloatStage<T, Tile>& cur = st[s % 2];
#pragma unroll
        for (int ks = 0; ks < F_STAGE_K; ks += 16) {
            // a[fm]: rows g, g + 8 at k 2t (a[0], a[1]) and 2t + 8 (a[2], a[3]) (mma_16816's layout).
            uint32_t a[Tile::FRAGS_M][4];
#pragma unroll
            for (int fm = 0; fm < Tile::FRAGS_M; ++fm)
                ldmatrix_x4<false>(a[fm], &cur.w[Tile::WARP_M * wm + 16 * fm + lane % 16][ks + 8 * (lane / 16)]);
#pragma unroll
            for (int fn = 0; fn < Tile::FRAGS_N; fn += 2) {
                // Columns 8 fn .. 8 fn + 15: registers 0, 1 the first n8 tile's k halves, 2, 3 the second's.
                const int col = Tile::WARP_N * wn + 8 * fn + lane % 8 + 8 * (lane / 16);
                const int kc = ks + 8 * ((lane / 8) % 2);
                uint32_t xh[4], xl[4];
                ldmatrix_x4<false>(xh, &cur.x_hi[col][kc]);
                ldmatrix_x4<false>(xl, &cur.x_lo[col][kc]);
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const uint32_t bh[2] = {xh[2 * h], xh[2 * h + 1]}, bl[2] = {xl[2 * h], xl[2 * h + 1]};
#pragma unroll
                    for (int fm = 0; fm < Tile::FRAGS_M; ++fm) {
                        mma_16816<T>(acc[fm][fn + h], a[fm], bh);
                        mma_16816<T>(acc[fm][fn + h], a[fm], bl);
                    }
                }
            }
        }
        __syncthreads();  // stage s is consumed before the next iteration copies stage s + 2 over it
    }
    store_tile<Tile>(acc, dst, M, N, m0, n0, wm, wn, g, t);
}

template <typename Block, typename Tile, int PIECE>
void run_matmul_q(const void* w, const Shape4& sw, int64_t M, int64_t N, const ActQ& act, float* dst,
                  cudaStream_t stream) {
    const int64_t m_tiles = ceil_div(M, Tile::TILE_M);
    MF_ASSERT_MSG(m_tiles <= 65535, "launch_matmul_q: more weight rows than grid.y allows");
    MF_ASSERT(Tile::TILE_M * sw.nb[1] < (int64_t(1) << 32) && Tile::TILE_N * sw.ne[0] < (int64_t(1) << 32));
    constexpr size_t smem = 2 * sizeof(QStage<Block, Tile>);
    static const bool attr = [] {
        CUDA_CHECK(cudaFuncSetAttribute(matmul_q_kernel<Block, Tile, PIECE>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        int(smem)));
        return true;
    }();
    (void)attr;
    const dim3 grid(grid_x(ceil_div(N, Tile::TILE_N)), unsigned(m_tiles));
    matmul_q_kernel<Block, Tile, PIECE><<<grid, THREADS, smem, stream>>>(static_cast<const uint8_t*>(w), sw.nb[1], M, N,
                                                                 sw.ne[0] / QK, act, dst);
    CUDA_CHECK_LAUNCH();
}

template <typename T, typename Tile>
void run_matmul_float(const void* w, const Shape4& sw, const T* hi, const T* lo, int64_t K, int64_t M, int64_t N,
                      float* dst, cudaStream_t stream) {
    constexpr size_t smem = 2 * sizeof(FloatStage<T, Tile>);
    static const bool attr = [] {
        CUDA_CHECK(cudaFuncSetAttribute(matmul_float_kernel<T, Tile>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        int(smem)));
        return true;
    }();
    (void)attr;
    const dim3 grid(grid_x(ceil_div(N, Tile::TILE_N)), unsigned(ceil_div(M, Tile::TILE_M)));
    matmul_float_kernel<T, Tile><<<grid, THREADS, smem, stream>>>(static_cast<const char*>(w), sw.nb[1], hi, lo, K,
                                                                  M, N, dst);
    CUDA_CHECK_LAUNCH();
}

}  // namespace

template <typename Block>
void launch_matmul_q(const void* w, const Shape4& sw, const float* x, const Shape4& sx, void* scratch,
                     size_t scratch_bytes, bool x_quantized, float* dst, cudaStream_t stream) {
    using Traits = BlockTraits<Block>;
    static_assert(matmul_q_supported<Block>(), "launch_matmul_q takes 32-element blocks only");
    MF_ASSERT(sw.ne[0] == sx.ne[0] && sx.nb[0] == sizeof(float));
    MF_ASSERT(sw.ne[2] == 1 && sw.ne[3] == 1 && sx.ne[2] == 1 && sx.ne[3] == 1);
    MF_ASSERT(matmul_q_fits<Block>(w, sw));
    MF_ASSERT(scratch_bytes >= matvec_q_scratch_bytes(sx) && reinterpret_cast<uintptr_t>(scratch) % 16 == 0);
    const int64_t M = sw.ne[1], N = sx.ne[1];
    if (N == 0) return;
    const ActQ act = act_layout(scratch, sx);
    // Even when M == 0: a later launch may be told the scratch holds x.
    if (!x_quantized) quantize_activations(Traits::act, x, sx, act, stream);
    if (M == 0) return;
    if (sw.ne[0] == 0) {  // no blocks to multiply: the products are empty sums
        CUDA_CHECK(cudaMemsetAsync(dst, 0, size_t(M * N) * sizeof(float), stream));
        return;
    }

    // Whole stages of rows 8-byte aligned: 8-byte copies. Few columns: the 64 x 64 tile; more: 64 x 128,
    // or with 8-byte copies 128 x 128 when that still gives two CUDA blocks an SM of a 132-SM GPU
    // (MINFER_MMQ_TILE=64|wide|big forces one, to measure them against each other).
    const bool whole = sw.ne[0] % STAGE_K == 0 && sw.nb[1] % 8 == 0 && reinterpret_cast<uintptr_t>(w) % 8 == 0;
    static const char* forced = std::getenv("MINFER_MMQ_TILE");
    static const bool narrow_pieces = !switched_on("MINFER_MMQ_PIECE8");
    const bool big_fills = ceil_div(M, TileBig::TILE_M) * ceil_div(N, TileBig::TILE_N) >= 2 * 132;
    const std::string pick = forced ? forced : N <= 64 ? "64" : big_fills ? "big" : "wide";
    if (whole && !narrow_pieces) {
        pick == "big"    ? run_matmul_q<Block, TileBig, 8>(w, sw, M, N, act, dst, stream)
        : pick == "wide" ? run_matmul_q<Block, TileWide, 8>(w, sw, M, N, act, dst, stream)
                         : run_matmul_q<Block, Tile64, 8>(w, sw, M, N, act, dst, stream);
    } else {  // 128 x 128 with 4-byte pieces would spill: 64 x 128 instead
        pick == "big" || pick == "wide" ? run_matmul_q<Block, TileWide, 4>(w, sw, M, N, act, dst, stream)
                                        : run_matmul_q<Block, Tile64, 4>(w, sw, M, N, act, dst, stream);
    }
}

template <typename Block>
bool matmul_q_fits(const void* w, const Shape4& sw) {
    const int64_t row_bytes = sw.ne[0] / QK * BlockTraits<Block>::bytes;
    return sw.ne[0] % QK == 0 && sw.nb[0] == BlockTraits<Block>::bytes && row_bytes % 4 == 0 && sw.nb[1] % 4 == 0 &&
           reinterpret_cast<uintptr_t>(w) % 4 == 0;
}

template bool matmul_q_fits<BlockQ8_0>(const void*, const Shape4&);
template bool matmul_q_fits<BlockQ4_0>(const void*, const Shape4&);
template bool matmul_q_fits<BlockQ4_1>(const void*, const Shape4&);
template bool matmul_q_fits<BlockQ5_0>(const void*, const Shape4&);
template bool matmul_q_fits<BlockQ5_1>(const void*, const Shape4&);
template void launch_matmul_q<BlockQ8_0>(const void*, const Shape4&, const float*, const Shape4&, void*, size_t,
                                         bool, float*, cudaStream_t);
template void launch_matmul_q<BlockQ4_0>(const void*, const Shape4&, const float*, const Shape4&, void*, size_t,
                                         bool, float*, cudaStream_t);
template void launch_matmul_q<BlockQ4_1>(const void*, const Shape4&, const float*, const Shape4&, void*, size_t,
                                         bool, float*, cudaStream_t);
template void launch_matmul_q<BlockQ5_0>(const void*, const Shape4&, const float*, const Shape4&, void*, size_t,
                                         bool, float*, cudaStream_t);
template void launch_matmul_q<BlockQ5_1>(const void*, const Shape4&, const float*, const Shape4&, void*, size_t,
                                         bool, float*, cudaStream_t);

template <typename T>
bool matmul_float_fits(const void* w, const Shape4& sw, const float* x, const Shape4& sx) {
    const bool two_d = sw.ne[2] == 1 && sw.ne[3] == 1 && sx.ne[2] == 1 && sx.ne[3] == 1;
    const bool packed = sw.nb[0] == sizeof(T) && sx.nb[0] == sizeof(float);
    const bool aligned = reinterpret_cast<uintptr_t>(w) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                         sw.nb[1] % 16 == 0 && sx.nb[1] % 16 == 0;
    return two_d && packed && aligned && sw.ne[0] == sx.ne[0] && sw.ne[0] % 8 == 0 && sw.ne[1] <= 65535 * Tile64::TILE_M;
}

template <typename T>
size_t matmul_float_scratch_bytes(const Shape4& sx) {
    return 2 * size_t(sx.ne[0]) * size_t(sx.ne[1]) * sizeof(T);
}

template <typename T>
void launch_matmul_float(const void* w, const Shape4& sw, const float* x, const Shape4& sx, void* scratch,
                         size_t scratch_bytes, float* dst, cudaStream_t stream) {
    MF_ASSERT(matmul_float_fits<T>(w, sw, x, sx));
    MF_ASSERT(scratch_bytes >= matmul_float_scratch_bytes<T>(sx) && reinterpret_cast<uintptr_t>(scratch) % 16 == 0);
    const int64_t K = sw.ne[0], M = sw.ne[1], N = sx.ne[1];
    if (M == 0 || N == 0) return;
    T* hi = static_cast<T*>(scratch);
    T* lo = hi + K * N;
    split_hi_lo_kernel<T><<<grid_x(std::min<int64_t>(ceil_div(K / 4 * N, 256), 4096)), 256, 0, stream>>>(
        reinterpret_cast<const char*>(x), sx.nb[1], K, N, hi, lo);
    CUDA_CHECK_LAUNCH();
    // More than 64 columns: the 64 x 128 tile (MINFER_MMQ_TILE=64 forces 64 x 64 here too).
    static const char* forced = std::getenv("MINFER_MMQ_TILE");
    const bool wide = forced ? std::string(forced) == "wide" : N > 64;
    wide ? run_matmul_float<T, TileWide>(w, sw, hi, lo, K, M, N, dst, stream)
         : run_matmul_float<T, Tile64>(w, sw, hi, lo, K, M, N, dst, stream);
}

template bool matmul_float_fits<__half>(const void*, const Shape4&, const float*, const Shape4&);
template bool matmul_float_fits<__nv_bfloat16>(const void*, const Shape4&, const float*, const Shape4&);
template size_t matmul_float_scratch_bytes<__half>(const Shape4&);
template size_t matmul_float_scratch_bytes<__nv_bfloat16>(const Shape4&);
template void launch_matmul_float<__half>(const void*, const Shape4&, const float*, const Shape4&, void*, size_t,
                                          float*, cudaStream_t);
template void launch_matmul_float<__nv_bfloat16>(const void*, const Shape4&, const float*, const Shape4&, void*,
                                                 size_t, float*, cudaStream_t);

}  // namespace mf
