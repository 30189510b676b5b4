// The dtype table: every element type minfer knows, with GGUF/ggml-compatible ids and block layouts.
// Scalar conversions (f16, bf16) live here; block quantization kernels live in quants.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace mf {

// Values are the ggml type ids stored in GGUF tensor infos; never renumber.
enum class DType : uint32_t {
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
    Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
    IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22,
    IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
    TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39, NVFP4 = 40, Q1_0 = 41,
};

// Converts n elements of a row (n a multiple of block_size) to f32.
using ToFloatFn = void (*)(const void* src, float* dst, int64_t n);
// Reference conversion of n f32 elements into this type's blocks.
using FromFloatFn = void (*)(const float* src, void* dst, int64_t n);
// Dot product of a weight row (this type) with an activation row in vec_dot_type; n elements.
using VecDotFn = float (*)(int64_t n, const void* w, const void* act);
// The dots of one weight row with four activation rows act, act + stride, act + 2 stride, act + 3
// stride (bytes) into out[0..3], each bit-identical with vec_dot of the same pair: the weight block is
// unpacked once for the four (prefill's matmul). act_d: where the activation type is Q8_0 or Q8_1, the
// four rows' block scales as floats (q8_scales4: block i's four d, then for Q8_1 its four s), formed
// once by the caller for all the weight rows it passes; ignored for other activation types (may be
// null there).
using VecDot4Fn = void (*)(int64_t n, const void* w, const void* act, size_t stride, const float* act_d, float* out);
// The dots of four weight rows w, w + stride, w + 2 stride, w + 3 stride (bytes) with one activation
// row into out[0..3], each bit-identical with vec_dot of the same pair: the activation block is loaded
// once for the four and their chains run side by side (decode's matmul).
using VecDotRows4Fn = void (*)(int64_t n, const void* w, size_t stride, const void* act, float* out);

struct DTypeTraits {
    const char* name;
    int64_t block_size;     // elements per block (1 for scalar types)
    size_t type_size;       // bytes per block
    bool is_quantized;
    bool computable;        // minfer has kernels for it (others are only read from files)
    DType vec_dot_type;     // format the activation row is converted to for vec_dot
    ToFloatFn to_float;     // null for integer types and types minfer cannot compute
    FromFloatFn from_float;
    VecDotFn vec_dot;
    VecDot4Fn vec_dot4;     // null: the matmul calls vec_dot for each pair
    VecDotRows4Fn vec_dot_rows4;  // null: decode calls vec_dot for each row
};

// Traits of a known type; asserts on an unknown one (check dtype_is_known first for file input).
const DTypeTraits& dtype_traits(DType t);
// True when id names a type in the table (used to validate untrusted GGUF type ids).
bool dtype_is_known(uint32_t id);
inline const char* dtype_name(DType t) { return dtype_traits(t).name; }
// Looks a type up by its lower-case name ("q4_k", "f16"); returns false when unknown.
bool dtype_from_name(const char* name, DType* out);
// Bytes of one row of ne0 elements; ne0 must be a multiple of the block size.
size_t dtype_row_size(DType t, int64_t ne0);

// IEEE half and bfloat16 <-> f32, bit-exact with ggml's reference conversions.
inline float fp32_from_bits(uint32_t w) { float f; std::memcpy(&f, &w, 4); return f; }
inline uint32_t fp32_to_bits(float f) { uint32_t w; std::memcpy(&w, &f, 4); return w; }

inline float fp16_to_fp32(uint16_t h) {
    const uint32_t w = uint32_t(h) << 16;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t two_w = w + w;
    const uint32_t exp_offset = 0xE0u << 23;
    const float exp_scale = fp32_from_bits(0x7800000u);
    const float normalized = fp32_from_bits((two_w >> 4) + exp_offset) * exp_scale;
    const uint32_t magic_mask = 126u << 23;
    const float magic_bias = 0.5f;
    const float denormalized = fp32_from_bits((two_w >> 17) | magic_mask) - magic_bias;
    const uint32_t denormalized_cutoff = 1u << 27;
    const uint32_t result = sign | (two_w < denormalized_cutoff ? fp32_to_bits(denormalized)
                                                                 : fp32_to_bits(normalized));
    return fp32_from_bits(result);
}

inline uint16_t fp32_to_fp16(float f) {
    const float scale_to_inf = fp32_from_bits(0x77800000u);
    const float scale_to_zero = fp32_from_bits(0x08800000u);
    float base = (f < 0 ? -f : f) * scale_to_inf * scale_to_zero;
    const uint32_t w = fp32_to_bits(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = fp32_from_bits((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = fp32_to_bits(base);
    const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
    const uint32_t mantissa_bits = bits & 0x00000FFFu;
    const uint32_t nonsign = exp_bits + mantissa_bits;
    return uint16_t((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

inline float bf16_to_fp32(uint16_t h) { return fp32_from_bits(uint32_t(h) << 16); }

// Round to nearest even; NaN stays a quiet NaN (as ggml does).
inline uint16_t fp32_to_bf16(float f) {
    uint32_t u = fp32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 64);
    return uint16_t((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

}  // namespace mf
