// Helpers every CUDA file of minfer shares: the CUDA_CHECK macros, the Shape4 struct launchers use to
// pass a strided tensor's ne/nb by value, warp and block reductions, and fp16 <-> f32 in device code.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "core/common.h"

namespace mf {

// A CUDA failure where bad input cannot be the cause (a launch, a copy between valid buffers, a
// kernel fault seen at a sync) is a bug in minfer: print file:line and the CUDA error, then abort.
[[noreturn]] inline void cuda_fail(const char* file, int line, const char* expr, cudaError_t err) {
    std::fprintf(stderr, "%s:%d: CUDA error: %s: %s (%s)\n", file, line, expr, cudaGetErrorString(err),
                 cudaGetErrorName(err));
    std::fflush(stderr);
    std::abort();
}

}  // namespace mf

#define CUDA_CHECK(call)                                                           \
    do {                                                                           \
        const cudaError_t cuda_err_ = (call);                                      \
        if (cuda_err_ != cudaSuccess) ::mf::cuda_fail(__FILE__, __LINE__, #call, cuda_err_); \
    } while (0)

// After every kernel launch: catches bad launch configurations at the launcher that made them.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

namespace mf {

constexpr int WARP_SIZE = 32;

// A tensor's shape as kernels see it: elements and byte strides per dimension (ggml order).
struct Shape4 {
    int64_t ne[4];
    int64_t nb[4];

    __host__ __device__ int64_t nelements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
    __host__ __device__ int64_t nrows() const { return ne[1] * ne[2] * ne[3]; }
    // Byte offset of row `row` (rows counted in dims 1..3, dim 1 fastest).
    __host__ __device__ int64_t row_offset(int64_t row) const {
        const int64_t i1 = row % ne[1];
        const int64_t i2 = (row / ne[1]) % ne[2];
        const int64_t i3 = row / (ne[1] * ne[2]);
        return i1 * nb[1] + i2 * nb[2] + i3 * nb[3];
    }
    // Byte offset of the element with row-major linear index i (dim 0 fastest).
    __host__ __device__ int64_t element_offset(int64_t i) const {
        const int64_t i0 = i % ne[0];
        return i0 * nb[0] + row_offset(i / ne[0]);
    }
};

// ROPE's rotation, shared by its kernel and by the readers that apply it to a ROPE not launched.
// Pair i's cos and sin at position p: the angles in double, as on the CPU.
__device__ __forceinline__ void rope_cos_sin(double p, int i, int n_dims, double freq_base, double freq_scale,
                                             const float* factors, float* c, float* s) {
    double inv_freq = pow(freq_base, -2.0 * i / n_dims);
    if (factors) inv_freq /= double(factors[i]);
    const double theta = p * freq_scale * inv_freq;
    *c = float(cos(theta));
    *s = float(sin(theta));
}
// The rotated pair (x0, x1) by (c, s), unfused, as the CPU rounds it (nvcc would otherwise contract
// these into fmas): the first element, or the second.
__device__ __forceinline__ float rope_first(float x0, float x1, float c, float s) {
    return __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
}
__device__ __forceinline__ float rope_second(float x0, float x1, float c, float s) {
    return __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
}

// A ROPE not launched: its source x (f32, packed rows of any strides), positions (one a token, the
// token of a row being (row / ne1) % ne2 as in the ROPE kernel) and parameters. element(row, j) is
// element j of row `row` of ROPE(x), the kernel's bits; angle() and rotated() are its two halves, so
// a kernel may take the angle before its wait when pos_ready (the positions and factors are ready
// before the graph runs: the backend's rope_inputs_ready).
struct RopeOf {
    const char* x = nullptr;
    Shape4 sx{};
    const int32_t* pos = nullptr;
    const float* factors = nullptr;
    int n_dims = 0;
    bool neox = false;
    double freq_base = 0.0, freq_scale = 0.0;
    bool pos_ready = false;
    // The cos and sin of the pair that element j (< n_dims) of row `row` belongs to.
    __device__ __forceinline__ void angle(int64_t row, int64_t j, float* c, float* s) const {
        const int n_pairs = n_dims / 2;
        const int i = neox ? int(j % n_pairs) : int(j / 2);
        rope_cos_sin(double(pos[(row / sx.ne[1]) % sx.ne[2]]), i, n_dims, freq_base, freq_scale, factors, c, s);
    }
    // Element j (< n_dims) of row `row`, rotated by its pair's angle().
    __device__ __forceinline__ float rotated(int64_t row, int64_t j, float c, float s) const {
        const float* x_row = reinterpret_cast<const float*>(x + sx.row_offset(row));
        const int partner = neox ? n_dims / 2 : 1;
        const bool first = neox ? j < n_dims / 2 : j % 2 == 0;
        const int64_t j0 = first ? j : j - partner;
        const float x0 = __ldg(x_row + j0), x1 = __ldg(x_row + j0 + partner);
        return first ? rope_first(x0, x1, c, s) : rope_second(x0, x1, c, s);
    }
    __device__ __forceinline__ float element(int64_t row, int64_t j) const {
        if (j >= n_dims) return __ldg(reinterpret_cast<const float*>(x + sx.row_offset(row)) + j);
        float c, s;
        angle(row, j, &c, &s);
        return rotated(row, j, c, s);
    }
};

// f32 rows as two tensors side by side along dim 0, as a CONCAT of a and b along dim 0 would hold
// them (the CUDA backend hands a kernel a CONCAT's sources this way instead of launching the CONCAT):
// element e of row (i1, i2) is a's while e < a's ne[0], then b's (b's dims 1.. equal a's). One tensor
// alone: b null. Any strides; read-only while a kernel reads them (loaded through the read-only path).
// With rope.x, b is ROPE(rope.x) not launched (b's rows, contiguous, in the ROPE's row order): b's
// values are made as they are read.
struct RowsF32 {
    const char* a;
    Shape4 sa;
    const char* b;
    Shape4 sb;
    RopeOf rope;
    __device__ __forceinline__ float at(int64_t e, int64_t i1, int64_t i2) const {
        if (e < sa.ne[0]) return __ldg(reinterpret_cast<const float*>(a + e * sa.nb[0] + i1 * sa.nb[1] + i2 * sa.nb[2]));
        return at_b(e - sa.ne[0], i1, i2);
    }
    __device__ __forceinline__ float at_b(int64_t e, int64_t i1, int64_t i2) const {
        if (rope.x) return rope.element(i1 + i2 * sb.ne[1], e);
        return __ldg(reinterpret_cast<const float*>(b + e * sb.nb[0] + i1 * sb.nb[1] + i2 * sb.nb[2]));
    }
};
__host__ __device__ inline RowsF32 rows_f32(const float* x, const Shape4& s) {
    return {reinterpret_cast<const char*>(x), s, nullptr, {}, {}};
}

// Overlapped launches (Hopper's programmatic dependent launch). A kernel started by launch_overlapped
// may begin while the kernel before it in the stream is still running: it must call
// wait_for_previous_kernel() before it reads anything an earlier kernel wrote or writes anything an
// earlier kernel may still read. What it does before that, such as starting the loads of weights
// that nothing writes, overlaps the previous kernel's tail and the gap between the two launches. A
// kernel that calls allow_next_kernel() lets an overlapped successor start before it finishes.
// Outside an overlapped launch both are no-ops. MINFER_CUDA_PDL=0 launches plainly (to measure what
// the overlap buys).
__device__ __forceinline__ void wait_for_previous_kernel() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void allow_next_kernel() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
// The start of a kernel that reads its inputs at once: wait, then let the next one start.
__device__ __forceinline__ void begin_overlapped_kernel() {
    wait_for_previous_kernel();
    allow_next_kernel();
}

// SiLU with the CPU backend's formula (core/cpu/ops_elementwise.cpp): the SWIGLU kernel and the
// quantizer that fuses SWIGLU (cuda/matvec.cu) share it, so fused and unfused give the same bits.
__device__ __forceinline__ float silu_f32(float x) { return x / (1.0f + expf(-x)); }

// A performance switch that is on unless the environment sets NAME=0 (to measure what it buys).
inline bool switched_on(const char* name) {
    const char* env = std::getenv(name);
    return !(env && std::strcmp(env, "0") == 0);
}

inline bool overlapped_launches_enabled() {
    static const bool on = switched_on("MINFER_CUDA_PDL");
    return on;
}

// A launch, overlapped with the kernel before it or not, as `overlapped` says.
template <typename... Params, typename... Args>
void launch_kernel(bool overlapped, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                   cudaStream_t stream, Args&&... args) {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = overlapped ? 1 : 0;
    cudaLaunchConfig_t config = {};
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = smem;
    config.stream = stream;
    config.attrs = attr;
    config.numAttrs = 1;
    CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

template <typename... Params, typename... Args>
void launch_overlapped(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                       Args&&... args) {
    launch_kernel(overlapped_launches_enabled(), kernel, grid, block, smem, stream, std::forward<Args>(args)...);
}

// Asynchronous 16-byte copies global -> shared (sm_80+), waited for in commit groups.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
    const unsigned s = unsigned(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
// As cp_async16, but writes 16 zero bytes and reads nothing when !valid (gmem must still be a pointer).
__device__ __forceinline__ void cp_async16_or_zero(void* smem, const void* gmem, bool valid) {
    const unsigned s = unsigned(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(valid ? 16 : 0));
}
// 4 bytes, through L1 (cp.async.cg takes 16 only); zeros and no read when !valid.
__device__ __forceinline__ void cp_async4_or_zero(void* smem, const void* gmem, bool valid) {
    const unsigned s = unsigned(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gmem), "r"(valid ? 4 : 0));
}
// 8 bytes, through L1; zeros and no read when !valid.
__device__ __forceinline__ void cp_async8_or_zero(void* smem, const void* gmem, bool valid) {
    const unsigned s = unsigned(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(s), "l"(gmem), "r"(valid ? 8 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A grid dimension x for n blocks (1 <= n < 2^31, the hardware limit).
inline unsigned grid_x(int64_t n) {
    MF_ASSERT_MSG(n > 0 && n <= 0x7fffffff, "grid larger than CUDA allows");
    return unsigned(n);
}

// Threads per block for a kernel that walks one row of ne0 elements: a whole number of warps,
// no more than max_threads, and no more warps than the row can keep busy.
inline int row_block_size(int64_t ne0, int max_threads = 256) {
    const int64_t warps = ceil_div(ne0 > 0 ? ne0 : 1, WARP_SIZE);
    return int(warps * WARP_SIZE < max_threads ? warps * WARP_SIZE : max_threads);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// Sum over the whole block, returned to every thread. blockDim.x must be a multiple of 32.
// The leading __syncthreads lets one kernel call it several times with the same scratch array.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[WARP_SIZE];
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < int(blockDim.x / WARP_SIZE) ? partial[lane] : 0.0f;
    return warp_sum(v);
}

// Threads of a block that normalizes one row of ne0 (RMS_NORM, and RMS_NORM fused into the activation
// quantizer): the same count gives both the same sum.
inline int rms_norm_threads(int64_t ne0) { return row_block_size(ne0, 512); }

// 1 / sqrt(mean(x_row^2) + eps) over a row of n floats, by the whole block (blockDim.x =
// rms_norm_threads(n)). The CPU backend's expression; 1/sqrtf rather than rsqrtf, which is off by up
// to 2 ulp.
__device__ __forceinline__ float row_rms_scale(const float* x_row, int64_t n, float eps) {
    float sum = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) sum += x_row[i] * x_row[i];
    sum = block_sum(sum);
    return 1.0f / sqrtf(sum / float(n) + eps);
}

// An RMS_NORM times its weight row, MUL(RMS_NORM(x), w), not launched: its reader makes the product's
// rows from x (f32, rows packed, dims 1..3 any strides) and w (f32, x's ne0 values). A row takes a
// whole block of rms_norm_threads(x's ne0) threads: scale(row) is then rms_norm_kernel's sum in its
// order, and value() rounds as the norm and the MUL do (x * scale, then times w: two roundings, no
// fma), so the product has the launched kernels' bits.
struct NormOf {
    const char* x = nullptr;
    Shape4 sx{};
    const float* w = nullptr;
    float eps = 0.0f;
    __device__ __forceinline__ const float* row(int64_t r) const {
        return reinterpret_cast<const float*>(x + sx.row_offset(r));
    }
    // By the whole block.
    __device__ __forceinline__ float scale(const float* x_row) const { return row_rms_scale(x_row, sx.ne[0], eps); }
    __device__ __forceinline__ float value(const float* x_row, int64_t j, float scale) const {
        return __fmul_rn(x_row[j] * scale, w[j]);
    }
};

__device__ __forceinline__ float block_max(float v) {
    __shared__ float partial[WARP_SIZE];
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < int(blockDim.x / WARP_SIZE) ? partial[lane] : -INFINITY;
    return warp_max(v);
}

// fp16 bits as stored in GGUF blocks <-> f32. __float2half_rn rounds to nearest even, as the CPU's
// fp32_to_fp16 does, so both backends produce the same bits.
__device__ __forceinline__ float fp16_bits_to_f32(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ uint16_t f32_to_fp16_bits(float f) { return __half_as_ushort(__float2half_rn(f)); }

// Loads/stores of one element of a scalar type (float, __half, __nv_bfloat16) as f32.
__device__ __forceinline__ float load_f32(const float* p) { return *p; }
__device__ __forceinline__ float load_f32(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ void store_f32(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_f32(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ float load_f32(const __nv_bfloat16* p) { return __bfloat162float(*p); }
// Round to nearest even, as the CPU's fp32_to_bf16.
__device__ __forceinline__ void store_f32(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

}  // namespace mf
