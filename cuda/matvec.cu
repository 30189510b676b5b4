// MUL_MAT for decode: one warp per output row reads the weight row once with 16-byte coalesced loads,
// dequantizes in registers and reduces with warp shuffles. It loops over the activation columns in
// groups of MATVEC_COLS, re-reading the weight row (from L1/L2) per group: simple and correct for
// N > 1; prefill-sized N of the 32-element block types goes to the tensor-core kernel (cuda/matmul).
#include "cuda/matvec.cuh"

#include "cuda/act_quant.cuh"
#include "cuda/moe.cuh"

namespace mf {

namespace {

constexpr int MATVEC_WARPS = 4;  // output rows per CUDA block, one warp each
constexpr int MATVEC_COLS = 4;   // activation columns served by one pass over a weight row

// True when p + every stride of a dimension that has more than one element is 16-byte aligned.
bool aligned16(const void* p, const Shape4& s) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
    for (int i = 1; i < 4; ++i)
        if (s.ne[i] > 1 && s.nb[i] % 16 != 0) return false;
    return true;
}

// The weight row of output row m in batch (c2, c3): weight batch = activation batch / broadcast ratio.
__device__ __forceinline__ const char* weight_row(const char* w, const Shape4& sw, const Shape4& sx, int64_t m,
                                                  int64_t c2, int64_t c3) {
    const int64_t r2 = sx.ne[2] / sw.ne[2], r3 = sx.ne[3] / sw.ne[3];
    return w + m * sw.nb[1] + (c2 / r2) * sw.nb[2] + (c3 / r3) * sw.nb[3];
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

// Activation block ab's 32 quants (act_layout) as 8 words, two 16-byte loads.
__device__ __forceinline__ void load_act_quants(const ActQ& act, int64_t ab, int* q) {
    const int4* xv = reinterpret_cast<const int4*>(act.q + ab * QK);
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const int4 v = xv[i];
        q[4 * i] = v.x, q[4 * i + 1] = v.y, q[4 * i + 2] = v.z, q[4 * i + 3] = v.w;
    }
}

// 0, read from memory nothing writes, so that neither compiler can fold it away: `bits & zero` makes
// what reads the result wait for the loads `bits` came from, at the cost of one AND.
__device__ volatile int g_opaque_zero = 0;
__device__ __forceinline__ int opaque_zero() { return g_opaque_zero; }

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

// ---- MUL_MAT_ID (declared in cuda/moe.cuh) ------------------------------------------------------
// The expert-indexed products live here to share this file's activation quantizers and per-type dots
// with MUL_MAT. Pair p = u + n_used * t of ids [n_used, T] multiplies expert ids[u, t] by activation
// row (n_b == 1 ? 0 : u, t); one warp computes one output row of one pair, so only the chosen experts'
// rows are read. A DeepSeek-V2-Lite decode step has 6 pairs of 1408 (gate, up) or 2048 (down) rows:
// 8448..12288 warps, enough to fill an H200 without splitting rows.
namespace mf {

namespace {

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
    // block, so R rows wait for the round trips of one. Each row's blocks go to the lanes, and are
    // summed, in lane_dot's order and with its FFMA (the select comes after the sum): lane_dot's bits.
    template <int R>
    __device__ static void split_rows_dot(const char* w, const Shape4& sw, const Shape4& sx, const int32_t* ids,
                                          const Shape4& si, const ActQ& act, int64_t m0, IdPair pair,
                                          float (&acc)[R]) {
        static_assert(SPLIT != 0, "split rows only");
        constexpr int QBYTES = BYTES - 2;
        const int lane = threadIdx.x % WARP_SIZE;
        const int64_t M = sw.ne[1], n_blk = sw.ne[0] / QK;
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r] = 0.0f;
        const int64_t e = expert_of(ids, si, sw.ne[2], pair);
        if (e < 0) return;
        const int rows = int(M - m0 < R ? M - m0 : R);
        const uint8_t* w0 = reinterpret_cast<const uint8_t*>(w + m0 * sw.nb[1] + e * sw.nb[2]);
        int64_t ab = act_row_of(sx, pair) * n_blk + lane;
        const int zero = opaque_zero();
        for (int blk = lane; blk < int(n_blk); blk += WARP_SIZE, ab += WARP_SIZE) {
            SplitBlock<SPLIT, Block> wb[R];
            int tie = 0;
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const uint8_t* row = w0 + (r < rows ? r : 0) * sw.nb[1];  // a row past M loads row 0 again
                wb[r].load(row + blk * QBYTES, row + n_blk * QBYTES + 2 * blk);
                tie |= wb[r].tie_bits();
            }
            const ActBlocks<Block, 1> x(act, ab, tie, zero);
            // Every row's dot, kept or not: a dot under a branch would take its loads into the branch,
            // after the ones before it had come back.
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const float dot = block_dot<Block>(wb[r].unpack(), x.q, x.d[0], x.s[0], x.o[0]);
                acc[r] = r < rows ? acc[r] + dot : acc[r];
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
// (LaneRows, or QIdDot::split_rows_dot).
constexpr int ID_SUM_ROWS = 2;
constexpr int ID_MAX_WARPS = 16;
template <typename RowsDot>
__device__ __forceinline__ void weighted_id_rows(const SlotWeights& slot_w, const int32_t* ids, const Shape4& si,
                                                 const Shape4& sw, float* dst, const float* add, int t0,
                                                 RowsDot rows_dot) {
    const int64_t M = sw.ne[1];
    __shared__ float part[ID_SUM_ROWS][MUL_MAT_ID_MAX_SLOTS];
    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE, n_warps = blockDim.x / WARP_SIZE;
    const int t = t0 + int(blockIdx.z);  // grid: launch_id_slices, y = 1
    const int64_t m0 = int64_t(blockIdx.x) * ID_SUM_ROWS;
    for (int u = warp; u < si.ne[0]; u += n_warps) {
        const IdPair pair{u, t};
        float acc[ID_SUM_ROWS];
        rows_dot(m0, pair, acc);
#pragma unroll
        for (int r = 0; r < ID_SUM_ROWS; ++r) acc[r] = warp_sum(acc[r]);
        const float weight = slot_w.of(u, t, expert_of(ids, si, sw.ne[2], pair));  // after the dots: off their path
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

// ROWS (split rows): each warp takes ID_ROWS rows at once (QIdDot::split_rows_dot); the grid's x is
// then ceil(M / (MATVEC_WARPS * ID_ROWS)) (QIdKernels::plain_rows).
constexpr int ID_ROWS = 2;
template <typename Block, bool STAGED, int SPLIT, bool ROWS>
__global__ void __launch_bounds__(MATVEC_WARPS* WARP_SIZE)
    matvec_q_id_kernel(const char* w, Shape4 sw, Shape4 sx, const int32_t* ids, Shape4 si, ActQ act, float* dst,
                       int t0) {
    begin_overlapped_kernel();
    using Dot = QIdDot<Block, STAGED, SPLIT>;
    __shared__ uint4 stage[MATVEC_WARPS][Dot::STAGE_VECS];
    const int warp = threadIdx.x / WARP_SIZE;
    const int64_t M = sw.ne[1];
    const IdPair pair = id_pair(t0);
    float* out = dst + (pair.u + si.ne[0] * pair.t) * M;
    if constexpr (SPLIT != 0 && ROWS) {
        const int64_t m0 = (int64_t(blockIdx.x) * MATVEC_WARPS + warp) * ID_ROWS;
        if (m0 >= M) return;  // warp-uniform
        float acc[ID_ROWS];
        Dot::split_rows_dot(w, sw, sx, ids, si, act, m0, pair, acc);
#pragma unroll
        for (int r = 0; r < ID_ROWS; ++r) {
            const float v = warp_sum(acc[r]);
            if (threadIdx.x % WARP_SIZE == 0 && m0 + r < M) out[m0 + r] = v;
        }
    } else {
        const int64_t m = int64_t(blockIdx.x) * MATVEC_WARPS + warp;
        if (m >= M) return;  // warp-uniform
        const float acc = warp_sum(Dot::lane_dot(w, sw, sx, ids, si, act, stage[warp], m, pair));
        if (threadIdx.x % WARP_SIZE == 0) out[m] = acc;
    }
}

// ROWS (split rows): a warp's ID_SUM_ROWS rows at once (QIdDot::split_rows_dot).
template <typename Block, bool STAGED, int SPLIT, bool ROWS>
__global__ void __launch_bounds__(ID_MAX_WARPS* WARP_SIZE)
    matvec_q_id_weighted_kernel(const char* w, Shape4 sw, Shape4 sx, const int32_t* ids, Shape4 si, ActQ act,
                                SlotWeights slot_w, float* dst, const float* add, int t0) {
    begin_overlapped_kernel();
    using Dot = QIdDot<Block, STAGED, SPLIT>;
    __shared__ uint4 stage[ID_MAX_WARPS][Dot::STAGE_VECS];
    uint4* my_stage = stage[threadIdx.x / WARP_SIZE];
    if constexpr (SPLIT != 0 && ROWS) {
        weighted_id_rows(slot_w, ids, si, sw, dst, add, t0,
                         [&](int64_t m0, IdPair pair, float (&acc)[ID_SUM_ROWS]) {
                             Dot::split_rows_dot(w, sw, sx, ids, si, act, m0, pair, acc);
                         });
    } else {
        const auto lane_dot = [&](int64_t m, IdPair pair) {
            return Dot::lane_dot(w, sw, sx, ids, si, act, my_stage, m, pair);
        };
        weighted_id_rows(slot_w, ids, si, sw, dst, add, t0, lane_rows(lane_dot, sw.ne[1]));
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
// stage (STAGED) or directly; or split rows loaded in SPLIT-byte vectors.
template <typename Block, bool STAGED, int SPLIT, bool ROWS = false>
struct QIdKernels {
    static constexpr auto plain = matvec_q_id_kernel<Block, STAGED, SPLIT, ROWS>;
    static constexpr auto weighted = matvec_q_id_weighted_kernel<Block, STAGED, SPLIT, ROWS>;
    static constexpr int plain_rows = MATVEC_WARPS * (ROWS ? ID_ROWS : 1);  // rows a plain kernel's block takes
};

// Calls pick(QIdKernels<...>{}) for weights at w with strides sw, split or as stored. Split rows take
// a warp's rows at once (ROWS; MINFER_CUDA_ID_ROWS=0: a row at a time).
template <typename Block, typename Pick>
void with_id_kernels(const void* w, const Shape4& sw, bool split, Pick pick) {
    const uintptr_t align = reinterpret_cast<uintptr_t>(w) | uintptr_t(sw.nb[1]) | uintptr_t(sw.nb[2]);
    if constexpr (kSplitRows<Block>) {
        if (split) {
            static const bool rows = switched_on("MINFER_CUDA_ID_ROWS");
            MF_ASSERT_MSG(align % 4 == 0, "MUL_MAT_ID: split rows must be 4-byte aligned");
            auto go = [&](auto with_rows, auto without) { return rows ? pick(with_rows) : pick(without); };
            if (align % 16 == 0) return go(QIdKernels<Block, false, 16, true>{}, QIdKernels<Block, false, 16>{});
            if (align % 8 == 0) return go(QIdKernels<Block, false, 8, true>{}, QIdKernels<Block, false, 8>{});
            return go(QIdKernels<Block, false, 4, true>{}, QIdKernels<Block, false, 4>{});
        }
    }
    MF_ASSERT_MSG(!split, "MUL_MAT_ID: split rows of a type rows_split does not take");
    if (aligned16(w, sw)) return pick(QIdKernels<Block, true, 0>{});
    return pick(QIdKernels<Block, false, 0>{});
}

template <typename Block>
void launch_matvec_q_id(const void* w, const Shape4& sw, bool split, const float* x, const Shape4& sx,
                        const int32_t* ids, const Shape4& si, void* scratch, size_t scratch_bytes, bool x_quantized,
                        SlotWeights weights, float* dst, const float* add, cudaStream_t stream) {
    using Traits = BlockTraits<Block>;
    check_id_shapes(sw, sx, si);
    MF_ASSERT(!add || weights.data);
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
            launch_id_slices(kernels.weighted, ceil_div(M, ID_SUM_ROWS), 1, si.ne[1], id_weighted_threads(si), stream,
                             wc, sw, sx, ids, si, act, weights, dst, add);
        } else {
            launch_id_slices(kernels.plain, ceil_div(M, kernels.plain_rows), si.ne[0], si.ne[1],
                             MATVEC_WARPS * WARP_SIZE, stream, wc, sw, sx, ids, si, act, dst);
        }
    });
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
                                        const float*, cudaStream_t);
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
