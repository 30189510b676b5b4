// Mixture-of-experts kernels: TOP_K routing, SUM_ROWS, DIV and SIGMOID for the gate weights, and the
// MUL_MAT_ID dispatch over weight types (its kernels are in cuda/matvec_id.cu, sharing MUL_MAT's dots).
#include "cuda/moe.cuh"

#include <cstdint>

#include "core/common.h"
#include "core/quants.h"
#include "cuda/node_util.cuh"
#include "cuda/top_k_rank.cuh"

namespace mf {

namespace {

// The order TOP_K ranks by: larger values first, every number before NaN, equal keys by index. It is
// total, so a reduction in any shape picks the same winner as the CPU's partial sort.
__device__ __forceinline__ bool ranks_before(float va, int ia, float vb, int ib) {
    const bool na = isnan(va), nb = isnan(vb);
    if (na != nb) return nb;
    if (!na && va != vb) return va > vb;
    return ia < ib;
}

// The earlier-ranked of (v, i) and (ov, oi); i < 0 is "no candidate", ranked after everything.
__device__ __forceinline__ void keep_first(float* v, int* i, float ov, int oi) {
    if (oi < 0) return;
    if (*i < 0 || ranks_before(ov, oi, *v, *i)) {
        *v = ov;
        *i = oi;
    }
}

// Rows longer than top_k_warp_kernel holds (over 256): one CUDA block per row, k rounds: round r
// finds the first-ranked element among those ranked after round r - 1's pick, so nothing needs
// marking and the row is only read (from L1/L2 after the first round). k is small (2..8), so k block
// reductions cost less than a sort would.
__global__ void top_k_kernel(const char* a, Shape4 sa, int k, int32_t* dst) {
    begin_overlapped_kernel();
    __shared__ float warp_v[WARP_SIZE];
    __shared__ int warp_i[WARP_SIZE];
    __shared__ float pick_v;
    __shared__ int pick_i;
    const int64_t row = blockIdx.x;
    const char* src = a + sa.row_offset(row);
    const int n = int(sa.ne[0]);
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int n_warps = blockDim.x / WARP_SIZE;
    float prev_v = 0.0f;
    int prev_i = -1;
    for (int r = 0; r < k; ++r) {
        float best_v = 0.0f;
        int best_i = -1;
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            const float v = *reinterpret_cast<const float*>(src + int64_t(i) * sa.nb[0]);
            if (prev_i >= 0 && !ranks_before(prev_v, prev_i, v, i)) continue;
            keep_first(&best_v, &best_i, v, i);
        }
#pragma unroll
        for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, best_v, offset);
            const int oi = __shfl_xor_sync(0xffffffffu, best_i, offset);
            keep_first(&best_v, &best_i, ov, oi);
        }
        if (lane == 0) {
            warp_v[warp] = best_v;
            warp_i[warp] = best_i;
        }
        __syncthreads();
        if (warp == 0) {
            best_v = lane < n_warps ? warp_v[lane] : 0.0f;
            best_i = lane < n_warps ? warp_i[lane] : -1;
#pragma unroll
            for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) {
                const float ov = __shfl_xor_sync(0xffffffffu, best_v, offset);
                const int oi = __shfl_xor_sync(0xffffffffu, best_i, offset);
                keep_first(&best_v, &best_i, ov, oi);
            }
            if (lane == 0) {
                pick_v = best_v;
                pick_i = best_i;
                dst[row * k + r] = best_i;
            }
        }
        __syncthreads();
        prev_v = pick_v;
        prev_i = pick_i;
    }
}

// Rows of at most WARP_SIZE * TOPK_WARP_VALUES (routers: 65..256 experts): one warp a row, the row in
// registers (value i at lane i % 32, slot i / 32). Round r reduces each lane's best value not yet
// taken over the warp with shuffles; the winner's lane marks it taken. No barriers, no shared memory,
// the same order (ranks_before) as the block kernel, so the same picks.
constexpr int TOPK_WARP_VALUES = 8;
constexpr int TOPK_WARP_ROWS = 4;  // warps (rows) a CUDA block

// The row a warp of a one-row-a-warp TOP_K kernel takes: its lane, where the values start and how
// many there are; false past the last row (warp-uniform).
struct TopKWarpRow {
    int64_t row;
    int lane;
    const char* src;
    int n;
};
__device__ __forceinline__ bool top_k_warp_row(const char* a, const Shape4& sa, int64_t n_rows, TopKWarpRow* r) {
    r->row = int64_t(blockIdx.x) * TOPK_WARP_ROWS + threadIdx.x / WARP_SIZE;
    if (r->row >= n_rows) return false;
    r->lane = threadIdx.x % WARP_SIZE;
    r->src = a + sa.row_offset(r->row);
    r->n = int(sa.ne[0]);
    return true;
}

__global__ void __launch_bounds__(TOPK_WARP_ROWS* WARP_SIZE)
    top_k_warp_kernel(const char* a, Shape4 sa, int k, int32_t* dst, int64_t n_rows) {
    begin_overlapped_kernel();
    TopKWarpRow w;
    if (!top_k_warp_row(a, sa, n_rows, &w)) return;
    float v[TOPK_WARP_VALUES];
    unsigned present = 0;  // bit j: value lane + 32 j exists and is not taken yet
#pragma unroll
    for (int j = 0; j < TOPK_WARP_VALUES; ++j) {
        const int i = w.lane + j * WARP_SIZE;
        v[j] = i < w.n ? *reinterpret_cast<const float*>(w.src + int64_t(i) * sa.nb[0]) : 0.0f;
        if (i < w.n) present |= 1u << j;
    }
    for (int r = 0; r < k; ++r) {
        float best_v = 0.0f;
        int best_i = -1;
#pragma unroll
        for (int j = 0; j < TOPK_WARP_VALUES; ++j)
            if (present >> j & 1u) keep_first(&best_v, &best_i, v[j], w.lane + j * WARP_SIZE);
#pragma unroll
        for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, best_v, offset);
            const int oi = __shfl_xor_sync(0xffffffffu, best_i, offset);
            keep_first(&best_v, &best_i, ov, oi);
        }
        if (best_i % WARP_SIZE == w.lane) present &= ~(1u << (best_i / WARP_SIZE));
        if (w.lane == 0) dst[w.row * k + r] = best_i;
    }
}

// Rows of at most WARP_SIZE * TOPK_RANK_VALUES values (routers of up to 64 experts, DeepSeek-V2-Lite's):
// one warp a row, value i at lane i % 32, slot i / 32. Every value counts, at once, how many of the
// row's values rank before it (a shuffle per value of the row, no chain of k reduction rounds), and
// a value ranked below k writes its index at its rank. The order is ranks_before's, through rank_key
// (cuda/top_k_rank.cuh): so the picks are the other kernels' and the CPU's.

__global__ void __launch_bounds__(TOPK_WARP_ROWS* WARP_SIZE)
    top_k_rank_kernel(const char* a, Shape4 sa, int k, int32_t* dst, int64_t n_rows) {
    begin_overlapped_kernel();
    TopKWarpRow w;
    if (!top_k_warp_row(a, sa, n_rows, &w)) return;
    uint32_t key[TOPK_RANK_VALUES];
    int rank[TOPK_RANK_VALUES];
#pragma unroll
    for (int j = 0; j < TOPK_RANK_VALUES; ++j) {
        const int i = w.lane + j * WARP_SIZE;
        key[j] = i < w.n ? rank_key(*reinterpret_cast<const float*>(w.src + int64_t(i) * sa.nb[0])) : 0u;
        rank[j] = 0;
    }
#pragma unroll
    for (int jj = 0; jj < TOPK_RANK_VALUES; ++jj) {
#pragma unroll
        for (int s = 0; s < WARP_SIZE; ++s) {
            const int oi = s + jj * WARP_SIZE;
            const uint32_t ok = __shfl_sync(0xffffffffu, key[jj], s);
            if (oi >= w.n) break;  // warp-uniform: the values past the row's end count for nothing
#pragma unroll
            for (int j = 0; j < TOPK_RANK_VALUES; ++j)
                rank[j] += ok > key[j] || (ok == key[j] && oi < w.lane + j * WARP_SIZE);
        }
    }
#pragma unroll
    for (int j = 0; j < TOPK_RANK_VALUES; ++j) {
        const int i = w.lane + j * WARP_SIZE;
        if (i < w.n && rank[j] < k) dst[w.row * k + rank[j]] = i;
    }
}

// One warp per row. The MoE's weighted sum reads a permuted view (6 values 8 KB apart per row), so
// the rows are short and strided; consecutive warps read neighbouring columns, which share sectors.
__global__ void sum_rows_kernel(const char* a, Shape4 sa, float* dst, int64_t n_rows) {
    begin_overlapped_kernel();
    const int64_t row = int64_t(blockIdx.x) * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (row >= n_rows) return;  // warp-uniform
    const int lane = threadIdx.x % WARP_SIZE;
    const char* src = a + sa.row_offset(row);
    float s = 0.0f;
    for (int64_t i = lane; i < sa.ne[0]; i += WARP_SIZE) s += *reinterpret_cast<const float*>(src + i * sa.nb[0]);
    s = warp_sum(s);
    if (lane == 0) dst[row] = s;
}

// Grid-stride over dst's elements; b's index wraps modulo its shape (broadcast).
__global__ void div_kernel(const char* a, Shape4 sa, const char* b, Shape4 sb, float* dst, int64_t n) {
    begin_overlapped_kernel();
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        int64_t rest = i, ob = 0;
        for (int d = 0; d < 4; ++d) {
            ob += (rest % sa.ne[d]) % sb.ne[d] * sb.nb[d];
            rest /= sa.ne[d];
        }
        dst[i] = *reinterpret_cast<const float*>(a + sa.element_offset(i)) / *reinterpret_cast<const float*>(b + ob);
    }
}

// Same formula as the CPU (1 / (1 + exp(-x)) in f32), so the two agree to an ulp or two.
__global__ void sigmoid_kernel(const char* a, Shape4 sa, float* dst, int64_t n) {
    begin_overlapped_kernel();
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        dst[i] = 1.0f / (1.0f + expf(-*reinterpret_cast<const float*>(a + sa.element_offset(i))));
}

// Blocks for a grid-stride kernel over n elements: enough to fill the GPU, capped where the stride
// loop takes over.
unsigned elementwise_grid(int64_t n, int threads) {
    const int64_t blocks = ceil_div(n, threads);
    return grid_x(blocks < 4096 ? blocks : 4096);
}

}  // namespace

// Every weight type MUL_MAT takes: the float types and the block types with a matvec kernel.
bool mul_mat_id_supported(DType type) { return is_weight_type(type); }

void launch_mul_mat_id(DType type, const void* w, const Shape4& sw, bool split, const float* x, const Shape4& sx,
                       const int32_t* ids, const Shape4& si, void* scratch, size_t scratch_bytes, bool x_quantized,
                       SlotWeights weights, float* dst, const float* add, cudaStream_t s, const IdRoute& route) {
    MF_ASSERT_MSG(!split || rows_split_fits(type), "launch_mul_mat_id: split rows of a type rows_split does not take");
    MF_ASSERT_MSG(!route.logits || mul_mat_id_routes(type, split, sw, route.sl, si),
                  "launch_mul_mat_id: a route these weights do not take");
    auto quantized = [&](auto block) {
        launch_matvec_q_id<decltype(block)>(w, sw, split, x, sx, ids, si, scratch, scratch_bytes, x_quantized,
                                            weights, dst, add, s, route);
    };
    switch (type) {
        case DType::F32: launch_matvec_float_id<float>(w, sw, x, sx, ids, si, weights, dst, add, s); return;
        case DType::F16: launch_matvec_float_id<__half>(w, sw, x, sx, ids, si, weights, dst, add, s); return;
        case DType::BF16: launch_matvec_float_id<__nv_bfloat16>(w, sw, x, sx, ids, si, weights, dst, add, s); return;
        case DType::Q8_0: quantized(BlockQ8_0{}); return;
        case DType::Q4_0: quantized(BlockQ4_0{}); return;
        case DType::Q4_1: quantized(BlockQ4_1{}); return;
        case DType::Q5_0: quantized(BlockQ5_0{}); return;
        case DType::Q5_1: quantized(BlockQ5_1{}); return;
        case DType::Q4_K: quantized(BlockQ4_K{}); return;
        case DType::Q5_K: quantized(BlockQ5_K{}); return;
        case DType::Q6_K: quantized(BlockQ6_K{}); return;
        default: MF_ASSERT_MSG(false, "launch_mul_mat_id: unsupported weight type");
    }
}

void launch_top_k_f32(const void* a, const Shape4& sa, int k, int32_t* dst, cudaStream_t stream) {
    MF_ASSERT(k >= 1 && k <= sa.ne[0] && sa.ne[0] <= 0x7fffffff);
    if (sa.nrows() == 0) return;
    if (sa.ne[0] <= WARP_SIZE * TOPK_RANK_VALUES) {
        launch_overlapped(top_k_rank_kernel, grid_x(ceil_div(sa.nrows(), TOPK_WARP_ROWS)), TOPK_WARP_ROWS * WARP_SIZE,
                          0, stream, static_cast<const char*>(a), sa, k, dst, sa.nrows());
        CUDA_CHECK_LAUNCH();
        return;
    }
    if (sa.ne[0] <= WARP_SIZE * TOPK_WARP_VALUES) {
        launch_overlapped(top_k_warp_kernel, grid_x(ceil_div(sa.nrows(), TOPK_WARP_ROWS)), TOPK_WARP_ROWS * WARP_SIZE,
                          0, stream, static_cast<const char*>(a), sa, k, dst, sa.nrows());
        CUDA_CHECK_LAUNCH();
        return;
    }
    const int threads = row_block_size(sa.ne[0], 256);
    launch_overlapped(top_k_kernel, grid_x(sa.nrows()), threads, 0, stream, static_cast<const char*>(a), sa, k, dst);
    CUDA_CHECK_LAUNCH();
}

void launch_sum_rows_f32(const void* a, const Shape4& sa, float* dst, cudaStream_t stream) {
    const int64_t n_rows = sa.nrows();
    if (n_rows == 0) return;
    constexpr int warps = 8;
    launch_overlapped(sum_rows_kernel, grid_x(ceil_div(n_rows, warps)), warps * WARP_SIZE, 0, stream,
                      static_cast<const char*>(a), sa, dst, n_rows);
    CUDA_CHECK_LAUNCH();
}

void launch_div_f32(const void* a, const Shape4& sa, const void* b, const Shape4& sb, float* dst,
                    cudaStream_t stream) {
    for (int d = 0; d < 4; ++d) MF_ASSERT(sb.ne[d] > 0 && sa.ne[d] % sb.ne[d] == 0);
    const int64_t n = sa.nelements();
    if (n == 0) return;
    constexpr int threads = 256;
    launch_overlapped(div_kernel, elementwise_grid(n, threads), threads, 0, stream, static_cast<const char*>(a), sa,
                      static_cast<const char*>(b), sb, dst, n);
    CUDA_CHECK_LAUNCH();
}

void launch_sigmoid_f32(const void* a, const Shape4& sa, float* dst, cudaStream_t stream) {
    const int64_t n = sa.nelements();
    if (n == 0) return;
    constexpr int threads = 256;
    launch_overlapped(sigmoid_kernel, elementwise_grid(n, threads), threads, 0, stream, static_cast<const char*>(a), sa,
                      dst, n);
    CUDA_CHECK_LAUNCH();
}

}  // namespace mf
