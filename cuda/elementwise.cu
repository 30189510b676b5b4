// Element-wise and row-moving kernels: broadcast binary ops (ADD, MUL, SWIGLU, GEGLU), unary ops
// (SCALE, SILU, GELU), CPY with conversion and quantization, GET_ROWS, SET_ROWS and CONCAT.
#include "cuda/elementwise.cuh"

#include "core/common.h"

namespace mf {

namespace {

// Same formulas as the CPU backend (core/cpu/ops_elementwise.cpp), so results agree to an ulp or two.
__device__ __forceinline__ float silu(float x) { return silu_f32(x); }

__device__ __forceinline__ float gelu(float x) {
    constexpr float sqrt_2_over_pi = 0.79788456080286535587989211986876f;
    constexpr float coef_a = 0.044715f;
    return 0.5f * x * (1.0f + tanhf(sqrt_2_over_pi * x * (1.0f + coef_a * x * x)));
}

struct AddFn {
    __device__ float operator()(float a, float b) const { return a + b; }
};
struct MulFn {
    __device__ float operator()(float a, float b) const { return a * b; }
};
struct SwigluFn {
    __device__ float operator()(float a, float b) const { return silu(a) * b; }
};
struct GegluFn {
    __device__ float operator()(float a, float b) const { return gelu(a) * b; }
};
struct ScaleFn {
    float s;
    __device__ float operator()(float a) const { return a * s; }
};
struct SiluFn {
    __device__ float operator()(float a) const { return silu(a); }
};
struct GeluFn {
    __device__ float operator()(float a) const { return gelu(a); }
};

__device__ __forceinline__ float load_at(const char* base, int64_t offset) {
    return *reinterpret_cast<const float*>(base + offset);
}

// Byte offsets of element i (row-major over a's shape) in a and, repeating modulo its shape, in b.
struct BinaryOffsets {
    int64_t a, b;
};

// Idx is uint32_t when every index fits: 64-bit division is a long subroutine, and this divides a
// few times per element.
template <typename Idx>
__device__ __forceinline__ BinaryOffsets binary_offsets(Idx i, const Shape4& sa, const Shape4& sb) {
    const Idx ne0 = Idx(sa.ne[0]), ne1 = Idx(sa.ne[1]), ne2 = Idx(sa.ne[2]);
    const Idx i0 = i % ne0, row = i / ne0;
    const Idx i1 = row % ne1, i2 = (row / ne1) % ne2, i3 = row / ne1 / ne2;
    BinaryOffsets o;
    o.a = int64_t(i0) * sa.nb[0] + int64_t(i1) * sa.nb[1] + int64_t(i2) * sa.nb[2] + int64_t(i3) * sa.nb[3];
    o.b = int64_t(i0 % Idx(sb.ne[0])) * sb.nb[0] + int64_t(i1 % Idx(sb.ne[1])) * sb.nb[1] +
          int64_t(i2 % Idx(sb.ne[2])) * sb.nb[2] + int64_t(i3 % Idx(sb.ne[3])) * sb.nb[3];
    return o;
}

// Grid-stride over the destination's elements, VW consecutive elements of one row per thread and
// step. The first version gave each row one CUDA block, so a decode step's single row of 4096 or
// 14336 elements ran on one SM (SWIGLU 48.8 us on an H100); spread over elements, the row is a few
// thousand threads across the GPU. Sources are read through their byte strides, so views (permuted,
// sliced) need no copy first, and b repeats modulo its shape.
// VW == 4 (the launcher checks): a's rows packed, 16-byte aligned, ne0 % 4 == 0; b either as wide as
// a with packed 16-byte aligned rows, or one element wide; dst 16-byte aligned. Then every load and
// store moves 16 bytes. VW == 1 covers everything else.
template <typename Fn, int VW, typename Idx>
__global__ void binary_kernel(const char* a, Shape4 sa, const char* b, Shape4 sb, float* dst, Idx n, Fn fn) {
    begin_overlapped_kernel();
    const Idx stride = Idx(gridDim.x) * blockDim.x * VW;
    for (Idx i = (Idx(blockIdx.x) * blockDim.x + threadIdx.x) * VW; i < n; i += stride) {
        const BinaryOffsets o = binary_offsets(i, sa, sb);
        if constexpr (VW == 4) {
            const float4 va = *reinterpret_cast<const float4*>(a + o.a);
            float4 vb;
            if (sb.ne[0] == 1) {
                const float s = load_at(b, o.b);
                vb = make_float4(s, s, s, s);
            } else {
                vb = *reinterpret_cast<const float4*>(b + o.b);
            }
            *reinterpret_cast<float4*>(dst + i) =
                make_float4(fn(va.x, vb.x), fn(va.y, vb.y), fn(va.z, vb.z), fn(va.w, vb.w));
        } else {
            dst[i] = fn(load_at(a, o.a), load_at(b, o.b));
        }
    }
}

// As binary_kernel, one source. VW == 4: a's rows packed and 16-byte aligned, ne0 % 4 == 0.
template <typename Fn, int VW, typename Idx>
__global__ void unary_kernel(const char* a, Shape4 sa, float* dst, Idx n, Fn fn) {
    begin_overlapped_kernel();
    const Idx stride = Idx(gridDim.x) * blockDim.x * VW;
    for (Idx i = (Idx(blockIdx.x) * blockDim.x + threadIdx.x) * VW; i < n; i += stride) {
        const BinaryOffsets o = binary_offsets(i, sa, sa);
        if constexpr (VW == 4) {
            const float4 va = *reinterpret_cast<const float4*>(a + o.a);
            *reinterpret_cast<float4*>(dst + i) = make_float4(fn(va.x), fn(va.y), fn(va.z), fn(va.w));
        } else {
            dst[i] = fn(load_at(a, o.a));
        }
    }
}

// True when p and every stride of a dimension with more than one element are 16-byte aligned.
bool aligned16(const void* p, const Shape4& s) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
    for (int i = 1; i < 4; ++i)
        if (s.ne[i] > 1 && s.nb[i] % 16 != 0) return false;
    return true;
}

// a's rows as float4s: packed, ne0 % 4 == 0, aligned (see binary_kernel).
bool rows_vec4(const void* p, const Shape4& s) {
    return s.ne[0] % 4 == 0 && s.nb[0] == sizeof(float) && aligned16(p, s);
}

constexpr int ELEMENTWISE_THREADS = 256;

// Blocks for n elements, VW per thread: enough to fill the GPU many times over; the grid-stride
// loop covers the rest.
unsigned elementwise_grid(int64_t n, int vw) {
    const int64_t blocks = ceil_div(ceil_div(n, vw), ELEMENTWISE_THREADS);
    return grid_x(blocks < 65536 ? blocks : 65536);
}

template <typename Fn, int VW>
void binary_vw(Fn fn, const char* a, const Shape4& sa, const char* b, const Shape4& sb, float* dst,
               cudaStream_t stream) {
    const int64_t n = sa.nelements();
    const unsigned grid = elementwise_grid(n, VW);
    // n plus one grid stride must fit the index type.
    if (n + int64_t(grid) * ELEMENTWISE_THREADS * VW < (int64_t(1) << 32)) {
        launch_overlapped(binary_kernel<Fn, VW, uint32_t>, grid, ELEMENTWISE_THREADS, 0, stream, a, sa, b, sb, dst,
                          uint32_t(n), fn);
    } else {
        launch_overlapped(binary_kernel<Fn, VW, int64_t>, grid, ELEMENTWISE_THREADS, 0, stream, a, sa, b, sb, dst, n,
                          fn);
    }
    CUDA_CHECK_LAUNCH();
}

template <typename Fn>
void binary(Fn fn, const void* a, const Shape4& sa, const void* b, const Shape4& sb, float* dst, cudaStream_t stream) {
    for (int i = 0; i < 4; ++i) MF_ASSERT(sb.ne[i] > 0 && sa.ne[i] % sb.ne[i] == 0);
    if (sa.nelements() == 0) return;
    const char* ac = static_cast<const char*>(a);
    const char* bc = static_cast<const char*>(b);
    const bool b_vec = sb.ne[0] == 1 || (sb.ne[0] == sa.ne[0] && rows_vec4(b, sb));
    if (rows_vec4(a, sa) && b_vec && reinterpret_cast<uintptr_t>(dst) % 16 == 0) {
        binary_vw<Fn, 4>(fn, ac, sa, bc, sb, dst, stream);
    } else {
        binary_vw<Fn, 1>(fn, ac, sa, bc, sb, dst, stream);
    }
}

template <typename Fn, int VW>
void unary_vw(Fn fn, const char* a, const Shape4& sa, float* dst, cudaStream_t stream) {
    const int64_t n = sa.nelements();
    const unsigned grid = elementwise_grid(n, VW);
    if (n + int64_t(grid) * ELEMENTWISE_THREADS * VW < (int64_t(1) << 32)) {
        launch_overlapped(unary_kernel<Fn, VW, uint32_t>, grid, ELEMENTWISE_THREADS, 0, stream, a, sa, dst, uint32_t(n),
                          fn);
    } else {
        launch_overlapped(unary_kernel<Fn, VW, int64_t>, grid, ELEMENTWISE_THREADS, 0, stream, a, sa, dst, n, fn);
    }
    CUDA_CHECK_LAUNCH();
}

template <typename Fn>
void unary(Fn fn, const void* a, const Shape4& sa, float* dst, cudaStream_t stream) {
    if (sa.nelements() == 0) return;
    const char* ac = static_cast<const char*>(a);
    if (rows_vec4(a, sa) && reinterpret_cast<uintptr_t>(dst) % 16 == 0) {
        unary_vw<Fn, 4>(fn, ac, sa, dst, stream);
    } else {
        unary_vw<Fn, 1>(fn, ac, sa, dst, stream);
    }
}

// Grid-stride over the destination's elements in row-major order; each side unravels the linear
// index through its own shape, which covers casts, cont() of permuted views and KV-cache writes.
template <typename Src, typename Dst>
__global__ void cpy_kernel(const char* src, Shape4 ss, char* dst, Shape4 sd, int64_t n) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const float v = load_f32(reinterpret_cast<const Src*>(src + ss.element_offset(i)));
        store_f32(reinterpret_cast<Dst*>(dst + sd.element_offset(i)), v);
    }
}

// One thread per element of the source rows; a KV-cache store is a few thousand elements. SPLIT:
// the rows are two tensors side by side (a CONCAT's sources); else one, src.a with strides ss.
template <typename Dst, bool SPLIT>
__global__ void set_rows_kernel(RowsF32 src, Shape4 ss, const int32_t* ids, char* dst, Shape4 sd, int64_t n) {
    // A folded ROPE's angle for this thread's first element, taken before the wait when the positions
    // are the step's input: its double-precision math then overlaps the kernel before.
    const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    const bool rope = SPLIT && src.rope.x && src.rope.pos_ready && first < n;
    const int64_t early_j = rope ? first % ss.ne[0] - src.sa.ne[0] : -1;
    const bool early = early_j >= 0 && early_j < src.rope.n_dims;
    float c0 = 0.0f, s0 = 0.0f;
    if (early) src.rope.angle(first / ss.ne[0], early_j, &c0, &s0);
    begin_overlapped_kernel();
    for (int64_t i = first; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t row = i / ss.ne[0], col = i % ss.ne[0];
        const int32_t id = ids[row];
        if (id < 0 || id >= sd.ne[1]) continue;
        float v;
        if (early && i == first) v = src.rope.rotated(row, early_j, c0, s0);
        else v = SPLIT ? src.at(col, row, 0) : *reinterpret_cast<const float*>(src.a + row * ss.nb[1] + col * ss.nb[0]);
        store_f32(reinterpret_cast<Dst*>(dst + id * sd.nb[1] + col * sd.nb[0]), v);
    }
}

// SET_ROWS of a CONCAT's two sources whose first is MUL(RMS_NORM(x), w) not launched (MLA's normed
// latent c_kv beside k_pe): one block per source row, rms_norm_threads(x's ne0) threads, so the
// row's scale is the norm kernel's sum (NormOf). src.a is then never read (never written either);
// the second part is src's b, or its folded ROPE, whose angle for the thread's first element of that
// part is taken before the wait as in set_rows_kernel.
template <typename Dst>
__global__ void set_rows_norm_kernel(RowsF32 src, NormOf norm, Shape4 ss, const int32_t* ids, char* dst, Shape4 sd) {
    const int64_t row = blockIdx.x;
    const int64_t na = src.sa.ne[0];
    // This thread's first column past the normed part.
    const int64_t t = threadIdx.x, first_b = t < na ? t + (na - t + blockDim.x - 1) / blockDim.x * blockDim.x : t;
    const int64_t early_j = first_b - na;
    const bool early = src.rope.x && src.rope.pos_ready && first_b < ss.ne[0] && early_j < src.rope.n_dims;
    float c0 = 0.0f, s0 = 0.0f;
    if (early) src.rope.angle(row, early_j, &c0, &s0);
    begin_overlapped_kernel();
    const float* x_row = norm.row(row);
    const float scale = norm.scale(x_row);  // by the whole block, before any thread may leave
    const int32_t id = ids[row];
    if (id < 0 || id >= sd.ne[1]) return;  // the whole block
    char* dst_row = dst + id * sd.nb[1];
    for (int64_t col = t; col < na; col += blockDim.x)
        store_f32(reinterpret_cast<Dst*>(dst_row + col * sd.nb[0]), norm.value(x_row, col, scale));
    for (int64_t col = first_b; col < ss.ne[0]; col += blockDim.x) {
        const float v = early && col == first_b ? src.rope.rotated(row, early_j, c0, s0) : src.at_b(col - na, row, 0);
        store_f32(reinterpret_cast<Dst*>(dst_row + col * sd.nb[0]), v);
    }
}

// One warp per destination block: lane j quantizes element j of the block, gathered from the
// source by its row-major index, so the source may have any shape and strides.
template <bool Q4>
__global__ void quantize_kernel(const char* src, Shape4 ss, uint8_t* dst, Shape4 sd, int64_t n_blocks) {
    const int64_t block = blockIdx.x * int64_t(blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (block >= n_blocks) return;  // whole warps leave together, so the shuffles below stay full
    const int lane = threadIdx.x % WARP_SIZE;
    const float x = *reinterpret_cast<const float*>(src + ss.element_offset(block * QK + lane));
    const int64_t blocks_per_row = sd.ne[0] / QK;
    uint8_t* blk = dst + sd.row_offset(block / blocks_per_row) + (block % blocks_per_row) * sd.nb[0];
    uint16_t d_bits;
    if (Q4) {
        const int q = quantize_q4_0_lane(x, &d_bits);
        const int q_hi = __shfl_down_sync(0xffffffffu, q, 16);
        if (lane < 16) blk[2 + lane] = uint8_t(q | (q_hi << 4));
    } else {
        const int q = quantize_q8_0_lane(x, &d_bits);
        blk[2 + lane] = uint8_t(int8_t(q));
    }
    if (lane == 0) *reinterpret_cast<uint16_t*>(blk) = d_bits;
}

template <bool Q4>
void cpy_quantize(const float* src, const Shape4& ss, void* dst, const Shape4& sd, cudaStream_t stream) {
    MF_ASSERT(ss.nelements() == sd.nelements());
    MF_ASSERT(sd.ne[0] % QK == 0 && sd.nb[0] == (Q4 ? Q4_0_BYTES : Q8_0_BYTES));
    const int64_t n_blocks = sd.nelements() / QK;
    if (n_blocks == 0) return;
    constexpr int warps_per_block = 8;
    quantize_kernel<Q4><<<grid_x(ceil_div(n_blocks, warps_per_block)), warps_per_block * WARP_SIZE, 0, stream>>>(
        reinterpret_cast<const char*>(src), ss, static_cast<uint8_t*>(dst), sd, n_blocks);
    CUDA_CHECK_LAUNCH();
}

// Element j of a packed row of T.
template <typename T>
__device__ __forceinline__ float row_element(const char* row, int64_t j);
template <>
__device__ __forceinline__ float row_element<float>(const char* row, int64_t j) {
    return reinterpret_cast<const float*>(row)[j];
}
template <>
__device__ __forceinline__ float row_element<__half>(const char* row, int64_t j) {
    return __half2float(reinterpret_cast<const __half*>(row)[j]);
}
template <>
__device__ __forceinline__ float row_element<__nv_bfloat16>(const char* row, int64_t j) {
    return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(row)[j]);
}
template <>
__device__ __forceinline__ float row_element<BlockQ8_0>(const char* row, int64_t j) {
    return dequant_q8_0(reinterpret_cast<const uint8_t*>(row) + (j / QK) * Q8_0_BYTES, int(j % QK));
}
template <>
__device__ __forceinline__ float row_element<BlockQ4_0>(const char* row, int64_t j) {
    return dequant_q4_0(reinterpret_cast<const uint8_t*>(row) + (j / QK) * Q4_0_BYTES, int(j % QK));
}
template <>
__device__ __forceinline__ float row_element<BlockQ4_1>(const char* row, int64_t j) {
    return dequant_q4_1(reinterpret_cast<const uint8_t*>(row) + (j / QK) * Q4_1_BYTES, int(j % QK));
}
template <>
__device__ __forceinline__ float row_element<BlockQ5_0>(const char* row, int64_t j) {
    return dequant_q5_0(reinterpret_cast<const uint8_t*>(row) + (j / QK) * Q5_0_BYTES, int(j % QK));
}
template <>
__device__ __forceinline__ float row_element<BlockQ5_1>(const char* row, int64_t j) {
    return dequant_q5_1(reinterpret_cast<const uint8_t*>(row) + (j / QK) * Q5_1_BYTES, int(j % QK));
}
// K-quants decode their sub-block scales again for every element: GET_ROWS reads a few embedding
// rows per token, so the simplicity is worth more than the arithmetic.
template <>
__device__ __forceinline__ float row_element<BlockQ4_K>(const char* row, int64_t j) {
    return dequant_q4_k(reinterpret_cast<const uint8_t*>(row) + (j / QK_K) * Q4_K_BYTES, int(j % QK_K));
}
template <>
__device__ __forceinline__ float row_element<BlockQ5_K>(const char* row, int64_t j) {
    return dequant_q5_k(reinterpret_cast<const uint8_t*>(row) + (j / QK_K) * Q5_K_BYTES, int(j % QK_K));
}
template <>
__device__ __forceinline__ float row_element<BlockQ6_K>(const char* row, int64_t j) {
    return dequant_q6_k(reinterpret_cast<const uint8_t*>(row) + (j / QK_K) * Q6_K_BYTES, int(j % QK_K));
}

// One block per output row (ne0 elements): looks the id up once, then the threads dequantize the
// source row element by element. Embedding lookups are a few rows per token, so this is not hot.
template <typename T>
__global__ void get_rows_kernel(const char* src, Shape4 ss, const char* ids, Shape4 si, float* dst, int64_t ne0) {
    begin_overlapped_kernel();
    const int64_t row = blockIdx.x;  // over [n, B2, B3]
    const int64_t i1 = row % si.ne[0];
    const int64_t i2 = (row / si.ne[0]) % si.ne[1];
    const int64_t i3 = row / (si.ne[0] * si.ne[1]);
    const int32_t id = *reinterpret_cast<const int32_t*>(ids + i1 * si.nb[0] + i2 * si.nb[1] + i3 * si.nb[2]);
    float* dst_row = dst + row * ne0;
    if (id < 0 || id >= ss.ne[1]) {
        for (int64_t j = threadIdx.x; j < ne0; j += blockDim.x) dst_row[j] = 0.0f;
        return;
    }
    const char* src_row = src + id * ss.nb[1] + i2 * ss.nb[2] + i3 * ss.nb[3];
    for (int64_t j = threadIdx.x; j < ne0; j += blockDim.x) dst_row[j] = row_element<T>(src_row, j);
}

__global__ void concat_kernel(const char* a, Shape4 sa, const char* b, Shape4 sb, int dim, float* dst, Shape4 sd) {
    begin_overlapped_kernel();
    const int64_t row = blockIdx.x;
    int64_t idx[4] = {0, row % sd.ne[1], (row / sd.ne[1]) % sd.ne[2], row / (sd.ne[1] * sd.ne[2])};
    float* dst_row = dst + row * sd.ne[0];
    for (int64_t i0 = threadIdx.x; i0 < sd.ne[0]; i0 += blockDim.x) {
        idx[0] = i0;
        const bool from_a = idx[dim] < sa.ne[dim];
        const Shape4& s = from_a ? sa : sb;
        int64_t offset = 0;
        for (int d = 0; d < 4; ++d) offset += (d == dim && !from_a ? idx[d] - sa.ne[d] : idx[d]) * s.nb[d];
        dst_row[i0] = load_at(from_a ? a : b, offset);
    }
}

}  // namespace

void launch_binary_f32(BinaryOp op, const void* a, const Shape4& sa, const void* b, const Shape4& sb, float* dst,
                       cudaStream_t stream) {
    switch (op) {
        case BinaryOp::ADD: binary(AddFn{}, a, sa, b, sb, dst, stream); return;
        case BinaryOp::MUL: binary(MulFn{}, a, sa, b, sb, dst, stream); return;
        case BinaryOp::SWIGLU: binary(SwigluFn{}, a, sa, b, sb, dst, stream); return;
        case BinaryOp::GEGLU: binary(GegluFn{}, a, sa, b, sb, dst, stream); return;
    }
    MF_ASSERT_MSG(false, "launch_binary_f32: unknown op");
}

void launch_unary_f32(UnaryOp op, float param, const void* a, const Shape4& sa, float* dst, cudaStream_t stream) {
    switch (op) {
        case UnaryOp::SCALE: unary(ScaleFn{param}, a, sa, dst, stream); return;
        case UnaryOp::SILU: unary(SiluFn{}, a, sa, dst, stream); return;
        case UnaryOp::GELU: unary(GeluFn{}, a, sa, dst, stream); return;
    }
    MF_ASSERT_MSG(false, "launch_unary_f32: unknown op");
}

template <typename Src, typename Dst>
void launch_cpy(const void* src, const Shape4& ss, void* dst, const Shape4& sd, cudaStream_t stream) {
    const int64_t n = sd.nelements();
    MF_ASSERT(ss.nelements() == n);
    if (n == 0) return;
    constexpr int threads = 256;
    // Enough blocks to fill the GPU many times over; the grid-stride loop covers the rest.
    const int64_t blocks = ceil_div(n, threads) < 65536 ? ceil_div(n, threads) : 65536;
    cpy_kernel<Src, Dst><<<grid_x(blocks), threads, 0, stream>>>(static_cast<const char*>(src), ss,
                                                                   static_cast<char*>(dst), sd, n);
    CUDA_CHECK_LAUNCH();
}

void launch_cpy_f32_q8_0(const float* src, const Shape4& ss, void* dst, const Shape4& sd, cudaStream_t stream) {
    cpy_quantize<false>(src, ss, dst, sd, stream);
}

void launch_cpy_f32_q4_0(const float* src, const Shape4& ss, void* dst, const Shape4& sd, cudaStream_t stream) {
    cpy_quantize<true>(src, ss, dst, sd, stream);
}

template <typename T>
void launch_get_rows(const void* src, const Shape4& ss, const int32_t* ids, const Shape4& si, float* dst,
                     cudaStream_t stream) {
    MF_ASSERT(si.ne[1] == ss.ne[2] && si.ne[2] == ss.ne[3] && si.ne[3] == 1);
    const int64_t rows = si.ne[0] * si.ne[1] * si.ne[2];
    if (rows == 0 || ss.ne[0] == 0) return;
    launch_overlapped(get_rows_kernel<T>, grid_x(rows), row_block_size(ss.ne[0]), 0, stream,
                      static_cast<const char*>(src), ss, reinterpret_cast<const char*>(ids), si, dst, ss.ne[0]);
    CUDA_CHECK_LAUNCH();
}

template <typename Dst>
void launch_set_rows(const RowsF32& src, const Shape4& ss, const int32_t* ids, void* dst, const Shape4& sd,
                     cudaStream_t stream) {
    MF_ASSERT(ss.ne[0] == sd.ne[0] && ss.ne[2] == 1 && ss.ne[3] == 1 && sd.ne[2] == 1 && sd.ne[3] == 1);
    const int64_t n = ss.ne[0] * ss.ne[1];
    if (n == 0) return;
    constexpr int threads = 256;
    const int64_t blocks = ceil_div(n, threads) < 65536 ? ceil_div(n, threads) : 65536;
    const bool split = src.b || src.rope.x;
    launch_overlapped(split ? set_rows_kernel<Dst, true> : set_rows_kernel<Dst, false>, grid_x(blocks), threads, 0,
                      stream, src, ss, ids, static_cast<char*>(dst), sd, n);
    CUDA_CHECK_LAUNCH();
}

template <typename Dst>
void launch_set_rows_normed(const RowsF32& src, const NormOf& norm, const Shape4& ss, const int32_t* ids, void* dst,
                            const Shape4& sd, cudaStream_t stream) {
    MF_ASSERT(ss.ne[0] == sd.ne[0] && ss.ne[2] == 1 && ss.ne[3] == 1 && sd.ne[2] == 1 && sd.ne[3] == 1);
    MF_ASSERT(norm.x && norm.w && norm.sx.nb[0] == sizeof(float) && norm.sx.ne[0] == src.sa.ne[0]);
    MF_ASSERT(norm.sx.ne[1] == ss.ne[1] && norm.sx.ne[2] == 1 && norm.sx.ne[3] == 1 && src.sa.ne[0] < ss.ne[0]);
    if (ss.ne[1] == 0) return;
    launch_overlapped(set_rows_norm_kernel<Dst>, grid_x(ss.ne[1]), rms_norm_threads(norm.sx.ne[0]), 0, stream, src,
                      norm, ss, ids, static_cast<char*>(dst), sd);
    CUDA_CHECK_LAUNCH();
}

void launch_concat_f32(const void* a, const Shape4& sa, const void* b, const Shape4& sb, int dim, float* dst,
                       cudaStream_t stream) {
    MF_ASSERT(dim >= 0 && dim < 4);
    Shape4 sd = sa;
    sd.ne[dim] += sb.ne[dim];
    sd.nb[0] = sizeof(float);
    for (int i = 1; i < 4; ++i) sd.nb[i] = sd.nb[i - 1] * sd.ne[i - 1];
    if (sd.nelements() == 0) return;
    launch_overlapped(concat_kernel, grid_x(sd.nrows()), row_block_size(sd.ne[0]), 0, stream,
                      static_cast<const char*>(a), sa, static_cast<const char*>(b), sb, dim, dst, sd);
    CUDA_CHECK_LAUNCH();
}

// Every pair of the scalar float types (the CUDA backend's supports_op admits all nine).
template void launch_cpy<float, float>(const void*, const Shape4&, void*, const Shape4&, cudaStream_t);
template void launch_cpy<float, __half>(const void*, const Shape4&, void*, const Shape4&, cudaStream_t);
template void launch_cpy<float, __nv_bfloat16>(const void*, const Shape4&, void*, const Shape4&, cudaStream_t);
template void launch_cpy<__half, float>(const void*, const Shape4&, void*, const Shape4&, cudaStream_t);
template void launch_cpy<__half, __half>(const void*, const Shape4&, void*, const Shape4&, cudaStream_t);
template void launch_cpy<__half, __nv_bfloat16>(const void*, const Shape4&, void*, const Shape4&, cudaStream_t);
template void launch_cpy<__nv_bfloat16, float>(const void*, const Shape4&, void*, const Shape4&, cudaStream_t);
template void launch_cpy<__nv_bfloat16, __half>(const void*, const Shape4&, void*, const Shape4&, cudaStream_t);
template void launch_cpy<__nv_bfloat16, __nv_bfloat16>(const void*, const Shape4&, void*, const Shape4&, cudaStream_t);

template void launch_set_rows<float>(const RowsF32&, const Shape4&, const int32_t*, void*, const Shape4&,
                                     cudaStream_t);
template void launch_set_rows<__half>(const RowsF32&, const Shape4&, const int32_t*, void*, const Shape4&,
                                      cudaStream_t);
template void launch_set_rows<__nv_bfloat16>(const RowsF32&, const Shape4&, const int32_t*, void*, const Shape4&,
                                             cudaStream_t);

template void launch_set_rows_normed<float>(const RowsF32&, const NormOf&, const Shape4&, const int32_t*, void*,
                                            const Shape4&, cudaStream_t);
template void launch_set_rows_normed<__half>(const RowsF32&, const NormOf&, const Shape4&, const int32_t*, void*,
                                             const Shape4&, cudaStream_t);
template void launch_set_rows_normed<__nv_bfloat16>(const RowsF32&, const NormOf&, const Shape4&, const int32_t*,
                                                    void*, const Shape4&, cudaStream_t);

template void launch_get_rows<float>(const void*, const Shape4&, const int32_t*, const Shape4&, float*, cudaStream_t);
template void launch_get_rows<__half>(const void*, const Shape4&, const int32_t*, const Shape4&, float*, cudaStream_t);
template void launch_get_rows<__nv_bfloat16>(const void*, const Shape4&, const int32_t*, const Shape4&, float*,
                                             cudaStream_t);
template void launch_get_rows<BlockQ8_0>(const void*, const Shape4&, const int32_t*, const Shape4&, float*,
                                         cudaStream_t);
template void launch_get_rows<BlockQ4_0>(const void*, const Shape4&, const int32_t*, const Shape4&, float*,
                                         cudaStream_t);
template void launch_get_rows<BlockQ4_1>(const void*, const Shape4&, const int32_t*, const Shape4&, float*,
                                         cudaStream_t);
template void launch_get_rows<BlockQ5_0>(const void*, const Shape4&, const int32_t*, const Shape4&, float*,
                                         cudaStream_t);
template void launch_get_rows<BlockQ5_1>(const void*, const Shape4&, const int32_t*, const Shape4&, float*,
                                         cudaStream_t);
template void launch_get_rows<BlockQ4_K>(const void*, const Shape4&, const int32_t*, const Shape4&, float*,
                                         cudaStream_t);
template void launch_get_rows<BlockQ5_K>(const void*, const Shape4&, const int32_t*, const Shape4&, float*,
                                         cudaStream_t);
template void launch_get_rows<BlockQ6_K>(const void*, const Shape4&, const int32_t*, const Shape4&, float*,
                                         cudaStream_t);

}  // namespace mf
