// MUL_MAT for prefill: a CUDA block computes a 64 x 64 tile of outputs with mma.sync from tiles in
// shared memory. 32-element block weights: the raw blocks and the int8 activations copied in with
// cp.async one stage ahead of use, m16n8k32, one weight block per mma K step.
// F16 / BF16 weights: half tiles, m16n8k16, the f32 activations split into two halves (see below).
#include "cuda/matmul.cuh"

#include <algorithm>
#include <type_traits>

#include "cuda/act_quant.cuh"
#include "cuda/mma.cuh"
#include "cuda/matvec.cuh"  // matvec_q_scratch_bytes: both kernels share one quantized x in scratch

namespace mf {

namespace {

// Tiling. Each weight block is read once per 64 activation columns (the matvec kernel reads it once
// per 4), and each mma K step is exactly one block, so its int32 result is the block's exact integer
// sum, scaled like matvec_q_kernel's.
constexpr int TILE_M = 64;                          // weight rows per CUDA block
constexpr int TILE_N = 64;                          // activation rows (columns of the product) per CUDA block
constexpr int STAGE_BLOCKS = 4;                     // weight blocks along K per shared-memory stage
constexpr int STAGE_K = STAGE_BLOCKS * QK;          // 128 values of K per stage
constexpr int ROW_BYTES = STAGE_K + 16;             // an activation tile row in shared memory, see QStage
constexpr int WARPS_M = 2, WARPS_N = 2;             // warps per CUDA block, 2 x 2 over the tile
constexpr int THREADS = WARPS_M * WARPS_N * WARP_SIZE;
constexpr int WARP_M = TILE_M / WARPS_M;            // output rows per warp: 32
constexpr int WARP_N = TILE_N / WARPS_N;            // output columns per warp: 32
constexpr int FRAGS_M = WARP_M / 16;                // m16 tiles per warp: 2
constexpr int FRAGS_N = WARP_N / 8;                 // n8 tiles per warp: 4

// One stage of both operands as they lie in global memory: per weight row its 4 blocks' raw bytes (4 *
// Block's size, copied in 4-byte pieces), per activation row 128 int8 quants and 4 scales (and Q8_1
// sums). Bank-conflict-free fragment reads (8 rows x 4 consecutive words a warp load): rows are a
// multiple of 8 words plus 4 apart, e.g. 20 words for Q4_0 (72 bytes padded to 80), 36 for the 128
// + 16 activation bytes.
template <typename Block>
struct QStage {
    static constexpr int W_BYTES = STAGE_BLOCKS * BlockTraits<Block>::bytes;  // a weight row's raw bytes
    static constexpr int W_ROW = ((W_BYTES / 4 + 3) / 8 * 8 + 4) * 4;          // the same, padded
    alignas(16) uint8_t w[TILE_M][W_ROW];
    alignas(16) int8_t x_q[TILE_N][ROW_BYTES];
    float x_d[TILE_N][STAGE_BLOCKS];
    float x_s[TILE_N][STAGE_BLOCKS];  // Q8_1 sums (d * sum(q)), for the weights' mins
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

// Stage b0 (weight blocks b0 .. b0 + 3) of weight rows m0 .. m0 + 63 and activation rows n0 .. n0 + 63
// into st with cp.async (the caller commits), consecutive threads on consecutive bytes of a row so
// that a warp's copy covers whole sectors: the weight rows' 4 blocks in 4-byte pieces (rows 4-byte
// aligned, b0 a multiple of 4: matmul_q_fits; offsets from the stage's first byte fit 32 bits), the
// activation rows' 128 quants in 16-byte vectors, their scales (and sums) in 4-byte pieces. Outside
// the matrices the pieces are zeros: a weight block of zeros has scale 0 and adds nothing.
template <typename Block>
__device__ __forceinline__ void issue_stage(QStage<Block>& st, const uint8_t* w, int64_t w_row_bytes, int64_t M,
                                            int64_t N, int64_t n_blk, int64_t m0, int64_t n0, int64_t b0,
                                            const ActQ& act) {
    constexpr int BYTES = BlockTraits<Block>::bytes;
    constexpr int W_PIECES = QStage<Block>::W_BYTES / 4;  // 4-byte pieces of a weight row's stage
    static_assert(TILE_M * W_PIECES % THREADS == 0, "block sizes are even");
    const uint8_t* wb = w + m0 * w_row_bytes + b0 * BYTES;
    const int rows_in = int(M - m0 < TILE_M ? M - m0 : TILE_M);
    const int64_t left = (n_blk - b0) * BYTES;  // bytes of each weight row from the stage's start
#pragma unroll
    for (int it = 0; it < TILE_M * W_PIECES / THREADS; ++it) {
        const int i = threadIdx.x + THREADS * it;
        const int row = i / W_PIECES, c = i % W_PIECES;
        const bool in = row < rows_in && 4 * c < left;
        cp_async4_or_zero(&st.w[row][4 * c], in ? wb + uint32_t(row) * uint32_t(w_row_bytes) + 4 * c : w, in);
    }
    constexpr int VECS = STAGE_K / 16;  // 16-byte vectors of an activation row's stage
    const int v = threadIdx.x % VECS;
    const bool blk_in = b0 + v / 2 < n_blk;
#pragma unroll
    for (int it = 0; it < TILE_N * VECS / THREADS; ++it) {
        const int row = threadIdx.x / VECS + THREADS / VECS * it;
        const bool in = blk_in && n0 + row < N;
        cp_async16_or_zero(&st.x_q[row][16 * v], in ? act.q + ((n0 + row) * n_blk + b0) * QK + 16 * v : act.q, in);
    }
    const int kb = threadIdx.x % STAGE_BLOCKS;
#pragma unroll
    for (int it = 0; it < TILE_N * STAGE_BLOCKS / THREADS; ++it) {
        const int row = threadIdx.x / STAGE_BLOCKS + THREADS / STAGE_BLOCKS * it;
        const bool in = b0 + kb < n_blk && n0 + row < N;
        const int64_t at = in ? (n0 + row) * n_blk + b0 + kb : 0;
        cp_async4_or_zero(&st.x_d[row][kb], act.d + at, in);
        if constexpr (BlockTraits<Block>::act == ActQuant::Q8_1) cp_async4_or_zero(&st.x_s[row][kb], act.s + at, in);
    }
}

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

// A warp's 32 x 32 accumulators (mma_s8's d layout) into dst [M, N] (n-major), inside the matrix only.
__device__ __forceinline__ void store_tile(const float (&acc)[FRAGS_M][FRAGS_N][4], float* dst, int64_t M, int64_t N,
                                           int64_t m0, int64_t n0, int wm, int wn, int g, int t) {
#pragma unroll
    for (int fm = 0; fm < FRAGS_M; ++fm) {
#pragma unroll
        for (int fn = 0; fn < FRAGS_N; ++fn) {
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const int64_t m = m0 + WARP_M * wm + 16 * fm + g + 8 * (r / 2);
                const int64_t n = n0 + WARP_N * wn + 8 * fn + 2 * t + r % 2;
                if (m < M && n < N) dst[n * M + m] = acc[fm][fn][r];
            }
        }
    }
}

// grid = (ceil(N / TILE_N), ceil(M / TILE_M)): the column tiles of one weight tile run side by side,
// so the weight tile they share is fetched from DRAM about once. Two stages in shared memory: the
// copies of stage s + 1 are in flight while the warps multiply stage s. Warp (wm, wn) owns output rows
// m0 + 32 wm .. + 31 and columns n0 + 32 wn .. + 31: per weight block, 2 x 4 mma tiles whose A
// fragments it unpacks from the raw blocks (unpack_pair) and whose int32 sums it scales into f32
// accumulators with matvec_q_kernel's arithmetic. At most 128 registers: four CUDA blocks an SM.
template <typename Block>
__global__ void __launch_bounds__(THREADS, 4)
    matmul_q_kernel(const uint8_t* w, int64_t w_row_bytes, int64_t M, int64_t N, int64_t n_blk, ActQ act,
                    float* dst) {
    constexpr bool MIN = BlockTraits<Block>::act == ActQuant::Q8_1;
    constexpr int BYTES = BlockTraits<Block>::bytes;
    __shared__ QStage<Block> st[2];

    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const int g = lane / 4, t = lane % 4;
    const int wm = warp / WARPS_N, wn = warp % WARPS_N;
    const int64_t n0 = int64_t(blockIdx.x) * TILE_N, m0 = int64_t(blockIdx.y) * TILE_M;
    const int64_t n_stages = (n_blk + STAGE_BLOCKS - 1) / STAGE_BLOCKS;

    issue_stage<Block>(st[0], w, w_row_bytes, M, N, n_blk, m0, n0, 0, act);
    cp_async_commit();
    float acc[FRAGS_M][FRAGS_N][4] = {};
    for (int64_t s = 0; s < n_stages; ++s) {
        next_stage(s, n_stages, [&](int64_t i) {
            issue_stage<Block>(st[i % 2], w, w_row_bytes, M, N, n_blk, m0, n0, i * STAGE_BLOCKS, act);
        });
        const QStage<Block>& cur = st[s % 2];
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

    store_tile(acc, dst, M, N, m0, n0, wm, wn, g, t);
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
constexpr int F_ROW = F_STAGE_K + 8;           // a tile row in shared memory: 144 bytes, 36 words apart,
                                               // so a fragment load (8 rows x 4 words) hits 32 banks
template <typename T>
struct FloatStage {
    alignas(16) T w[TILE_M][F_ROW];
    alignas(16) T x_hi[TILE_N][F_ROW];
    alignas(16) T x_lo[TILE_N][F_ROW];
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

// K values k0 .. k0 + 63 of weight rows m0 .. m0 + 63 and of the hi / lo activation rows n0 .. n0 + 63
// into st with cp.async (the caller commits), 16 bytes a copy (K % 8 == 0, rows 16-byte aligned:
// matmul_float_fits). Eight consecutive threads copy one row's 128 bytes, so a warp's copy covers 4
// rows x 128 contiguous bytes. Outside the matrices: zeros.
template <typename T>
__device__ __forceinline__ void issue_float_stage(FloatStage<T>& st, const char* w, int64_t w_row_bytes, const T* hi,
                                                  const T* lo, int64_t K, int64_t M, int64_t N, int64_t m0, int64_t n0,
                                                  int64_t k0) {
    constexpr int VECS = F_STAGE_K / 8;         // 16-byte vectors a row
    constexpr int ROWS_AT_ONCE = THREADS / VECS;  // rows one pass of the block covers
    const int r0 = threadIdx.x / VECS, c = 8 * (threadIdx.x % VECS);
    const int64_t k = k0 + c;
    const bool k_in = k < K;
#pragma unroll
    for (int it = 0; it < TILE_M / ROWS_AT_ONCE; ++it) {
        const int row = r0 + ROWS_AT_ONCE * it;
        const bool wv = k_in && m0 + row < M, xv = k_in && n0 + row < N;
        const T* wp = reinterpret_cast<const T*>(w + (m0 + row) * w_row_bytes) + k;
        const int64_t x_at = (n0 + row) * K + k;
        cp_async16_or_zero(&st.w[row][c], wv ? wp : reinterpret_cast<const T*>(w), wv);
        cp_async16_or_zero(&st.x_hi[row][c], xv ? hi + x_at : hi, xv);
        cp_async16_or_zero(&st.x_lo[row][c], xv ? lo + x_at : lo, xv);
    }
}

// grid and warps as matmul_q_kernel, two stages in dynamic shared memory (55 KB) with the copies of
// stage s + 1 in flight while the warps multiply stage s: warp (wm, wn) owns 32 x 32 outputs, 2 x 4
// mma tiles, each fed twice per K step (hi and lo activations).
template <typename T>
__global__ void __launch_bounds__(THREADS, 4)
    matmul_float_kernel(const char* w, int64_t w_row_bytes, const T* hi, const T* lo, int64_t K, int64_t M,
                        int64_t N, float* dst) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    FloatStage<T>* st = reinterpret_cast<FloatStage<T>*>(smem_raw);
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const int g = lane / 4, t = lane % 4;
    const int wm = warp / WARPS_N, wn = warp % WARPS_N;
    const int64_t n0 = int64_t(blockIdx.x) * TILE_N, m0 = int64_t(blockIdx.y) * TILE_M;
    const int64_t n_stages = (K + F_STAGE_K - 1) / F_STAGE_K;
    auto word = [](const T* p) { return *reinterpret_cast<const uint32_t*>(p); };

    issue_float_stage<T>(st[0], w, w_row_bytes, hi, lo, K, M, N, m0, n0, 0);
    cp_async_commit();
    float acc[FRAGS_M][FRAGS_N][4] = {};
    for (int64_t s = 0; s < n_stages; ++s) {
        next_stage(s, n_stages, [&](int64_t i) {
            issue_float_stage<T>(st[i % 2], w, w_row_bytes, hi, lo, K, M, N, m0, n0, i * F_STAGE_K);
        });
        const FloatStage<T>& cur = st[s % 2];
#pragma unroll
        for (int ks = 0; ks < F_STAGE_K; ks += 16) {
            uint32_t a[FRAGS_M][4];
#pragma unroll
            for (int fm = 0; fm < FRAGS_M; ++fm) {
                const int row = WARP_M * wm + 16 * fm + g;
                a[fm][0] = word(&cur.w[row][ks + 2 * t]);
                a[fm][1] = word(&cur.w[row + 8][ks + 2 * t]);
                a[fm][2] = word(&cur.w[row][ks + 2 * t + 8]);
                a[fm][3] = word(&cur.w[row + 8][ks + 2 * t + 8]);
            }
#pragma unroll
            for (int fn = 0; fn < FRAGS_N; ++fn) {
                const int col = WARP_N * wn + 8 * fn + g;
                const uint32_t xh[2] = {word(&cur.x_hi[col][ks + 2 * t]), word(&cur.x_hi[col][ks + 2 * t + 8])};
                const uint32_t xl[2] = {word(&cur.x_lo[col][ks + 2 * t]), word(&cur.x_lo[col][ks + 2 * t + 8])};
#pragma unroll
                for (int fm = 0; fm < FRAGS_M; ++fm) {
                    mma_16816<T>(acc[fm][fn], a[fm], xh);
                    mma_16816<T>(acc[fm][fn], a[fm], xl);
                }
            }
        }
        __syncthreads();  // stage s is consumed before the next iteration copies stage s + 2 over it
    }
    store_tile(acc, dst, M, N, m0, n0, wm, wn, g, t);
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

    const int64_t m_tiles = ceil_div(M, TILE_M);
    MF_ASSERT_MSG(m_tiles <= 65535, "launch_matmul_q: more weight rows than grid.y allows");
    const dim3 grid(grid_x(ceil_div(N, TILE_N)), unsigned(m_tiles));
    matmul_q_kernel<Block><<<grid, THREADS, 0, stream>>>(static_cast<const uint8_t*>(w), sw.nb[1], M, N,
                                                         sw.ne[0] / QK, act, dst);
    CUDA_CHECK_LAUNCH();
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
    return two_d && packed && aligned && sw.ne[0] == sx.ne[0] && sw.ne[0] % 8 == 0 && sw.ne[1] <= 65535 * TILE_M;
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
    constexpr size_t smem = 2 * sizeof(FloatStage<T>);
    static const bool attr = [] {
        CUDA_CHECK(
            cudaFuncSetAttribute(matmul_float_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
        return true;
    }();
    (void)attr;
    const dim3 grid(grid_x(ceil_div(N, TILE_N)), unsigned(ceil_div(M, TILE_M)));
    matmul_float_kernel<T><<<grid, THREADS, smem, stream>>>(static_cast<const char*>(w), sw.nb[1], hi, lo, K, M, N,
                                                            dst);
    CUDA_CHECK_LAUNCH();
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
