// MUL_MAT for decode: one warp per output row reads the weight row once with 16-byte coalesced loads,
// dequantizes in registers and reduces with warp shuffles. It loops over the activation columns in
// groups of MATVEC_COLS, re-reading the weight row (from L1/L2) per group: simple and correct for
// N > 1; prefill-sized N of the 32-element block types goes to the tensor-core kernel (cuda/matmul).
#include "cuda/matvec.cuh"

#include "cuda/act_quant.cuh"
#include "cuda/matvec_dot.cuh"

namespace mf {

namespace {

constexpr int MATVEC_COLS = 4;   // activation columns served by one pass over a weight row

// The weight row of output row m in batch (c2, c3): weight batch = activation batch / broadcast ratio.
__device__ __forceinline__ const char* weight_row(const char* w, const Shape4& sw, const Shape4& sx, int64_t m,
                                                  int64_t c2, int64_t c3) {
    const int64_t r2 = sx.ne[2] / sw.ne[2], r3 = sx.ne[3] / sw.ne[3];
    return w + m * sw.nb[1] + (c2 / r2) * sw.nb[2] + (c3 / r3) * sw.nb[3];
}

// grid.x = ceil(M / MATVEC_WARPS) * C2 * C3. VEC: every lane moves 16 bytes per load (needs aligned
// rows and K % (16 / sizeof(T)) == 0); otherwise one element per lane per step, still coalesced.
template <typename T, bool VEC>
__global__ void __launch_bounds__(MATVEC_WARPS* WARP_SIZE)
    matvec_float_kernel(const char* w, Shape4 sw, const char* x, Shape4 sx, float* dst, int64_t m_blocks) {
    begin_overlapped_kernel();
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const int64_t K = sw.ne[0], M = sw.ne[1], N = sx.ne[1];
    const int64_t m = (blockIdx.x % m_blocks) * MATVEC_WARPS + warp;
    const int64_t batch = blockIdx.x / m_blocks;
    if (m >= M) return;  // warp-uniform, so the shuffles below always see full warps
    const int64_t c2 = batch % sx.ne[2], c3 = batch / sx.ne[2];
    const T* w_row = reinterpret_cast<const T*>(weight_row(w, sw, sx, m, c2, c3));
    const char* x_batch = x + c2 * sx.nb[2] + c3 * sx.nb[3];
    float* dst_batch = dst + batch * N * M;

    for (int64_t n0 = 0; n0 < N; n0 += MATVEC_COLS) {
        const int ncols = int(N - n0 < MATVEC_COLS ? N - n0 : MATVEC_COLS);
        const float* x_cols[MATVEC_COLS];
#pragma unroll
        for (int c = 0; c < MATVEC_COLS; ++c)
            x_cols[c] = reinterpret_cast<const float*>(x_batch + (n0 + (c < ncols ? c : 0)) * sx.nb[1]);
        float acc[MATVEC_COLS] = {};
        if (VEC) {
            constexpr int VW = 16 / sizeof(T);
            for (int64_t k = lane * VW; k < K; k += WARP_SIZE * VW) {
                float wv[VW];
                load16(w_row + k, wv);
#pragma unroll
                for (int c = 0; c < MATVEC_COLS; ++c) {
                    if (c >= ncols) break;
#pragma unroll
                    for (int v = 0; v < VW; v += 4) {
                        const float4 xv = *reinterpret_cast<const float4*>(x_cols[c] + k + v);
                        acc[c] += wv[v] * xv.x + wv[v + 1] * xv.y + wv[v + 2] * xv.z + wv[v + 3] * xv.w;
                    }
                }
            }
        } else {
            for (int64_t k = lane; k < K; k += WARP_SIZE) {
                const float wv = load_f32(w_row + k);
#pragma unroll
                for (int c = 0; c < MATVEC_COLS; ++c)
                    if (c < ncols) acc[c] += wv * x_cols[c][k];
            }
        }
#pragma unroll
        for (int c = 0; c < MATVEC_COLS; ++c) {
            if (c >= ncols) break;
            const float v = warp_sum(acc[c]);
            if (lane == 0) dst_batch[(n0 + c) * M + m] = v;
        }
    }
}

// Decode (one activation column) with f32 weights and few rows, as a MoE router (64 rows of 2048):
// one CUDA block a row, its warps splitting K, so the rows spread over as many SMs as there are rows
// instead of one SM per MATVEC_WARPS rows; each thread asks for its first 16 bytes of weights (which
// nothing writes) before it waits for the kernel before it.
__global__ void __launch_bounds__(MATVEC_WARPS* WARP_SIZE)
    matvec_f32_split_kernel(const char* w, Shape4 sw, const char* x, Shape4 sx, float* dst) {
    __shared__ float partial[MATVEC_WARPS];
    constexpr int64_t STEP = MATVEC_WARPS * WARP_SIZE * 4;
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const int64_t K = sw.ne[0], M = sw.ne[1];
    const int64_t m = blockIdx.x % M, batch = blockIdx.x / M;
    const int64_t c2 = batch % sx.ne[2], c3 = batch / sx.ne[2];
    const float* w_row = reinterpret_cast<const float*>(weight_row(w, sw, sx, m, c2, c3));
    const float* xr = reinterpret_cast<const float*>(x + c2 * sx.nb[2] + c3 * sx.nb[3]);
    const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    int64_t k = int64_t(threadIdx.x) * 4;
    float4 wv = k < K ? *reinterpret_cast<const float4*>(w_row + k) : zero;
    begin_overlapped_kernel();
    float acc = 0.0f;
    for (; k < K; k += STEP) {
        const float4 next = k + STEP < K ? *reinterpret_cast<const float4*>(w_row + k + STEP) : zero;
        const float4 xv = *reinterpret_cast<const float4*>(xr + k);
        acc += wv.x * xv.x + wv.y * xv.y + wv.z * xv.z + wv.w * xv.w;
        wv = next;
    }
    acc = warp_sum(acc);
    if (lane == 0) partial[warp] = acc;
    __syncthreads();
    if (warp == 0) {
        const float v = warp_sum(lane < MATVEC_WARPS ? partial[lane] : 0.0f);
        if (lane == 0) dst[batch * M + m] = v;
    }
}

// The grid of a kernel that takes row groups from blockIdx.x and x's batch dims (c2, c3) from y and z:
// no block divides its index (a 64-bit division is a ~100-instruction call, a 32-bit one ~25).
dim3 matvec_grid(int64_t m_groups, const Shape4& sx) {
    MF_ASSERT_MSG(sx.ne[2] <= 65535 && sx.ne[3] <= 65535, "matvec: batch dims beyond a grid's y and z");
    return dim3(grid_x(m_groups), unsigned(sx.ne[2]), unsigned(sx.ne[3]));
}

// Decode (one activation column) with 16-bit weights on 16-byte aligned rows: each warp takes R rows,
// every lane 16 bytes of each per step, so one activation load (8 floats, from L1) serves R rows and
// R loads of weights are in flight per step; no column loop, one accumulator per row.
template <typename T, int R>
__global__ void __launch_bounds__(MATVEC_WARPS* WARP_SIZE)
    matvec_half_decode_kernel(const char* w, Shape4 sw, const char* x, Shape4 sx, float* dst) {
    begin_overlapped_kernel();
    constexpr int VW = 16 / sizeof(T);
    static_assert(VW == 8, "16-bit weights");
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const int64_t K = sw.ne[0], M = sw.ne[1];
    const int64_t m0 = (int64_t(blockIdx.x) * MATVEC_WARPS + warp) * R;  // grid: matvec_grid
    const int64_t c2 = blockIdx.y, c3 = blockIdx.z, batch = c2 + sx.ne[2] * c3;
    if (m0 >= M) return;  // warp-uniform
    const T* rows[R];
#pragma unroll
    for (int r = 0; r < R; ++r)
        rows[r] = reinterpret_cast<const T*>(weight_row(w, sw, sx, m0 + r < M ? m0 + r : M - 1, c2, c3));
    const float* xr = reinterpret_cast<const float*>(x + c2 * sx.nb[2] + c3 * sx.nb[3]);
    float acc[R] = {};
    for (int64_t k = lane * VW; k < K; k += WARP_SIZE * VW) {
        const float4 x0 = *reinterpret_cast<const float4*>(xr + k);
        const float4 x1 = *reinterpret_cast<const float4*>(xr + k + 4);
#pragma unroll
        for (int r = 0; r < R; ++r) {
            float wv[VW];
            load16(rows[r] + k, wv);
            acc[r] += wv[0] * x0.x + wv[1] * x0.y + wv[2] * x0.z + wv[3] * x0.w + wv[4] * x1.x + wv[5] * x1.y +
                      wv[6] * x1.z + wv[7] * x1.w;
        }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const float v = warp_sum(acc[r]);
        if (lane == 0 && m0 + r < M) dst[batch * M + m0 + r] = v;
    }
}

// ---- activation quantizers (the ActQ layout is in cuda/act_quant.cuh) ----------------------------

// The 32-element block a lane of an 8-lanes-a-block quantizer works on: warps take 4 blocks each,
// numbered row-major over the rows of x (block b: row b / blocks_per_row); e0 is the lane's first
// element in its row. `warp_done`: the warp's first block is past the end (warp-uniform).
struct LaneBlock {
    uint32_t block, row;
    int e0;
    bool in, warp_done;
};

__device__ __forceinline__ LaneBlock lane_block(uint32_t n_blocks, uint32_t blocks_per_row) {
    const int lane = threadIdx.x % WARP_SIZE;
    LaneBlock lb;
    lb.block = (blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE) * 4 + lane / 8;
    lb.warp_done = lb.block - lane / 8 >= n_blocks;
    lb.in = lb.block < n_blocks;
    lb.row = lb.in ? lb.block / blocks_per_row : 0;
    lb.e0 = QK * int(lb.in ? lb.block % blocks_per_row : 0) + 4 * (lane % 8);
    return lb;
}

// Eight lanes per 32-element block, four consecutive elements a lane, so a warp quantizes four
// blocks with one 4-byte store a lane. Blocks are numbered row-major over the rows of x (block b:
// row b / blocks_per_row); EVEN: the rows are evenly spaced, row_bytes apart, with packed elements
// (most calls), so a row's offset is one multiply instead of Shape4's divisions.
template <bool WITH_SUM, bool EVEN>
__global__ void quantize_act_q8_kernel(const char* x, Shape4 sx, int64_t row_bytes, ActQ act, uint32_t n_blocks,
                                       uint32_t blocks_per_row) {
    begin_overlapped_kernel();  // and the matvec after it may start loading weights
    const LaneBlock lb = lane_block(n_blocks, blocks_per_row);
    if (lb.warp_done) return;
    float v[4];
    if constexpr (EVEN) {
        const float* src = reinterpret_cast<const float*>(x + int64_t(lb.row) * row_bytes) + lb.e0;
#pragma unroll
        for (int i = 0; i < 4; ++i) v[i] = lb.in ? src[i] : 0.0f;
    } else {
        const char* src = x + sx.row_offset(lb.row);
#pragma unroll
        for (int i = 0; i < 4; ++i) v[i] = lb.in ? *reinterpret_cast<const float*>(src + (lb.e0 + i) * sx.nb[0]) : 0.0f;
    }
    quantize_block_8_lanes<WITH_SUM>(v, act, lb.block, lb.in);
}

// As quantize_act_q8_kernel<WITH_SUM, true>, of x = silu(gate) * up computed on the fly (SWIGLU's
// formula, silu_f32): gate and up rows evenly spaced, gate_row_bytes and up_row_bytes apart. The
// SWIGLU node feeding a quantized MUL_MAT is then never written (CudaBackend::run_nodes).
template <bool WITH_SUM>
__global__ void quantize_act_swiglu_kernel(const char* gate, int64_t gate_row_bytes, const char* up,
                                           int64_t up_row_bytes, ActQ act, uint32_t n_blocks,
                                           uint32_t blocks_per_row) {
    begin_overlapped_kernel();
    const LaneBlock lb = lane_block(n_blocks, blocks_per_row);
    if (lb.warp_done) return;
    const float* g = reinterpret_cast<const float*>(gate + int64_t(lb.row) * gate_row_bytes) + lb.e0;
    const float* u = reinterpret_cast<const float*>(up + int64_t(lb.row) * up_row_bytes) + lb.e0;
    float v[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = lb.in ? silu_f32(g[i]) * u[i] : 0.0f;
    quantize_block_8_lanes<WITH_SUM>(v, act, lb.block, lb.in);
}

// RMS_NORM, then MUL by a weight row w, fused into the quantization: act as quantize_activations
// would leave it for x = (x_in * scale) * w, rounded as the two kernels round it (rms_norm_kernel's
// scale, the same block size and so the same sum). One CUDA block a row of x_in (rows packed, any
// strides between them); each warp quantizes four 32-element blocks a pass, 8 lanes a block. The
// RMS_NORM and MUL nodes feeding a quantized MUL_MAT are then never written (CudaBackend::run_nodes),
// unless out asks for the product as well (f32, rows of ne0 packed; each element is written by the
// thread that read it, so out may be x exactly).
template <bool WITH_SUM, bool WITH_OUT>
__global__ void quantize_act_rms_norm_kernel(const char* x, Shape4 sx, float eps, const float* w, ActQ act,
                                             uint32_t blocks_per_row, float* out) {
    begin_overlapped_kernel();
    const uint32_t row = blockIdx.x;
    const float* x_row = reinterpret_cast<const float*>(x + sx.row_offset(row));
    const float scale = row_rms_scale(x_row, sx.ne[0], eps);
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const uint32_t step = 4 * (blockDim.x / WARP_SIZE);
    for (uint32_t b0 = 4 * warp; b0 < blocks_per_row; b0 += step) {  // warp-uniform
        const uint32_t kb = b0 + lane / 8;
        const bool in = kb < blocks_per_row;
        const int e0 = QK * int(in ? kb : 0) + 4 * (lane % 8);
        float v[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) v[i] = in ? __fmul_rn(x_row[e0 + i] * scale, w[e0 + i]) : 0.0f;
        if (WITH_OUT && in) {
            float* o = out + int64_t(row) * sx.ne[0] + e0;
#pragma unroll
            for (int i = 0; i < 4; ++i) o[i] = v[i];
        }
        quantize_block_8_lanes<WITH_SUM>(v, act, row * blocks_per_row + kb, in);
    }
}

// Q8_K: one warp per 256-element super-block, lane j quantizing elements 8j .. 8j + 7.
__global__ void quantize_act_q8_k_kernel(const char* x, Shape4 sx, ActQ act, int64_t n_blocks) {
    begin_overlapped_kernel();
    const int64_t block = blockIdx.x * int64_t(blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (block >= n_blocks) return;  // warp-uniform
    const int lane = threadIdx.x % WARP_SIZE;
    const int64_t blocks_per_row = sx.ne[0] / QK_K;
    const int64_t row = block / blocks_per_row, kb = block % blocks_per_row;
    const float* src = reinterpret_cast<const float*>(x + sx.row_offset(row)) + kb * QK_K + 8 * lane;
    float v[8];
    int q[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = src[i];
    const float d = quantize_q8_k_warp(v, q);
    int2 packed = {0, 0};
    int sum = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        packed.x |= (q[i] & 0xFF) << (8 * i);
        packed.y |= (q[i + 4] & 0xFF) << (8 * i);
        sum += q[i] + q[i + 4];
    }
    *reinterpret_cast<int2*>(act.q + block * QK_K + 8 * lane) = packed;
    // Lanes 4g .. 4g + 3 hold the 32 quants of sub-block g.
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    if (lane % 4 == 0) act.s[block * (QK_K / QK) + lane / 4] = float(sum);
    if (lane == 0) act.d[block] = d;
}

// A warp quantizes one activation row of K <= kMatvecQuantizeInsideMaxK packed f32 values itself
// (matvec_q_kernel's QX), into `act` in shared memory as row 0: quantize_act_q8_kernel's blocks and
// bits, 8 lanes a block, every load issued before the first block is quantized.
template <bool WITH_SUM>
__device__ __forceinline__ void quantize_row_in_warp(const float* x_row, int n_blk, const ActQ& act) {
    constexpr int PASSES = kMatvecQuantizeInsideMaxK / (4 * QK);  // four blocks a pass
    const int lane = threadIdx.x % WARP_SIZE;
    float v[PASSES][4];
#pragma unroll
    for (int p = 0; p < PASSES; ++p) {
        const int kb = 4 * p + lane / 8;
        const float* src = x_row + QK * kb + 4 * (lane % 8);
#pragma unroll
        for (int i = 0; i < 4; ++i) v[p][i] = kb < n_blk ? src[i] : 0.0f;
    }
#pragma unroll
    for (int p = 0; p < PASSES; ++p) {
        if (4 * p >= n_blk) break;  // warp-uniform
        const int kb = 4 * p + lane / 8;
        quantize_block_8_lanes<WITH_SUM>(v[p], act, uint32_t(kb), kb < n_blk);
    }
    __syncwarp();  // the row visible to the whole warp
}

// ---- legacy weights (32-element blocks) ----------------------------------------------------------

// A lane owns two adjacent blocks of a 64-block chunk. Two blocks are BYTES / 2 words (9 for Q4_0,
// 17 for Q8_0, 11 for Q5_0), so lane i reads words BYTES/2 * i ... of the staged chunk as whole words,
// and for those odd word counts the 32 lanes hit 32 different banks on every load. The kernel this
// replaced gave each lane one block and read it from shared memory with 2-byte loads at an 18-byte
// stride (9 loads a Q4_0 block, each 4-5 way bank-conflicted) and re-read the activations for every
// row: ~8 bytes of weights per L1 wavefront, a ceiling near the ~1.6 TB/s it measured
// (docs/PERFORMANCE.md, "decode matvec: L1 wavefronts").
constexpr int PAIR_CHUNK = 2 * WARP_SIZE;  // blocks per chunk

template <typename Block, int R, bool STAGED>
constexpr int matvec_q_stage_bytes() {
    return STAGED ? MATVEC_WARPS * 2 * R * PAIR_CHUNK * BlockTraits<Block>::bytes : 0;
}

// Blocks an SM should hold for decode (NC = 1): as many as the staging buffers fit in its 227 KB of
// shared memory (each block also reserves 1 KB), at most 6 (80 registers a thread; 8 blocks, 64
// registers, made some block types spill). The register cap this sets is what lets them all in:
// uncapped, R = 4 took 167 registers a thread, three blocks an SM. NC = 4 (2-15 columns) is left
// uncapped: capped, it spills.
template <typename Block, int R, bool STAGED, int NC>
constexpr int matvec_q_min_blocks() {
    const int fit = 227 * 1024 / (matvec_q_stage_bytes<Block, R, STAGED>() + 1024);
    return NC > 1 ? 1 : fit < 6 ? fit : 6;
}

// Grid ceil(M / (MATVEC_WARPS * R)) x C2 x C3 (matvec_grid). Each warp owns R consecutive rows (a short last
// group re-reads row M - 1 and does not store it) and walks them in 64-block chunks, NC activation
// columns a pass (1 for decode: with 4, the idle columns' registers took R = 4 to 234 a thread).
// STAGED (rows 16-byte aligned): the R rows' next chunk is copied into shared memory by cp.async
// while the current one is used, so a warp keeps R chunks in flight without holding them in
// registers; a lane's activation blocks are loaded once per chunk and serve all R rows. Unaligned
// rows and the tail (< 64 blocks) read global memory directly, a lane's two blocks at a time.
// Launched overlapped: the first chunk's weights are requested before it waits for the activations.
// QX (decode, K <= kMatvecQuantizeInsideMaxK, unstaged): x_f32 is the f32 activations (sx's strides) and
// act is not read; each warp quantizes its batch's row of x into shared memory first, so no quantizer
// launch precedes this one.
template <typename Block, int R, bool STAGED, int NC, bool QX>
__global__ void __launch_bounds__(MATVEC_WARPS* WARP_SIZE, (matvec_q_min_blocks<Block, R, STAGED, NC>()))
    matvec_q_kernel(const char* w, Shape4 sw, Shape4 sx, ActQ act, const char* x_f32, float* dst, const float* add) {
    static_assert(!QX || (NC == 1 && !STAGED), "QX: decode's one column, no staged chunks");
    constexpr int BYTES = BlockTraits<Block>::bytes;
    constexpr int PAIR_WORDS = BYTES / 2;
    constexpr int CHUNK_VECS = PAIR_CHUNK * BYTES / 16;
    static_assert(PAIR_CHUNK * BYTES % 16 == 0, "a chunk must be whole 16-byte vectors");
    __shared__ uint4 stage[MATVEC_WARPS][STAGED ? 2 : 1][STAGED ? R : 1][STAGED ? CHUNK_VECS : 1];
    constexpr int QX_K = QX ? kMatvecQuantizeInsideMaxK : QK;
    __shared__ __align__(16) int8_t qx_q[QX ? MATVEC_WARPS : 1][QX_K];
    __shared__ float qx_d[QX ? MATVEC_WARPS : 1][QX_K / QK], qx_s[QX ? MATVEC_WARPS : 1][QX_K / QK];

    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const int64_t K = sw.ne[0], M = sw.ne[1], N = sx.ne[1];
    const int64_t n_blk = K / QK;
    const int64_t m0 = (int64_t(blockIdx.x) * MATVEC_WARPS + warp) * R;  // grid: matvec_grid
    const int64_t c2 = blockIdx.y, c3 = blockIdx.z, batch = c2 + sx.ne[2] * c3;
    if (m0 >= M) return;  // warp-uniform
    const uint8_t* rows[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int64_t m = m0 + r < M ? m0 + r : M - 1;
        rows[r] = reinterpret_cast<const uint8_t*>(weight_row(w, sw, sx, m, c2, c3));
    }
    float* dst_batch = dst + batch * N * M;
    const float* add_batch = add ? add + batch * N * M : nullptr;
    const int64_t n_chunks = STAGED ? n_blk / PAIR_CHUNK : 0;

    for (int64_t n0 = 0; n0 < N; n0 += NC) {
        const int ncols = int(N - n0 < NC ? N - n0 : NC);
        const int64_t act_row0 = batch * N + n0;  // activation rows are in (n, c2, c3) order
        float acc[R][NC] = {};
        if constexpr (STAGED) {
            auto issue = [&](int64_t c, int buf) {
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    const uint8_t* src = rows[r] + c * PAIR_CHUNK * BYTES;
                    for (int i = lane; i < CHUNK_VECS; i += WARP_SIZE) cp_async16(&stage[warp][buf][r][i], src + 16 * i);
                }
                cp_async_commit();
            };
            if (n_chunks > 0) issue(0, 0);
            begin_overlapped_kernel();  // the first chunk of weights is on its way; the activations may not be yet
            for (int64_t c = 0; c < n_chunks; ++c) {
                const int buf = int(c & 1);
                if (c + 1 < n_chunks) {
                    issue(c + 1, buf ^ 1);
                    cp_async_wait<1>();
                } else {
                    cp_async_wait<0>();
                }
                __syncwarp();
                const int64_t blk = c * PAIR_CHUNK + 2 * lane;
#pragma unroll
                for (int col = 0; col < NC; ++col) {
                    if (col >= ncols) break;
                    const ActBlocks<Block, 2> x(act, (act_row0 + col) * n_blk + blk);
#pragma unroll
                    for (int r = 0; r < R; ++r) {
                        uint32_t words[PAIR_WORDS];
                        const uint32_t* sw32 = reinterpret_cast<const uint32_t*>(stage[warp][buf][r]) + PAIR_WORDS * lane;
#pragma unroll
                        for (int j = 0; j < PAIR_WORDS; ++j) words[j] = sw32[j];
                        acc[r][col] += block_dot<Block>(unpack_block(Block{}, RegBytes{words, 0}), x.q, x.d[0], x.s[0],
                                                        x.o[0]);
                        acc[r][col] += block_dot<Block>(unpack_block(Block{}, RegBytes{words, BYTES}), x.q + 8, x.d[1],
                                                        x.s[1], x.o[1]);
                    }
                }
                __syncwarp();  // the next issue overwrites this buffer
            }
        }
        begin_overlapped_kernel();  // unstaged: nothing to start first (a no-op after the one above)
        ActQ a = act;
        int64_t a_row0 = act_row0;
        if constexpr (QX) {
            a = {qx_q[warp], qx_d[warp], qx_s[warp]};
            a_row0 = 0;
            quantize_row_in_warp<BlockTraits<Block>::act == ActQuant::Q8_1>(
                reinterpret_cast<const float*>(x_f32 + sx.row_offset(act_row0)), int(n_blk), a);
        }
        for (int64_t b0 = n_chunks * PAIR_CHUNK; b0 < n_blk; b0 += PAIR_CHUNK) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int64_t blk = b0 + 2 * lane + h;
                if (blk >= n_blk) break;
#pragma unroll
                for (int col = 0; col < NC; ++col) {
                    if (col >= ncols) break;
                    const ActBlocks<Block, 1> x(a, (a_row0 + col) * n_blk + blk);
#pragma unroll
                    for (int r = 0; r < R; ++r)
                        acc[r][col] +=
                            block_dot<Block>(load_block(Block{}, rows[r] + blk * BYTES), x.q, x.d[0], x.s[0], x.o[0]);
                }
            }
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
#pragma unroll
            for (int col = 0; col < NC; ++col) {
                if (col >= ncols) break;
                const float v = warp_sum(acc[r][col]);
                const int64_t i = (n0 + col) * M + m0 + r;
                if (lane == 0 && m0 + r < M) dst_batch[i] = add_batch ? v + add_batch[i] : v;
            }
        }
    }
}

// Rows per warp for the legacy-block kernel: as many as keep at least MIN_WARPS_PER_SM warps per SM
// busy (more rows a warp share its activation loads; fewer warps leave SMs idle), capped so two
// stages of R chunks for 4 warps fit in 48 KB of static shared memory.
constexpr int MIN_WARPS_PER_SM = 8;

int sm_count() {
    static const int n = [] {
        int dev = 0, v = 0;
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev));
        return v;
    }();
    return n;
}

template <typename Block>
constexpr int max_rows_per_warp() {
    return MATVEC_WARPS * 2 * 4 * (PAIR_CHUNK * BlockTraits<Block>::bytes) <= 48 * 1024 ? 4 : 2;
}

// x_inside: the f32 activations, which each warp quantizes itself (matvec_q_kernel's QX); null when
// act holds them quantized.
template <typename Block, int R>
void launch_matvec_q_rows(const char* w, const Shape4& sw, const Shape4& sx, const ActQ& act, const float* x_inside,
                          float* dst, const float* add, bool aligned, cudaStream_t stream) {
    const dim3 grid = matvec_grid(ceil_div(sw.ne[1], MATVEC_WARPS * R), sx);
    const dim3 block(MATVEC_WARPS * WARP_SIZE);
    // matvec_q_min_blocks counts on all of an SM's shared memory (the default carveout favours L1).
    static const bool carveout = [] {
        for (auto k : {matvec_q_kernel<Block, R, true, 1, false>, matvec_q_kernel<Block, R, false, 1, false>,
                       matvec_q_kernel<Block, R, true, MATVEC_COLS, false>,
                       matvec_q_kernel<Block, R, false, MATVEC_COLS, false>, matvec_q_kernel<Block, R, false, 1, true>})
            CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout,
                                            cudaSharedmemCarveoutMaxShared));
        return true;
    }();
    (void)carveout;
    auto kernel = x_inside         ? matvec_q_kernel<Block, R, false, 1, true>
                  : sx.ne[1] == 1 ? (aligned ? matvec_q_kernel<Block, R, true, 1, false>
                                             : matvec_q_kernel<Block, R, false, 1, false>)
                                  : (aligned ? matvec_q_kernel<Block, R, true, MATVEC_COLS, false>
                                             : matvec_q_kernel<Block, R, false, MATVEC_COLS, false>);
    launch_overlapped(kernel, grid, block, 0, stream, w, sw, sx, act, reinterpret_cast<const char*>(x_inside), dst,
                      add);
}

template <typename Block>
void launch_matvec_q_legacy(const char* w, const Shape4& sw, const Shape4& sx, const ActQ& act,
                            const float* x_inside, float* dst, const float* add, bool aligned, cudaStream_t stream) {
    const int64_t warps_wanted = int64_t(MIN_WARPS_PER_SM) * sm_count();
    const int64_t rows = sw.ne[1] * sx.ne[2] * sx.ne[3];
    if (max_rows_per_warp<Block>() >= 4 && rows / 4 >= warps_wanted) {
        launch_matvec_q_rows<Block, max_rows_per_warp<Block>()>(w, sw, sx, act, x_inside, dst, add, aligned, stream);
    } else if (rows / 2 >= warps_wanted) {
        launch_matvec_q_rows<Block, 2>(w, sw, sx, act, x_inside, dst, add, aligned, stream);
    } else {
        launch_matvec_q_rows<Block, 1>(w, sw, sx, act, x_inside, dst, add, aligned, stream);
    }
}

// ---- K-quant weights (256-element super-blocks) --------------------------------------------------

// grid.x = ceil(M / MATVEC_WARPS) * C2 * C3; lanes 4s .. 4s + 3 take super-block b0 + s of each
// 8-block step. ALIGNED (16-byte aligned rows): Q4_K / Q5_K read their blocks straight from global
// memory with 16-byte loads; Q6_K's 210-byte blocks are not 16-byte aligned, but 8 of them (1680
// bytes) are, so the warp first copies a full step into shared memory with 16-byte loads.
template <typename Block, bool ALIGNED>
__global__ void __launch_bounds__(MATVEC_WARPS* WARP_SIZE)
    matvec_k_kernel(const char* w, Shape4 sw, Shape4 sx, ActQ act, float* dst, const float* add, int64_t m_blocks) {
    begin_overlapped_kernel();
    constexpr int BYTES = BlockTraits<Block>::bytes;
    constexpr bool STAGE = ALIGNED && BYTES % 16 != 0;
    constexpr bool VEC = ALIGNED && BYTES % 16 == 0;
    constexpr int CHUNK_VECS = K_BLOCKS * BYTES / 16;
    static_assert(K_BLOCKS * BYTES % 16 == 0, "a step of super-blocks must be whole 16-byte vectors");
    __shared__ uint4 stage[MATVEC_WARPS][STAGE ? CHUNK_VECS : 1];

    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const int part = lane % K_LANES, sub = lane / K_LANES;
    const int64_t K = sw.ne[0], M = sw.ne[1], N = sx.ne[1];
    const int64_t n_sb = K / QK_K;
    const int64_t m = (blockIdx.x % m_blocks) * MATVEC_WARPS + warp;
    const int64_t batch = blockIdx.x / m_blocks;
    if (m >= M) return;  // warp-uniform
    const int64_t c2 = batch % sx.ne[2], c3 = batch / sx.ne[2];
    const uint8_t* w_row = reinterpret_cast<const uint8_t*>(weight_row(w, sw, sx, m, c2, c3));
    float* dst_batch = dst + batch * N * M;
    const float* add_batch = add ? add + batch * N * M : nullptr;

    for (int64_t n0 = 0; n0 < N; n0 += MATVEC_COLS) {
        const int ncols = int(N - n0 < MATVEC_COLS ? N - n0 : MATVEC_COLS);
        const int64_t act_row0 = batch * N + n0;
        float acc[MATVEC_COLS] = {};
        for (int64_t b0 = 0; b0 < n_sb; b0 += K_BLOCKS) {
            const int64_t sb = b0 + sub;
            const uint8_t* p = w_row + sb * BYTES;
            if (STAGE && b0 + K_BLOCKS <= n_sb)
                p = stage_chunk<CHUNK_VECS>(stage[warp], w_row + b0 * BYTES, lane) + sub * BYTES;
            if (sb < n_sb) {
                const KPart kp = load_k_part<VEC>(Block{}, p, part);
#pragma unroll
                for (int c = 0; c < MATVEC_COLS; ++c) {
                    if (c >= ncols) break;
                    acc[c] += dot_k_part(Block{}, kp, act, act_row0 + c, K, sb, part);
                }
            }
            __syncwarp();  // the next step overwrites this warp's stage
        }
#pragma unroll
        for (int c = 0; c < MATVEC_COLS; ++c) {
            if (c >= ncols) break;
            const float v = warp_sum(acc[c]);
            const int64_t i = (n0 + c) * M + m;
            if (lane == 0) dst_batch[i] = add_batch ? v + add_batch[i] : v;
        }
    }
}

void check_shapes(const Shape4& sw, const Shape4& sx) {
    MF_ASSERT(sw.ne[0] == sx.ne[0] && sx.nb[0] == sizeof(float));
    MF_ASSERT(sw.ne[2] > 0 && sw.ne[3] > 0 && sx.ne[2] % sw.ne[2] == 0 && sx.ne[3] % sw.ne[3] == 0);
}

}  // namespace

template <typename T>
void launch_matvec_float(const void* w, const Shape4& sw, const float* x, const Shape4& sx, float* dst,
                         cudaStream_t stream) {
    check_shapes(sw, sx);
    MF_ASSERT(sw.nb[0] == sizeof(T));
    const int64_t M = sw.ne[1];
    if (M == 0 || sx.nrows() == 0) return;
    const int64_t m_blocks = ceil_div(M, MATVEC_WARPS);
    const unsigned grid = grid_x(m_blocks * sx.ne[2] * sx.ne[3]);
    const bool vec = sw.ne[0] % (16 / sizeof(T)) == 0 && aligned16(w, sw) && aligned16(x, sx) && sx.nb[1] % 16 == 0;
    const char* wc = static_cast<const char*>(w);
    const char* xc = reinterpret_cast<const char*>(x);
    if constexpr (sizeof(T) == 2) {
        if (vec && sx.ne[1] == 1) {
            // Rows a warp as the legacy-block kernel chooses them: as many as keep MIN_WARPS_PER_SM.
            const int64_t rows = M * sx.ne[2] * sx.ne[3];
            const int64_t warps_wanted = int64_t(MIN_WARPS_PER_SM) * sm_count();
            const int rpw = rows / 4 >= warps_wanted ? 4 : rows / 2 >= warps_wanted ? 2 : 1;
            auto kernel = rpw == 4   ? matvec_half_decode_kernel<T, 4>
                          : rpw == 2 ? matvec_half_decode_kernel<T, 2>
                                     : matvec_half_decode_kernel<T, 1>;
            launch_overlapped(kernel, matvec_grid(ceil_div(M, MATVEC_WARPS * rpw), sx), MATVEC_WARPS * WARP_SIZE, 0,
                              stream, wc, sw, xc, sx, dst);
            CUDA_CHECK_LAUNCH();
            return;
        }
    }
    if constexpr (sizeof(T) == 4) {
        // Few rows (a router): a block a row, K split over its warps, while the rows a warp would
        // leave fewer than 4 warps an SM.
        const int64_t rows = M * sx.ne[2] * sx.ne[3];
        if (vec && sx.ne[1] == 1 && rows < 4 * int64_t(sm_count())) {
            launch_overlapped(matvec_f32_split_kernel, grid_x(rows), MATVEC_WARPS * WARP_SIZE, 0, stream, wc, sw, xc,
                              sx, dst);
            CUDA_CHECK_LAUNCH();
            return;
        }
    }
    if (vec) {
        launch_overlapped(matvec_float_kernel<T, true>, grid, MATVEC_WARPS * WARP_SIZE, 0, stream, wc, sw, xc, sx, dst,
                          m_blocks);
    } else {
        launch_overlapped(matvec_float_kernel<T, false>, grid, MATVEC_WARPS * WARP_SIZE, 0, stream, wc, sw, xc, sx, dst,
                          m_blocks);
    }
    CUDA_CHECK_LAUNCH();
}

void quantize_activations(ActQuant kind, const float* x, const Shape4& sx, const ActQ& act, cudaStream_t stream) {
    const int64_t block_elems = kind == ActQuant::Q8_K ? QK_K : QK;
    const int64_t n_blocks = sx.nrows() * (sx.ne[0] / block_elems);
    if (n_blocks == 0) return;
    constexpr int warps_per_block = 8;
    const char* xc = reinterpret_cast<const char*>(x);
    if (kind == ActQuant::Q8_K) {
        const unsigned grid = grid_x(ceil_div(n_blocks, warps_per_block));
        launch_overlapped(quantize_act_q8_k_kernel, grid, warps_per_block * WARP_SIZE, 0, stream, xc, sx, act,
                          n_blocks);
        CUDA_CHECK_LAUNCH();
        return;
    }
    MF_ASSERT_MSG(n_blocks < (int64_t(1) << 31), "quantize_activations: too many blocks");
    // Rows evenly spaced: dims 2 and 3 continue dim 1's stride (or are 1), elements packed.
    const bool even = sx.nb[0] == sizeof(float) && sx.ne[3] == 1 && (sx.ne[2] == 1 || sx.nb[2] == sx.ne[1] * sx.nb[1]);
    const unsigned grid = grid_x(ceil_div(n_blocks, 4 * warps_per_block));
    const uint32_t n = uint32_t(n_blocks), per_row = uint32_t(sx.ne[0] / QK);
    auto go = [&](auto kernel) {
        launch_overlapped(kernel, grid, warps_per_block * WARP_SIZE, 0, stream, xc, sx, sx.nb[1], act, n, per_row);
    };
    if (kind == ActQuant::Q8_1) {
        even ? go(quantize_act_q8_kernel<true, true>) : go(quantize_act_q8_kernel<true, false>);
    } else {
        even ? go(quantize_act_q8_kernel<false, true>) : go(quantize_act_q8_kernel<false, false>);
    }
    CUDA_CHECK_LAUNCH();
}

bool quantize_swiglu_fits(ActQuant kind, const Shape4& sg, const Shape4& su) {
    auto even = [](const Shape4& s) {
        return s.nb[0] == sizeof(float) && s.ne[3] == 1 && (s.ne[2] == 1 || s.nb[2] == s.ne[1] * s.nb[1]) &&
               s.nb[1] % sizeof(float) == 0;
    };
    const bool same_ne = sg.ne[0] == su.ne[0] && sg.ne[1] == su.ne[1] && sg.ne[2] == su.ne[2] && sg.ne[3] == su.ne[3];
    return kind != ActQuant::Q8_K && same_ne && sg.ne[0] % QK == 0 && even(sg) && even(su) &&
           sg.nrows() * (sg.ne[0] / QK) < (int64_t(1) << 31);
}

void quantize_swiglu_activations(ActQuant kind, const float* gate, const Shape4& sg, const float* up,
                                 const Shape4& su, const ActQ& act, cudaStream_t stream) {
    MF_ASSERT(quantize_swiglu_fits(kind, sg, su));
    const int64_t n_blocks = sg.nrows() * (sg.ne[0] / QK);
    if (n_blocks == 0) return;
    constexpr int warps_per_block = 8;
    const unsigned grid = grid_x(ceil_div(n_blocks, 4 * warps_per_block));
    const char* g = reinterpret_cast<const char*>(gate);
    const char* u = reinterpret_cast<const char*>(up);
    const uint32_t n = uint32_t(n_blocks), per_row = uint32_t(sg.ne[0] / QK);
    auto go = [&](auto kernel) {
        launch_overlapped(kernel, grid, warps_per_block * WARP_SIZE, 0, stream, g, sg.nb[1], u, su.nb[1], act, n,
                          per_row);
    };
    kind == ActQuant::Q8_1 ? go(quantize_act_swiglu_kernel<true>) : go(quantize_act_swiglu_kernel<false>);
    CUDA_CHECK_LAUNCH();
}

bool quantize_rms_norm_fits(ActQuant kind, const Shape4& sx) {
    return kind != ActQuant::Q8_K && sx.nb[0] == sizeof(float) && sx.ne[0] % QK == 0 &&
           sx.nrows() * (sx.ne[0] / QK) < (int64_t(1) << 31);
}

void quantize_rms_norm_activations(ActQuant kind, const float* x, const Shape4& sx, float eps, const float* w,
                                   const ActQ& act, cudaStream_t stream, float* out) {
    MF_ASSERT(quantize_rms_norm_fits(kind, sx));
    if (sx.nelements() == 0) return;
    const char* xc = reinterpret_cast<const char*>(x);
    const uint32_t per_row = uint32_t(sx.ne[0] / QK);
    auto go = [&](auto kernel) {
        launch_overlapped(kernel, grid_x(sx.nrows()), rms_norm_threads(sx.ne[0]), 0, stream, xc, sx, eps, w, act,
                          per_row, out);
    };
    if (out)
        kind == ActQuant::Q8_1 ? go(quantize_act_rms_norm_kernel<true, true>) : go(quantize_act_rms_norm_kernel<false, true>);
    else
        kind == ActQuant::Q8_1 ? go(quantize_act_rms_norm_kernel<true, false>)
                               : go(quantize_act_rms_norm_kernel<false, false>);
    CUDA_CHECK_LAUNCH();
}

size_t matvec_q_scratch_bytes(const Shape4& sx) {
    const size_t rows = size_t(sx.nrows());
    return align16(rows * size_t(sx.ne[0])) + 2 * rows * size_t(sx.ne[0] / QK) * sizeof(float);
}

namespace {
// One packed row of at most kMatvecQuantizeInsideMaxK elements a batch (matvec_q_kernel's QX).
bool quantize_inside_shape(const Shape4& sx) {
    return sx.ne[1] == 1 && sx.ne[0] <= kMatvecQuantizeInsideMaxK && sx.ne[0] % QK == 0 && sx.nb[0] == sizeof(float);
}
}  // namespace

bool matvec_q_quantizes_inside(DType w, const Shape4& sx) {
    const bool legacy = w == DType::Q8_0 || w == DType::Q4_0 || w == DType::Q4_1 || w == DType::Q5_0 || w == DType::Q5_1;
    return legacy && quantize_inside_shape(sx);
}

template <typename Block>
void launch_matvec_q(const void* w, const Shape4& sw, const float* x, const Shape4& sx, void* scratch,
                     size_t scratch_bytes, bool x_quantized, float* dst, cudaStream_t stream, const float* add,
                     bool quantize_inside) {
    using Traits = BlockTraits<Block>;
    check_shapes(sw, sx);
    MF_ASSERT(sw.ne[0] % Traits::elems == 0 && sw.nb[0] == Traits::bytes);
    MF_ASSERT(scratch_bytes >= matvec_q_scratch_bytes(sx) && reinterpret_cast<uintptr_t>(scratch) % 16 == 0);
    MF_ASSERT(!quantize_inside || (!x_quantized && Traits::elems == QK && quantize_inside_shape(sx)));
    const int64_t M = sw.ne[1];
    if (sx.nrows() == 0) return;
    const ActQ act = act_layout(scratch, sx);
    // Even when M == 0: a later launch may be told the scratch holds x.
    if (!x_quantized && !quantize_inside) quantize_activations(Traits::act, x, sx, act, stream);
    if (M == 0) return;

    const char* wc = static_cast<const char*>(w);
    const bool aligned = aligned16(w, sw);
    if constexpr (Traits::elems == QK_K) {
        const int64_t m_blocks = ceil_div(M, MATVEC_WARPS);
        const unsigned grid = grid_x(m_blocks * sx.ne[2] * sx.ne[3]);
        if (aligned) {
            launch_overlapped(matvec_k_kernel<Block, true>, grid, MATVEC_WARPS * WARP_SIZE, 0, stream, wc, sw, sx, act,
                              dst, add, m_blocks);
        } else {
            launch_overlapped(matvec_k_kernel<Block, false>, grid, MATVEC_WARPS * WARP_SIZE, 0, stream, wc, sw, sx, act,
                              dst, add, m_blocks);
        }
    } else {
        launch_matvec_q_legacy<Block>(wc, sw, sx, act, quantize_inside ? x : nullptr, dst, add, aligned, stream);
    }
    CUDA_CHECK_LAUNCH();
}

template void launch_matvec_float<float>(const void*, const Shape4&, const float*, const Shape4&, float*, cudaStream_t);
template void launch_matvec_float<__half>(const void*, const Shape4&, const float*, const Shape4&, float*,
                                          cudaStream_t);
template void launch_matvec_float<__nv_bfloat16>(const void*, const Shape4&, const float*, const Shape4&, float*,
                                                 cudaStream_t);
template void launch_matvec_q<BlockQ8_0>(const void*, const Shape4&, const float*, const Shape4&, void*, size_t,
                                         bool, float*, cudaStream_t, const float*, bool);
template void launch_matvec_q<BlockQ4_0>(const void*, const Shape4&, const float*, const Shape4&, void*, size_t,
                                         bool, float*, cudaStream_t, const float*, bool);
template void launch_matvec_q<BlockQ4_1>(const void*, const Shape4&, const float*, const Shape4&, void*, size_t,
                                         bool, float*, cudaStream_t, const float*, bool);
template void launch_matvec_q<BlockQ5_0>(const void*, const Shape4&, const float*, const Shape4&, void*, size_t,
                                         bool, float*, cudaStream_t, const float*, bool);
template void launch_matvec_q<BlockQ5_1>(const void*, const Shape4&, const float*, const Shape4&, void*, size_t,
                                         bool, float*, cudaStream_t, const float*, bool);
template void launch_matvec_q<BlockQ4_K>(const void*, const Shape4&, const float*, const Shape4&, void*, size_t,
                                         bool, float*, cudaStream_t, const float*, bool);
template void launch_matvec_q<BlockQ5_K>(const void*, const Shape4&, const float*, const Shape4&, void*, size_t,
                                         bool, float*, cudaStream_t, const float*, bool);
template void launch_matvec_q<BlockQ6_K>(const void*, const Shape4&, const float*, const Shape4&, void*, size_t,
                                         bool, float*, cudaStream_t, const float*, bool);

}  // namespace mf
