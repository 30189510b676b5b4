// Quantized KV-cache stores: one thread per 32-element block, following core/quants.cpp's
// reference quantizers operation for operation (same rounding, same fp16 scale), so the CPU and
// CUDA caches hold the same bytes.
#include "cuda/kv.cuh"

namespace mf {

namespace {

__device__ __forceinline__ void quantize_block_q8_0(const float* x, int64_t stride, char* out) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = fmaxf(amax, fabsf(x[j * stride]));
    const float d = amax / 127;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    *reinterpret_cast<uint16_t*>(out) = f32_to_fp16_bits(d);
    for (int j = 0; j < 32; ++j) out[2 + j] = char(int8_t(roundf(x[j * stride] * id)));
}

__device__ __forceinline__ void quantize_block_q4_0(const float* x, int64_t stride, char* out) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; ++j) {
        const float v = x[j * stride];
        if (amax < fabsf(v)) {
            amax = fabsf(v);
            max = v;
        }
    }
    const float d = max / -8;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    *reinterpret_cast<uint16_t*>(out) = f32_to_fp16_bits(d);
    for (int j = 0; j < 16; ++j) {
        const int q0 = min(15, int(int8_t(x[j * stride] * id + 8.5f)));
        const int q1 = min(15, int(int8_t(x[(j + 16) * stride] * id + 8.5f)));
        out[2 + j] = char(uint8_t(q0 | (q1 << 4)));
    }
}

template <bool Q8>
__global__ void set_rows_quant_kernel(const char* __restrict__ src, Shape4 ss, const int32_t* __restrict__ ids,
                                      char* __restrict__ dst, int64_t dst_nb1, int64_t blocks_per_row, int64_t n) {
    begin_overlapped_kernel();
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const int64_t row = i / blocks_per_row, b = i % blocks_per_row;
    const float* x = reinterpret_cast<const float*>(src + row * ss.nb[1] + b * 32 * ss.nb[0]);
    const int64_t stride = ss.nb[0] / int64_t(sizeof(float));
    char* out = dst + int64_t(ids[row]) * dst_nb1 + b * (Q8 ? 34 : 18);
    if (Q8) quantize_block_q8_0(x, stride, out);
    else quantize_block_q4_0(x, stride, out);
}

}  // namespace

void launch_set_rows_quant(DType type, const float* src, const Shape4& ss, const int32_t* ids, void* dst,
                           int64_t dst_nb1, cudaStream_t stream) {
    MF_ASSERT_MSG(ss.ne[0] % 32 == 0 && ss.ne[2] == 1 && ss.ne[3] == 1, "set_rows_quant: shape");
    const int64_t blocks_per_row = ss.ne[0] / 32;
    const int64_t n = blocks_per_row * ss.ne[1];
    const int threads = 128;
    const char* s = reinterpret_cast<const char*>(src);
    char* d = static_cast<char*>(dst);
    if (type == DType::Q8_0)
        launch_overlapped(set_rows_quant_kernel<true>, grid_x(ceil_div(n, threads)), threads, 0, stream, s, ss, ids, d,
                          dst_nb1, blocks_per_row, n);
    else if (type == DType::Q4_0)
        launch_overlapped(set_rows_quant_kernel<false>, grid_x(ceil_div(n, threads)), threads, 0, stream, s, ss, ids, d,
                          dst_nb1, blocks_per_row, n);
    else
        MF_ASSERT_MSG(false, "set_rows_quant: not q8_0 or q4_0");
    CUDA_CHECK_LAUNCH();
}

}  // namespace mf
