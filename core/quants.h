// Block quantization: GGUF/llama.cpp-compatible block layouts, row (de)quantizers and dot kernels.
// Every dot kernel has a portable scalar reference (*_ref) and, where compiled, an AVX2+FMA fast path.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace mf {

constexpr int QK4_0 = 32;
constexpr int QK4_1 = 32;
constexpr int QK5_0 = 32;
constexpr int QK5_1 = 32;
constexpr int QK8_0 = 32;
constexpr int QK8_1 = 32;
constexpr int QK_K = 256;         // super-block size of the K-quants
constexpr int K_SCALE_SIZE = 12;  // bytes of packed 6-bit scales and mins in Q4_K / Q5_K

// Halves are uint16_t holding IEEE fp16 bits (fp16_to_fp32 / fp32_to_fp16 in dtype.h).
// Legacy quants: element j < 16 sits in the low nibble of qs[j], element j + 16 in its high nibble.

// x = d * (q - 8), q in [0, 15].
struct block_q4_0 {
    uint16_t d;
    uint8_t qs[QK4_0 / 2];
};
static_assert(sizeof(block_q4_0) == 18, "block_q4_0 layout");

// x = d * q + m, q in [0, 15].
struct block_q4_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qs[QK4_1 / 2];
};
static_assert(sizeof(block_q4_1) == 20, "block_q4_1 layout");

// x = d * (q - 16), q in [0, 31]; bit 4 of element j is bit j of the little-endian uint32 qh.
struct block_q5_0 {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[QK5_0 / 2];
};
static_assert(sizeof(block_q5_0) == 22, "block_q5_0 layout");

// x = d * q + m, q in [0, 31]; high bits as in block_q5_0.
struct block_q5_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
};
static_assert(sizeof(block_q5_1) == 24, "block_q5_1 layout");

// x = d * q.
struct block_q8_0 {
    uint16_t d;
    int8_t qs[QK8_0];
};
static_assert(sizeof(block_q8_0) == 34, "block_q8_0 layout");

// x = d * q; s = d * sum(qs), so a Q4_1/Q5_1 dot can add its min term without touching qs.
struct block_q8_1 {
    uint16_t d;
    uint16_t s;
    int8_t qs[QK8_1];
};
static_assert(sizeof(block_q8_1) == 36, "block_q8_1 layout");

// 256 elements in 8 sub-blocks of 32: x = d * sc[j] * q - dmin * m[j], q in [0, 15].
// scales packs 8 six-bit scales and 8 six-bit mins (see get_scale_min_k4 in quants_k.cpp).
// qs: 4 chunks of 32 bytes; chunk c holds sub-block 2c in low nibbles, 2c + 1 in high nibbles.
struct block_q4_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
};
static_assert(sizeof(block_q4_K) == 144, "block_q4_K layout");

// As block_q4_K with q in [0, 31]; bit 4 of element 64c + l is bit 2c of qh[l], of 64c + 32 + l bit 2c + 1.
struct block_q5_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
};
static_assert(sizeof(block_q5_K) == 176, "block_q5_K layout");

// 256 elements in 16 sub-blocks of 16: x = d * scales[j] * (q - 32), q in [0, 63].
// Per 128-element half h: ql[64h + l] low/high nibbles are elements l / l + 64 (l < 64),
// qh[32h + l] bit pairs 0..3 are the top two bits of elements l, l + 32, l + 64, l + 96.
struct block_q6_K {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    uint16_t d;
};
static_assert(sizeof(block_q6_K) == 210, "block_q6_K layout");

// Activation format of the K-quant dots: x = d * q (d is a full float), bsums[j] = sum of qs[16j .. 16j + 15].
struct block_q8_K {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
};
static_assert(sizeof(block_q8_K) == 292, "block_q8_K layout");

// Row conversions. n is the element count, a multiple of the type's block size. Dequantization is
// bit-exact with llama.cpp; quantization follows llama.cpp's reference (quantize_row_*_ref) algorithms.
void f32_to_float(const void* src, float* dst, int64_t n);
void f32_from_float(const float* src, void* dst, int64_t n);
void f16_to_float(const void* src, float* dst, int64_t n);
void f16_from_float(const float* src, void* dst, int64_t n);
void bf16_to_float(const void* src, float* dst, int64_t n);
void bf16_from_float(const float* src, void* dst, int64_t n);

// The block scales of four Q8_0 rows of n values (src, src + stride, src + 2 stride, src + 3 stride
// bytes) as floats, block i's four at dst[4 i .. 4 i + 3]; of four Q8_1 rows, block i's four d at
// dst[8 i ..] and its four s after them: VecDot4Fn's act_d.
void q8_0_scales4(const void* src, size_t stride, int64_t n, float* dst);
void q8_1_scales4(const void* src, size_t stride, int64_t n, float* dst);

void dequantize_row_q4_0(const void* src, float* dst, int64_t n);
void dequantize_row_q4_1(const void* src, float* dst, int64_t n);
void dequantize_row_q5_0(const void* src, float* dst, int64_t n);
void dequantize_row_q5_1(const void* src, float* dst, int64_t n);
void dequantize_row_q8_0(const void* src, float* dst, int64_t n);
void dequantize_row_q8_1(const void* src, float* dst, int64_t n);
void dequantize_row_q2_K(const void* src, float* dst, int64_t n);
void dequantize_row_q3_K(const void* src, float* dst, int64_t n);
void dequantize_row_q4_K(const void* src, float* dst, int64_t n);
void dequantize_row_q5_K(const void* src, float* dst, int64_t n);
void dequantize_row_q6_K(const void* src, float* dst, int64_t n);
void dequantize_row_q8_K(const void* src, float* dst, int64_t n);

void quantize_row_q4_0_ref(const float* src, void* dst, int64_t n);
void quantize_row_q4_1_ref(const float* src, void* dst, int64_t n);
void quantize_row_q5_0_ref(const float* src, void* dst, int64_t n);
void quantize_row_q5_1_ref(const float* src, void* dst, int64_t n);
void quantize_row_q8_0_ref(const float* src, void* dst, int64_t n);
void quantize_row_q8_1_ref(const float* src, void* dst, int64_t n);
void quantize_row_q4_K_ref(const float* src, void* dst, int64_t n);
void quantize_row_q5_K_ref(const float* src, void* dst, int64_t n);
void quantize_row_q6_K_ref(const float* src, void* dst, int64_t n);
void quantize_row_q8_K_ref(const float* src, void* dst, int64_t n);

// Scalar dots: weight row w (first type) . activation row act (second type), n elements.
float vec_dot_f32_ref(int64_t n, const void* w, const void* act);
float vec_dot_f16_f32_ref(int64_t n, const void* w, const void* act);
float vec_dot_bf16_f32_ref(int64_t n, const void* w, const void* act);
float vec_dot_q4_0_q8_0_ref(int64_t n, const void* w, const void* act);
float vec_dot_q4_1_q8_1_ref(int64_t n, const void* w, const void* act);
float vec_dot_q5_0_q8_0_ref(int64_t n, const void* w, const void* act);
float vec_dot_q5_1_q8_1_ref(int64_t n, const void* w, const void* act);
float vec_dot_q8_0_q8_0_ref(int64_t n, const void* w, const void* act);
float vec_dot_q4_K_q8_K_ref(int64_t n, const void* w, const void* act);
float vec_dot_q5_K_q8_K_ref(int64_t n, const void* w, const void* act);
float vec_dot_q6_K_q8_K_ref(int64_t n, const void* w, const void* act);

// The split row layout a backend may keep weights in (the CUDA backend does, for MUL_MAT_ID's experts):
// a row of n blocks whose block is a 2-byte fp16 scale then its quants (Q4_0, Q8_0) rearranged as the n
// blocks' quants, then their n scales. The row keeps its bytes and size, so row views stay valid, and
// the quants of a row whose bytes are a multiple of 16 are 16-byte aligned. rows_split / rows_join
// rearrange n_rows rows of ne0 elements from src to dst (apart) and back.
bool rows_split_fits(DType t);
void rows_split(DType t, int64_t ne0, size_t n_rows, const void* src, void* dst);
void rows_join(DType t, int64_t ne0, size_t n_rows, const void* src, void* dst);

// The scalar dot of weight type t against its vec_dot_type; null when t is not computable.
VecDotFn vec_dot_ref(DType t);
// The AVX2+FMA dot of weight type t; null when t has none or the build lacks AVX2/FMA.
VecDotFn vec_dot_avx2(DType t);
// The AVX2+FMA four-row dot (VecDot4Fn) of weight type t: the legacy types, Q4_K and Q6_K; null otherwise.
VecDot4Fn vec_dot4_avx2(DType t);
// The AVX2+FMA four-weight-row dot (VecDotRows4Fn) of weight type t: Q4_0, Q4_1, Q5_0, Q5_1; null otherwise.
VecDotRows4Fn vec_dot_rows4_avx2(DType t);
// AVX2 activation quantizers (Q8_0, Q8_1, Q8_K), bit-identical to the *_ref ones; null otherwise.
FromFloatFn from_float_avx2(DType t);

}  // namespace mf
