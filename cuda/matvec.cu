// MUL_MAT for decode: one warp per output row reads the weight row once with 16-byte coalesced loads,
// dequantizes in registers and reduces with warp shuffles. It loops over the activation columns in
// groups of MATVEC_COLS, re-reading the weight row (from L1/L2) per group: simple and correct for
// N > 1, but prefill-sized N wants the tiled tensor-core kernel that a later issue adds (cuda/matmul).
#include "cuda/matvec.cuh"

namespace mf {

namespace {

constexpr int MATVEC_WARPS = 4;  // output rows per CUDA block, one warp each
constexpr int MATVEC_COLS = 4;   // activation columns served by one pass over a weight row

template <typename Block>
struct BlockInfo;
template <>
struct BlockInfo<BlockQ8_0> {
    static constexpr int bytes = Q8_0_BYTES;
};
template <>
struct BlockInfo<BlockQ4_0> {
    static constexpr int bytes = Q4_0_BYTES;
};

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

// Activations -> Q8_0 in a split layout: quants int8 [rows][K] (16-byte aligned, so a block's 32
// quants are two int4 loads) and scales f32 [rows][K/32], already rounded through fp16 as the CPU's
// block_q8_0 stores them. rows = N * C2 * C3 in (n, c2, c3) order. One warp per block.
__global__ void quantize_act_kernel(const char* x, Shape4 sx, int8_t* xq, float* xd, int64_t n_blocks) {
    const int64_t block = blockIdx.x * int64_t(blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (block >= n_blocks) return;
    const int lane = threadIdx.x % WARP_SIZE;
    const int64_t blocks_per_row = sx.ne[0] / QK;
    const int64_t row = block / blocks_per_row, kb = block % blocks_per_row;
    const float v = *reinterpret_cast<const float*>(x + sx.row_offset(row) + (kb * QK + lane) * sx.nb[0]);
    uint16_t d_bits;
    xq[block * QK + lane] = int8_t(quantize_q8_0_lane(v, &d_bits));
    if (lane == 0) xd[block] = fp16_bits_to_f32(d_bits);
}

// One weight block as 8 ints of 4 signed bytes each (element order) and its scale. p may point into
// shared or global memory; blocks are only 2-byte aligned, hence the 16-bit loads.
__device__ __forceinline__ int load_word(const uint8_t* p) { return int(load_u16(p) | (uint32_t(load_u16(p + 2)) << 16)); }

__device__ __forceinline__ float load_block(BlockQ8_0, const uint8_t* p, int* wq) {
#pragma unroll
    for (int i = 0; i < 8; ++i) wq[i] = load_word(p + 2 + 4 * i);
    return fp16_bits_to_f32(load_u16(p));
}

__device__ __forceinline__ float load_block(BlockQ4_0, const uint8_t* p, int* wq) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int v = load_word(p + 2 + 4 * i);
        // Low nibbles are elements 0..15, high nibbles 16..31; q - 8 per byte gives signed int8.
        wq[i] = int(__vsub4(uint32_t(v) & 0x0F0F0F0Fu, 0x08080808u));
        wq[i + 4] = int(__vsub4((uint32_t(v) >> 4) & 0x0F0F0F0Fu, 0x08080808u));
    }
    return fp16_bits_to_f32(load_u16(p));
}

// grid.x = ceil(M / MATVEC_WARPS) * C2 * C3. Lane j owns block b0 + j of each 32-block chunk. When
// rows are 16-byte aligned, a full chunk (576 or 1088 bytes, both multiples of 16) is first copied
// by the warp into shared memory with 16-byte loads, because the blocks themselves (18 / 34 bytes)
// only allow 2-byte loads; the tail chunk and unaligned rows read global memory directly.
template <typename Block>
__global__ void __launch_bounds__(MATVEC_WARPS* WARP_SIZE)
    matvec_q_kernel(const char* w, Shape4 sw, Shape4 sx, const int8_t* xq, const float* xd, float* dst,
                    int64_t m_blocks, bool staged) {
    constexpr int BYTES = BlockInfo<Block>::bytes;
    constexpr int CHUNK_VECS = WARP_SIZE * BYTES / 16;
    __shared__ uint4 stage[MATVEC_WARPS][CHUNK_VECS];

    const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    const int64_t K = sw.ne[0], M = sw.ne[1], N = sx.ne[1];
    const int64_t n_blk = K / QK;
    const int64_t m = (blockIdx.x % m_blocks) * MATVEC_WARPS + warp;
    const int64_t batch = blockIdx.x / m_blocks;
    if (m >= M) return;  // warp-uniform
    const int64_t c2 = batch % sx.ne[2], c3 = batch / sx.ne[2];
    const uint8_t* w_row = reinterpret_cast<const uint8_t*>(weight_row(w, sw, sx, m, c2, c3));
    float* dst_batch = dst + batch * N * M;

    for (int64_t n0 = 0; n0 < N; n0 += MATVEC_COLS) {
        const int ncols = int(N - n0 < MATVEC_COLS ? N - n0 : MATVEC_COLS);
        const int64_t act_row0 = batch * N + n0;  // activation rows are in (n, c2, c3) order
        float acc[MATVEC_COLS] = {};
        for (int64_t b0 = 0; b0 < n_blk; b0 += WARP_SIZE) {
            const int64_t blk = b0 + lane;
            const uint8_t* p = w_row + blk * BYTES;
            if (staged && b0 + WARP_SIZE <= n_blk) {
                const uint4* src = reinterpret_cast<const uint4*>(w_row + b0 * BYTES);
#pragma unroll
                for (int i = lane; i < CHUNK_VECS; i += WARP_SIZE) stage[warp][i] = src[i];
                __syncwarp();
                p = reinterpret_cast<const uint8_t*>(stage[warp]) + lane * BYTES;
            }
            if (blk < n_blk) {
                int wq[8];
                const float dw = load_block(Block{}, p, wq);
#pragma unroll
                for (int c = 0; c < MATVEC_COLS; ++c) {
                    if (c >= ncols) break;
                    const int64_t a = (act_row0 + c) * n_blk + blk;
                    const int4* xv = reinterpret_cast<const int4*>(xq + a * QK);
                    const int4 x0 = xv[0], x1 = xv[1];
                    int sumi = 0;
                    sumi = __dp4a(wq[0], x0.x, sumi);
                    sumi = __dp4a(wq[1], x0.y, sumi);
                    sumi = __dp4a(wq[2], x0.z, sumi);
                    sumi = __dp4a(wq[3], x0.w, sumi);
                    sumi = __dp4a(wq[4], x1.x, sumi);
                    sumi = __dp4a(wq[5], x1.y, sumi);
                    sumi = __dp4a(wq[6], x1.z, sumi);
                    sumi = __dp4a(wq[7], x1.w, sumi);
                    // The CPU's vec_dot multiplies the two scales first, then the integer sum.
                    acc[c] += float(sumi) * (dw * xd[a]);
                }
            }
            __syncwarp();  // the next chunk overwrites this warp's stage
        }
#pragma unroll
        for (int c = 0; c < MATVEC_COLS; ++c) {
            if (c >= ncols) break;
            const float v = warp_sum(acc[c]);
            if (lane == 0) dst_batch[(n0 + c) * M + m] = v;
        }
    }
}

void check_shapes(const Shape4& sw, const Shape4& sx) {
    MF_ASSERT(sw.ne[0] == sx.ne[0] && sx.nb[0] == sizeof(float));
    MF_ASSERT(sw.ne[2] > 0 && sw.ne[3] > 0 && sx.ne[2] % sw.ne[2] == 0 && sx.ne[3] % sw.ne[3] == 0);
}

size_t align16(size_t n) { return (n + 15) / 16 * 16; }

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
    if (vec) {
        matvec_float_kernel<T, true><<<grid, MATVEC_WARPS * WARP_SIZE, 0, stream>>>(wc, sw, xc, sx, dst, m_blocks);
    } else {
        matvec_float_kernel<T, false><<<grid, MATVEC_WARPS * WARP_SIZE, 0, stream>>>(wc, sw, xc, sx, dst, m_blocks);
    }
    CUDA_CHECK_LAUNCH();
}

size_t matvec_q_scratch_bytes(const Shape4& sx) {
    const size_t rows = size_t(sx.nrows());
    return align16(rows * size_t(sx.ne[0])) + rows * size_t(sx.ne[0] / QK) * sizeof(float);
}

template <typename Block>
void launch_matvec_q(const void* w, const Shape4& sw, const float* x, const Shape4& sx, void* scratch,
                     size_t scratch_bytes, float* dst, cudaStream_t stream) {
    check_shapes(sw, sx);
    MF_ASSERT(sw.ne[0] % QK == 0 && sw.nb[0] == BlockInfo<Block>::bytes);
    MF_ASSERT(scratch_bytes >= matvec_q_scratch_bytes(sx) && reinterpret_cast<uintptr_t>(scratch) % 16 == 0);
    const int64_t M = sw.ne[1];
    if (M == 0 || sx.nrows() == 0) return;
    int8_t* xq = static_cast<int8_t*>(scratch);
    float* xd = reinterpret_cast<float*>(static_cast<char*>(scratch) + align16(size_t(sx.nrows() * sx.ne[0])));

    const int64_t n_act_blocks = sx.nrows() * (sx.ne[0] / QK);
    if (n_act_blocks > 0) {
        constexpr int warps_per_block = 8;
        quantize_act_kernel<<<grid_x(ceil_div(n_act_blocks, warps_per_block)), warps_per_block * WARP_SIZE, 0,
                              stream>>>(reinterpret_cast<const char*>(x), sx, xq, xd, n_act_blocks);
        CUDA_CHECK_LAUNCH();
    }
    const int64_t m_blocks = ceil_div(M, MATVEC_WARPS);
    matvec_q_kernel<Block><<<grid_x(m_blocks * sx.ne[2] * sx.ne[3]), MATVEC_WARPS * WARP_SIZE, 0, stream>>>(
        static_cast<const char*>(w), sw, sx, xq, xd, dst, m_blocks, aligned16(w, sw));
    CUDA_CHECK_LAUNCH();
}

template void launch_matvec_float<float>(const void*, const Shape4&, const float*, const Shape4&, float*, cudaStream_t);
template void launch_matvec_float<__half>(const void*, const Shape4&, const float*, const Shape4&, float*,
                                          cudaStream_t);
template void launch_matvec_float<__nv_bfloat16>(const void*, const Shape4&, const float*, const Shape4&, float*,
                                                 cudaStream_t);
template void launch_matvec_q<BlockQ8_0>(const void*, const Shape4&, const float*, const Shape4&, void*, size_t,
                                         float*, cudaStream_t);
template void launch_matvec_q<BlockQ4_0>(const void*, const Shape4&, const float*, const Shape4&, void*, size_t,
                                         float*, cudaStream_t);

}  // namespace mf
