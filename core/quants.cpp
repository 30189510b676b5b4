// Scalar row kernels for the float types (F32, F16, BF16) and the 32-element legacy quants (Q4_0 .. Q8_1).
// Layouts and algorithms follow llama.cpp's ggml-quants.c so that real model files decode bit-exactly.

// Dequantization must round exactly as llama.cpp's C reference does (one rounding per multiply and per
// add), so stop the compiler from fusing them into FMAs here; -march=native would otherwise do it.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "core/quants.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/common.h"

namespace mf {

// ---- float types ----------------------------------------------------------------------------

void f32_to_float(const void* src, float* dst, int64_t n) { std::memcpy(dst, src, size_t(n) * sizeof(float)); }
void f32_from_float(const float* src, void* dst, int64_t n) { std::memcpy(dst, src, size_t(n) * sizeof(float)); }

void f16_to_float(const void* src, float* dst, int64_t n) {
    const uint16_t* x = static_cast<const uint16_t*>(src);
    int64_t i = 0;
#if defined(__F16C__)
    // Eight at a time in hardware (exact, as every f16 is an f32): f16 KV-cache rows are converted
    // once per attended position, so this is on the CPU's decode path.
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
#endif
    for (; i < n; ++i) dst[i] = fp16_to_fp32(x[i]);
}

void f16_from_float(const float* src, void* dst, int64_t n) {
    uint16_t* y = static_cast<uint16_t*>(dst);
    for (int64_t i = 0; i < n; ++i) y[i] = fp32_to_fp16(src[i]);
}

void bf16_to_float(const void* src, float* dst, int64_t n) {
    const uint16_t* x = static_cast<const uint16_t*>(src);
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(x[i]);
}

void bf16_from_float(const float* src, void* dst, int64_t n) {
    uint16_t* y = static_cast<uint16_t*>(dst);
    for (int64_t i = 0; i < n; ++i) y[i] = fp32_to_bf16(src[i]);
}

// The float dots accumulate in double, as ggml's scalar ones do, so they serve as a reference.
float vec_dot_f32_ref(int64_t n, const void* w, const void* act) {
    const float* x = static_cast<const float*>(w);
    const float* y = static_cast<const float*>(act);
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += double(x[i]) * double(y[i]);
    return float(sum);
}

float vec_dot_f16_f32_ref(int64_t n, const void* w, const void* act) {
    const uint16_t* x = static_cast<const uint16_t*>(w);
    const float* y = static_cast<const float*>(act);
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += double(fp16_to_fp32(x[i])) * double(y[i]);
    return float(sum);
}

float vec_dot_bf16_f32_ref(int64_t n, const void* w, const void* act) {
    const uint16_t* x = static_cast<const uint16_t*>(w);
    const float* y = static_cast<const float*>(act);
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += double(bf16_to_fp32(x[i])) * double(y[i]);
    return float(sum);
}

// ---- legacy quants: quantize -----------------------------------------------------------------

// Symmetric types take their scale from the signed value of largest magnitude, so that value maps
// exactly onto the most negative level (-8 or -16), which has no positive counterpart.
void quantize_row_q4_0_ref(const float* src, void* dst, int64_t n) {
    MF_ASSERT(n % QK4_0 == 0);
    block_q4_0* y = static_cast<block_q4_0*>(dst);
    for (int64_t i = 0; i < n / QK4_0; ++i) {
        const float* x = src + i * QK4_0;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK4_0; ++j) {
            if (amax < std::fabs(x[j])) {
                amax = std::fabs(x[j]);
                max = x[j];
            }
        }
        const float d = max / -8;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        for (int j = 0; j < QK4_0 / 2; ++j) {
            const uint8_t q0 = uint8_t(std::min(15, int(int8_t(x[j] * id + 8.5f))));
            const uint8_t q1 = uint8_t(std::min(15, int(int8_t(x[j + QK4_0 / 2] * id + 8.5f))));
            y[i].qs[j] = uint8_t(q0 | (q1 << 4));
        }
    }
}

void quantize_row_q4_1_ref(const float* src, void* dst, int64_t n) {
    MF_ASSERT(n % QK4_1 == 0);
    block_q4_1* y = static_cast<block_q4_1*>(dst);
    for (int64_t i = 0; i < n / QK4_1; ++i) {
        const float* x = src + i * QK4_1;
        float min = x[0], max = x[0];
        for (int j = 1; j < QK4_1; ++j) {
            min = std::min(min, x[j]);
            max = std::max(max, x[j]);
        }
        const float d = (max - min) / 15;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        y[i].m = fp32_to_fp16(min);
        for (int j = 0; j < QK4_1 / 2; ++j) {
            const uint8_t q0 = uint8_t(std::min(15, int(int8_t((x[j] - min) * id + 0.5f))));
            const uint8_t q1 = uint8_t(std::min(15, int(int8_t((x[j + QK4_1 / 2] - min) * id + 0.5f))));
            y[i].qs[j] = uint8_t(q0 | (q1 << 4));
        }
    }
}

void quantize_row_q5_0_ref(const float* src, void* dst, int64_t n) {
    MF_ASSERT(n % QK5_0 == 0);
    block_q5_0* y = static_cast<block_q5_0*>(dst);
    for (int64_t i = 0; i < n / QK5_0; ++i) {
        const float* x = src + i * QK5_0;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK5_0; ++j) {
            if (amax < std::fabs(x[j])) {
                amax = std::fabs(x[j]);
                max = x[j];
            }
        }
        const float d = max / -16;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        uint32_t qh = 0;
        for (int j = 0; j < QK5_0 / 2; ++j) {
            const uint8_t q0 = uint8_t(std::min(31, int(int8_t(x[j] * id + 16.5f))));
            const uint8_t q1 = uint8_t(std::min(31, int(int8_t(x[j + QK5_0 / 2] * id + 16.5f))));
            y[i].qs[j] = uint8_t((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh |= uint32_t((q0 & 0x10u) >> 4) << j;
            qh |= uint32_t((q1 & 0x10u) >> 4) << (j + QK5_0 / 2);
        }
        std::memcpy(y[i].qh, &qh, sizeof qh);
    }
}

void quantize_row_q5_1_ref(const float* src, void* dst, int64_t n) {
    MF_ASSERT(n % QK5_1 == 0);
    block_q5_1* y = static_cast<block_q5_1*>(dst);
    for (int64_t i = 0; i < n / QK5_1; ++i) {
        const float* x = src + i * QK5_1;
        float min = x[0], max = x[0];
        for (int j = 1; j < QK5_1; ++j) {
            min = std::min(min, x[j]);
            max = std::max(max, x[j]);
        }
        const float d = (max - min) / 31;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        y[i].m = fp32_to_fp16(min);
        uint32_t qh = 0;
        for (int j = 0; j < QK5_1 / 2; ++j) {
            const uint8_t q0 = uint8_t((x[j] - min) * id + 0.5f);
            const uint8_t q1 = uint8_t((x[j + QK5_1 / 2] - min) * id + 0.5f);
            y[i].qs[j] = uint8_t((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh |= uint32_t((q0 & 0x10u) >> 4) << j;
            qh |= uint32_t((q1 & 0x10u) >> 4) << (j + QK5_1 / 2);
        }
        std::memcpy(y[i].qh, &qh, sizeof qh);
    }
}

void quantize_row_q8_0_ref(const float* src, void* dst, int64_t n) {
    MF_ASSERT(n % QK8_0 == 0);
    block_q8_0* y = static_cast<block_q8_0*>(dst);
    for (int64_t i = 0; i < n / QK8_0; ++i) {
        const float* x = src + i * QK8_0;
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; ++j) amax = std::max(amax, std::fabs(x[j]));
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        for (int j = 0; j < QK8_0; ++j) y[i].qs[j] = int8_t(std::round(x[j] * id));
    }
}

void quantize_row_q8_1_ref(const float* src, void* dst, int64_t n) {
    MF_ASSERT(n % QK8_1 == 0);
    block_q8_1* y = static_cast<block_q8_1*>(dst);
    for (int64_t i = 0; i < n / QK8_1; ++i) {
        const float* x = src + i * QK8_1;
        float amax = 0.0f;
        for (int j = 0; j < QK8_1; ++j) amax = std::max(amax, std::fabs(x[j]));
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        int sum = 0;
        for (int j = 0; j < QK8_1; ++j) {
            y[i].qs[j] = int8_t(std::round(x[j] * id));
            sum += y[i].qs[j];
        }
        y[i].s = fp32_to_fp16(float(sum) * d);
    }
}

// ---- legacy quants: dequantize ---------------------------------------------------------------

void dequantize_row_q4_0(const void* src, float* dst, int64_t n) {
    MF_ASSERT(n % QK4_0 == 0);
    const block_q4_0* x = static_cast<const block_q4_0*>(src);
    for (int64_t i = 0; i < n / QK4_0; ++i) {
        const float d = fp16_to_fp32(x[i].d);
        float* y = dst + i * QK4_0;
        for (int j = 0; j < QK4_0 / 2; ++j) {
            y[j] = float((x[i].qs[j] & 0x0F) - 8) * d;
            y[j + QK4_0 / 2] = float((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

void dequantize_row_q4_1(const void* src, float* dst, int64_t n) {
    MF_ASSERT(n % QK4_1 == 0);
    const block_q4_1* x = static_cast<const block_q4_1*>(src);
    for (int64_t i = 0; i < n / QK4_1; ++i) {
        const float d = fp16_to_fp32(x[i].d);
        const float m = fp16_to_fp32(x[i].m);
        float* y = dst + i * QK4_1;
        for (int j = 0; j < QK4_1 / 2; ++j) {
            y[j] = float(x[i].qs[j] & 0x0F) * d + m;
            y[j + QK4_1 / 2] = float(x[i].qs[j] >> 4) * d + m;
        }
    }
}

void dequantize_row_q5_0(const void* src, float* dst, int64_t n) {
    MF_ASSERT(n % QK5_0 == 0);
    const block_q5_0* x = static_cast<const block_q5_0*>(src);
    for (int64_t i = 0; i < n / QK5_0; ++i) {
        const float d = fp16_to_fp32(x[i].d);
        uint32_t qh;
        std::memcpy(&qh, x[i].qh, sizeof qh);
        float* y = dst + i * QK5_0;
        for (int j = 0; j < QK5_0 / 2; ++j) {
            const int h0 = ((qh >> j) << 4) & 0x10;
            const int h1 = (qh >> (j + 12)) & 0x10;
            y[j] = float(((x[i].qs[j] & 0x0F) | h0) - 16) * d;
            y[j + QK5_0 / 2] = float(((x[i].qs[j] >> 4) | h1) - 16) * d;
        }
    }
}

void dequantize_row_q5_1(const void* src, float* dst, int64_t n) {
    MF_ASSERT(n % QK5_1 == 0);
    const block_q5_1* x = static_cast<const block_q5_1*>(src);
    for (int64_t i = 0; i < n / QK5_1; ++i) {
        const float d = fp16_to_fp32(x[i].d);
        const float m = fp16_to_fp32(x[i].m);
        uint32_t qh;
        std::memcpy(&qh, x[i].qh, sizeof qh);
        float* y = dst + i * QK5_1;
        for (int j = 0; j < QK5_1 / 2; ++j) {
            const int h0 = ((qh >> j) << 4) & 0x10;
            const int h1 = (qh >> (j + 12)) & 0x10;
            y[j] = float((x[i].qs[j] & 0x0F) | h0) * d + m;
            y[j + QK5_1 / 2] = float((x[i].qs[j] >> 4) | h1) * d + m;
        }
    }
}

void q8_0_scales4(const void* src, size_t stride, int64_t n, float* dst) {
    MF_ASSERT(n % QK8_0 == 0);
    for (int c = 0; c < 4; ++c) {
        const block_q8_0* x = reinterpret_cast<const block_q8_0*>(static_cast<const char*>(src) + size_t(c) * stride);
        for (int64_t i = 0; i < n / QK8_0; ++i) dst[4 * i + c] = fp16_to_fp32(x[i].d);
    }
}

void q8_1_scales4(const void* src, size_t stride, int64_t n, float* dst) {
    MF_ASSERT(n % QK8_1 == 0);
    for (int c = 0; c < 4; ++c) {
        const block_q8_1* x = reinterpret_cast<const block_q8_1*>(static_cast<const char*>(src) + size_t(c) * stride);
        for (int64_t i = 0; i < n / QK8_1; ++i) {
            dst[8 * i + c] = fp16_to_fp32(x[i].d);
            dst[8 * i + 4 + c] = fp16_to_fp32(x[i].s);
        }
    }
}

void dequantize_row_q8_0(const void* src, float* dst, int64_t n) {
    MF_ASSERT(n % QK8_0 == 0);
    const block_q8_0* x = static_cast<const block_q8_0*>(src);
    for (int64_t i = 0; i < n / QK8_0; ++i) {
        const float d = fp16_to_fp32(x[i].d);
        for (int j = 0; j < QK8_0; ++j) dst[i * QK8_0 + j] = float(x[i].qs[j]) * d;
    }
}

void dequantize_row_q8_1(const void* src, float* dst, int64_t n) {
    MF_ASSERT(n % QK8_1 == 0);
    const block_q8_1* x = static_cast<const block_q8_1*>(src);
    for (int64_t i = 0; i < n / QK8_1; ++i) {
        const float d = fp16_to_fp32(x[i].d);
        for (int j = 0; j < QK8_1; ++j) dst[i * QK8_1 + j] = float(x[i].qs[j]) * d;
    }
}

// ---- legacy quants: scalar dots --------------------------------------------------------------
// Each block's integer dot is exact; only the per-block float scaling and the sum round.

float vec_dot_q4_0_q8_0_ref(int64_t n, const void* w, const void* act) {
    MF_ASSERT(n % QK8_0 == 0);
    const block_q4_0* x = static_cast<const block_q4_0*>(w);
    const block_q8_0* y = static_cast<const block_q8_0*>(act);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK8_0; ++i) {
        int sumi = 0;
        for (int j = 0; j < QK8_0 / 2; ++j) {
            sumi += ((x[i].qs[j] & 0x0F) - 8) * y[i].qs[j];
            sumi += ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + QK8_0 / 2];
        }
        sum += float(sumi) * (fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d));
    }
    return sum;
}

float vec_dot_q4_1_q8_1_ref(int64_t n, const void* w, const void* act) {
    MF_ASSERT(n % QK8_1 == 0);
    const block_q4_1* x = static_cast<const block_q4_1*>(w);
    const block_q8_1* y = static_cast<const block_q8_1*>(act);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK8_1; ++i) {
        int sumi = 0;
        for (int j = 0; j < QK8_1 / 2; ++j) {
            sumi += (x[i].qs[j] & 0x0F) * y[i].qs[j];
            sumi += (x[i].qs[j] >> 4) * y[i].qs[j + QK8_1 / 2];
        }
        sum += float(sumi) * (fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d)) +
               fp16_to_fp32(x[i].m) * fp16_to_fp32(y[i].s);
    }
    return sum;
}

float vec_dot_q5_0_q8_0_ref(int64_t n, const void* w, const void* act) {
    MF_ASSERT(n % QK8_0 == 0);
    const block_q5_0* x = static_cast<const block_q5_0*>(w);
    const block_q8_0* y = static_cast<const block_q8_0*>(act);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK8_0; ++i) {
        uint32_t qh;
        std::memcpy(&qh, x[i].qh, sizeof qh);
        int sumi = 0;
        for (int j = 0; j < QK8_0 / 2; ++j) {
            const int h0 = ((qh >> j) << 4) & 0x10;
            const int h1 = (qh >> (j + 12)) & 0x10;
            sumi += (((x[i].qs[j] & 0x0F) | h0) - 16) * y[i].qs[j];
            sumi += (((x[i].qs[j] >> 4) | h1) - 16) * y[i].qs[j + QK8_0 / 2];
        }
        sum += float(sumi) * (fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d));
    }
    return sum;
}

float vec_dot_q5_1_q8_1_ref(int64_t n, const void* w, const void* act) {
    MF_ASSERT(n % QK8_1 == 0);
    const block_q5_1* x = static_cast<const block_q5_1*>(w);
    const block_q8_1* y = static_cast<const block_q8_1*>(act);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK8_1; ++i) {
        uint32_t qh;
        std::memcpy(&qh, x[i].qh, sizeof qh);
        int sumi = 0;
        for (int j = 0; j < QK8_1 / 2; ++j) {
            const int h0 = ((qh >> j) << 4) & 0x10;
            const int h1 = (qh >> (j + 12)) & 0x10;
            sumi += ((x[i].qs[j] & 0x0F) | h0) * y[i].qs[j];
            sumi += ((x[i].qs[j] >> 4) | h1) * y[i].qs[j + QK8_1 / 2];
        }
        sum += float(sumi) * (fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d)) +
               fp16_to_fp32(x[i].m) * fp16_to_fp32(y[i].s);
    }
    return sum;
}

float vec_dot_q8_0_q8_0_ref(int64_t n, const void* w, const void* act) {
    MF_ASSERT(n % QK8_0 == 0);
    const block_q8_0* x = static_cast<const block_q8_0*>(w);
    const block_q8_0* y = static_cast<const block_q8_0*>(act);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK8_0; ++i) {
        int sumi = 0;
        for (int j = 0; j < QK8_0; ++j) sumi += x[i].qs[j] * y[i].qs[j];
        sum += float(sumi) * (fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d));
    }
    return sum;
}

VecDotFn vec_dot_ref(DType t) {
    switch (t) {
        case DType::F32: return vec_dot_f32_ref;
        case DType::F16: return vec_dot_f16_f32_ref;
        case DType::BF16: return vec_dot_bf16_f32_ref;
        case DType::Q4_0: return vec_dot_q4_0_q8_0_ref;
        case DType::Q4_1: return vec_dot_q4_1_q8_1_ref;
        case DType::Q5_0: return vec_dot_q5_0_q8_0_ref;
        case DType::Q5_1: return vec_dot_q5_1_q8_1_ref;
        case DType::Q8_0: return vec_dot_q8_0_q8_0_ref;
        case DType::Q4_K: return vec_dot_q4_K_q8_K_ref;
        case DType::Q5_K: return vec_dot_q5_K_q8_K_ref;
        case DType::Q6_K: return vec_dot_q6_K_q8_K_ref;
        default: return nullptr;
    }
}

bool rows_split_fits(DType t) { return t == DType::Q4_0 || t == DType::Q8_0; }

namespace {

// Moves each row's blocks between the stored layout and the split one (rows_split in quants.h).
void rows_rearrange(DType t, int64_t ne0, size_t n_rows, const void* src, void* dst, bool split) {
    MF_ASSERT(rows_split_fits(t));
    constexpr size_t HEAD = 2;  // the fp16 scale
    const DTypeTraits& tr = dtype_traits(t);
    MF_ASSERT(ne0 % tr.block_size == 0);
    const size_t n_blk = size_t(ne0 / tr.block_size), block = tr.type_size, body = block - HEAD;
    const size_t row_bytes = n_blk * block;
    for (size_t r = 0; r < n_rows; ++r) {
        const uint8_t* in = static_cast<const uint8_t*>(src) + r * row_bytes;
        uint8_t* out = static_cast<uint8_t*>(dst) + r * row_bytes;
        for (size_t b = 0; b < n_blk; ++b) {
            if (split) {  // block b's quants to the row's b-th body, its scale after all the bodies
                std::memcpy(out + b * body, in + b * block + HEAD, body);
                std::memcpy(out + n_blk * body + b * HEAD, in + b * block, HEAD);
            } else {
                std::memcpy(out + b * block + HEAD, in + b * body, body);
                std::memcpy(out + b * block, in + n_blk * body + b * HEAD, HEAD);
            }
        }
    }
}

}  // namespace

void rows_split(DType t, int64_t ne0, size_t n_rows, const void* src, void* dst) {
    rows_rearrange(t, ne0, n_rows, src, dst, true);
}

void rows_join(DType t, int64_t ne0, size_t n_rows, const void* src, void* dst) {
    rows_rearrange(t, ne0, n_rows, src, dst, false);
}

}  // namespace mf
