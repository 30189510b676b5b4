// AVX2+FMA fast paths for the dot kernels and the activation quantizers (Q8_0, Q8_1, Q8_K).
// Compiled only when the build targets AVX2 and FMA; otherwise the lookups return null and the scalar kernels serve.
#include <cstring>

#include "core/common.h"
#include "core/quants.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

namespace mf {

namespace {

inline float half_to_float(uint16_t h) {
#if defined(__F16C__)
    return _cvtsh_ss(h);
#else
    return fp16_to_fp32(h);
#endif
}

inline float hsum_float_8(__m256 x) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

inline int hsum_i32_8(__m256i a) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

// 16 packed bytes -> 32 bytes in [0, 15]: low nibbles in lanes 0-15, high nibbles in lanes 16-31,
// which is exactly the element order of the 32-element legacy blocks.
inline __m256i bytes_from_nibbles_32(const uint8_t* p) {
    const __m128i tmp = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m256i bytes = _mm256_insertf128_si256(_mm256_castsi128_si256(tmp), _mm_srli_epi16(tmp, 4), 1);
    return _mm256_and_si256(bytes, _mm256_set1_epi8(0x0F));
}

// 32 bits (little-endian) -> 32 bytes, 0xFF where the bit is set.
inline __m256i bytes_from_bits_32(const uint8_t* p) {
    uint32_t x32;
    std::memcpy(&x32, p, sizeof x32);
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(int(x32)), shuf);
    bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

// Unsigned x signed bytes, summed in fours into 8 int32 lanes, as floats. maddubs saturates at 16 bits,
// which |ax| <= 255 (only reached for -128 weights) times |sy| <= 127 never does in pairs.
// With VNNI (AVX512-VNNI + VL, or AVX-VNNI) one dpbusd forms the same int32 sums in one instruction.
inline __m256i mul_sum_us8_pairs_i32(__m256i ax, __m256i sy) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sy);
#elif defined(__AVXVNNI__)
    return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), ax, sy);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1));
#endif
}

inline __m256 mul_sum_us8_pairs_float(__m256i ax, __m256i sy) {
    return _mm256_cvtepi32_ps(mul_sum_us8_pairs_i32(ax, sy));
}

// Signed x signed bytes: maddubs needs one unsigned operand, so move x's sign onto y.
inline __m256 mul_sum_i8_pairs_float(__m256i x, __m256i y) {
    return mul_sum_us8_pairs_float(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}

// Unpacks the 12-byte Q4_K/Q5_K scale field into 8 six-bit scales (bytes 0-7) and 8 mins (bytes 8-15);
// the bit-level equivalent of get_scale_min_k4 for all eight sub-blocks at once.
inline __m128i unpack_scales_mins_k4(const uint8_t* scales) {
    const uint32_t kmask1 = 0x3f3f3f3f, kmask2 = 0x0f0f0f0f, kmask3 = 0x03030303;
    uint32_t utmp[4];
    std::memcpy(utmp, scales, 12);
    utmp[3] = ((utmp[2] >> 4) & kmask2) | (((utmp[1] >> 6) & kmask3) << 4);
    const uint32_t uaux = utmp[1] & kmask1;
    utmp[1] = (utmp[2] & kmask2) | (((utmp[0] >> 6) & kmask3) << 4);
    utmp[2] = uaux;
    utmp[0] &= kmask1;
    return _mm_set_epi32(int(utmp[3]), int(utmp[2]), int(utmp[1]), int(utmp[0]));
}

// Shuffle mask that broadcasts int16 lane k of a 128-bit half to all 16 lanes of a 256-bit vector.
inline __m256i broadcast_i16_mask(int k) { return _mm256_set1_epi16(int16_t(((2 * k + 1) << 8) | (2 * k))); }

// Half h of a Q6_K block (ql + 64 h, qh + 32 h): its 128 six-bit levels (0..63) as four vectors of
// 32 bytes, the order the activation's 128 quants of that half come in.
inline void unpack_q6_K_half(const uint8_t* ql, const uint8_t* qh, __m256i q6[4]) {
    const __m256i m4 = _mm256_set1_epi8(0xF), m2 = _mm256_set1_epi8(3);
    const __m256i q4bits1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql));
    const __m256i q4bits2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32));
    const __m256i q4bitsH = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh));
    q6[0] = _mm256_or_si256(_mm256_and_si256(q4bits1, m4), _mm256_slli_epi16(_mm256_and_si256(q4bitsH, m2), 4));
    q6[1] = _mm256_or_si256(_mm256_and_si256(q4bits2, m4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(q4bitsH, 2), m2), 4));
    q6[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4bits1, 4), m4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(q4bitsH, 4), m2), 4));
    q6[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4bits2, 4), m4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(q4bitsH, 6), m2), 4));
}

// Q4_K/Q5_K min term for one block: sum_j mins[j] * (bsums[2j] + bsums[2j + 1]) as 4 int32 lanes.
inline __m128i mins_dot_bsums(__m256i mins_and_scales, const int16_t* bsums) {
    const __m256i q8sums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bsums));
    const __m128i q8s = _mm_hadd_epi16(_mm256_castsi256_si128(q8sums), _mm256_extracti128_si256(q8sums, 1));
    return _mm_madd_epi16(_mm256_extracti128_si256(mins_and_scales, 1), q8s);
}

inline float hsum_float_4(__m128 x) {
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

// ---- float types -----------------------------------------------------------------------------
// Four independent accumulators hide the FMA latency; the tail (n % 8) is done in scalar.

template <typename Load8, typename Load1>
float dot_f32_act(int64_t n, const float* y, Load8 load8, Load1 load1) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        for (int k = 0; k < 4; ++k) acc[k] = _mm256_fmadd_ps(load8(i + 8 * k), _mm256_loadu_ps(y + i + 8 * k), acc[k]);
    }
    for (; i + 8 <= n; i += 8) acc[0] = _mm256_fmadd_ps(load8(i), _mm256_loadu_ps(y + i), acc[0]);
    float sum = hsum_float_8(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    for (; i < n; ++i) sum += load1(i) * y[i];
    return sum;
}

float vec_dot_f32_avx2(int64_t n, const void* w, const void* act) {
    const float* x = static_cast<const float*>(w);
    return dot_f32_act(
        n, static_cast<const float*>(act), [x](int64_t i) { return _mm256_loadu_ps(x + i); },
        [x](int64_t i) { return x[i]; });
}

#if defined(__F16C__)
float vec_dot_f16_f32_avx2(int64_t n, const void* w, const void* act) {
    const uint16_t* x = static_cast<const uint16_t*>(w);
    return dot_f32_act(
        n, static_cast<const float*>(act),
        [x](int64_t i) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))); },
        [x](int64_t i) { return fp16_to_fp32(x[i]); });
}
#endif

float vec_dot_bf16_f32_avx2(int64_t n, const void* w, const void* act) {
    const uint16_t* x = static_cast<const uint16_t*>(w);
    return dot_f32_act(
        n, static_cast<const float*>(act),
        [x](int64_t i) {
            const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
            return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
        },
        [x](int64_t i) { return bf16_to_fp32(x[i]); });
}

// ---- legacy quants ---------------------------------------------------------------------------

float vec_dot_q8_0_q8_0_avx2(int64_t n, const void* w, const void* act) {
    MF_ASSERT(n % QK8_0 == 0);
    const block_q8_0* x = static_cast<const block_q8_0*>(w);
    const block_q8_0* y = static_cast<const block_q8_0*>(act);
    const int64_t nb = n / QK8_0;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        const __m256i qx0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs));
        const __m256i qy0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs));
        const __m256i qx1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i + 1].qs));
        const __m256i qy1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i + 1].qs));
        const __m256 d0 = _mm256_set1_ps(half_to_float(x[i].d) * half_to_float(y[i].d));
        const __m256 d1 = _mm256_set1_ps(half_to_float(x[i + 1].d) * half_to_float(y[i + 1].d));
        acc0 = _mm256_fmadd_ps(d0, mul_sum_i8_pairs_float(qx0, qy0), acc0);
        acc1 = _mm256_fmadd_ps(d1, mul_sum_i8_pairs_float(qx1, qy1), acc1);
    }
    for (; i < nb; ++i) {
        const __m256i qx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs));
        const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs));
        const __m256 d = _mm256_set1_ps(half_to_float(x[i].d) * half_to_float(y[i].d));
        acc0 = _mm256_fmadd_ps(d, mul_sum_i8_pairs_float(qx, qy), acc0);
    }
    return hsum_float_8(_mm256_add_ps(acc0, acc1));
}

float vec_dot_q4_0_q8_0_avx2(int64_t n, const void* w, const void* act) {
    MF_ASSERT(n % QK8_0 == 0);
    const block_q4_0* x = static_cast<const block_q4_0*>(w);
    const block_q8_0* y = static_cast<const block_q8_0*>(act);
    const __m256i off = _mm256_set1_epi8(8);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    const int64_t nb = n / QK8_0;
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        const __m256i qx0 = _mm256_sub_epi8(bytes_from_nibbles_32(x[i].qs), off);
        const __m256i qx1 = _mm256_sub_epi8(bytes_from_nibbles_32(x[i + 1].qs), off);
        const __m256i qy0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs));
        const __m256i qy1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i + 1].qs));
        const __m256 d0 = _mm256_set1_ps(half_to_float(x[i].d) * half_to_float(y[i].d));
        const __m256 d1 = _mm256_set1_ps(half_to_float(x[i + 1].d) * half_to_float(y[i + 1].d));
        acc0 = _mm256_fmadd_ps(d0, mul_sum_i8_pairs_float(qx0, qy0), acc0);
        acc1 = _mm256_fmadd_ps(d1, mul_sum_i8_pairs_float(qx1, qy1), acc1);
    }
    for (; i < nb; ++i) {
        const __m256i qx = _mm256_sub_epi8(bytes_from_nibbles_32(x[i].qs), off);
        const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs));
        const __m256 d = _mm256_set1_ps(half_to_float(x[i].d) * half_to_float(y[i].d));
        acc0 = _mm256_fmadd_ps(d, mul_sum_i8_pairs_float(qx, qy), acc0);
    }
    return hsum_float_8(_mm256_add_ps(acc0, acc1));
}

// Row i of rows stride bytes apart from base, as Block (the four-row dots' rows, weights or activations).
template <typename Block>
inline const Block* row_at(const void* base, size_t stride, int i) {
    return reinterpret_cast<const Block*>(static_cast<const char*>(base) + size_t(i) * stride);
}

// ---- four weight rows at once (decode) -------------------------------------------------------
// Four weight rows against one activation row: each row's operations are its single-row kernel's (the
// same accumulators, the same pairing of blocks, the same scale product), so each result keeps its
// bits; what the rows share is the activation block's load and scale, and their chains interleave
// (a single row's two chains left the core waiting on their latency).

// Q4_0 (two accumulators, as its single kernel). Its levels are nibble - 8: the four-element sums
// nibbles . y minus 8 (1 1 1 1) . y, the second formed once a block for the four rows. Both are exact
// integers, so each row's int32 sums, and from them every float, are those of the single dot
// (|x| . sign(y, x): the same sums of x * y); the two sign flips a row are gone. (Q8_0's rows made
// Gemma 3's Q8_0 LM head slower, 53 -> 49 t/s, so Q8_0 keeps its single dot.)
void vec_dot_rows4_q4_0_q8_0_avx2(int64_t n, const void* w, size_t stride, const void* act, float* out) {
    MF_ASSERT(n % QK8_0 == 0);
    const block_q4_0* x[4];
    for (int r = 0; r < 4; ++r) x[r] = row_at<block_q4_0>(w, stride, r);
    const block_q8_0* y = static_cast<const block_q8_0*>(act);
    const __m256i eights = _mm256_set1_epi8(8);
    __m256 acc0[4], acc1[4];
    for (int r = 0; r < 4; ++r) acc0[r] = _mm256_setzero_ps(), acc1[r] = _mm256_setzero_ps();
    auto level_dot = [](const block_q4_0& b, __m256i qy, __m256i off) {
        return _mm256_cvtepi32_ps(_mm256_sub_epi32(mul_sum_us8_pairs_i32(bytes_from_nibbles_32(b.qs), qy), off));
    };
    const int64_t nb = n / QK8_0;
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        const __m256i qy0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs));
        const __m256i qy1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i + 1].qs));
        const __m256i off0 = mul_sum_us8_pairs_i32(eights, qy0), off1 = mul_sum_us8_pairs_i32(eights, qy1);
        const float yd0 = half_to_float(y[i].d), yd1 = half_to_float(y[i + 1].d);
        for (int r = 0; r < 4; ++r) {
            const __m256 d0 = _mm256_set1_ps(half_to_float(x[r][i].d) * yd0);
            const __m256 d1 = _mm256_set1_ps(half_to_float(x[r][i + 1].d) * yd1);
            acc0[r] = _mm256_fmadd_ps(d0, level_dot(x[r][i], qy0, off0), acc0[r]);
            acc1[r] = _mm256_fmadd_ps(d1, level_dot(x[r][i + 1], qy1, off1), acc1[r]);
        }
    }
    for (; i < nb; ++i) {
        const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs));
        const __m256i off = mul_sum_us8_pairs_i32(eights, qy);
        const float yd = half_to_float(y[i].d);
        for (int r = 0; r < 4; ++r) {
            const __m256 d = _mm256_set1_ps(half_to_float(x[r][i].d) * yd);
            acc0[r] = _mm256_fmadd_ps(d, level_dot(x[r][i], qy, off), acc0[r]);
        }
    }
    for (int r = 0; r < 4; ++r) out[r] = hsum_float_8(_mm256_add_ps(acc0[r], acc1[r]));
}

// Q5_0 (signed levels against Q8_0, one accumulator, as its single kernel).
void vec_dot_rows4_q5_0_q8_0_avx2(int64_t n, const void* w, size_t stride, const void* act, float* out) {
    MF_ASSERT(n % QK8_0 == 0);
    const block_q5_0* x[4];
    for (int r = 0; r < 4; ++r) x[r] = row_at<block_q5_0>(w, stride, r);
    const block_q8_0* y = static_cast<const block_q8_0*>(act);
    const __m256i f0 = _mm256_set1_epi8(int8_t(0xF0));
    __m256 acc[4];
    for (int r = 0; r < 4; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK8_0; ++i) {
        const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs));
        const float yd = half_to_float(y[i].d);
        for (int r = 0; r < 4; ++r) {
            const __m256i hi = _mm256_andnot_si256(bytes_from_bits_32(x[r][i].qh), f0);
            const __m256i qx = _mm256_or_si256(bytes_from_nibbles_32(x[r][i].qs), hi);
            const __m256 d = _mm256_set1_ps(half_to_float(x[r][i].d) * yd);
            acc[r] = _mm256_fmadd_ps(d, mul_sum_i8_pairs_float(qx, qy), acc[r]);
        }
    }
    for (int r = 0; r < 4; ++r) out[r] = hsum_float_8(acc[r]);
}

// Q4_1 and Q5_1 (unsigned levels against Q8_1, one accumulator and the mins' sum, as their single
// kernels): unpack(block) gives a block's levels.
template <typename Block, typename Unpack>
void vec_dot_rows4_unsigned_q8_1(int64_t n, const void* w, size_t stride, const void* act, float* out, Unpack unpack) {
    MF_ASSERT(n % QK8_1 == 0);
    const Block* x[4];
    for (int r = 0; r < 4; ++r) x[r] = row_at<Block>(w, stride, r);
    const block_q8_1* y = static_cast<const block_q8_1*>(act);
    __m256 acc[4];
    float summs[4];
    for (int r = 0; r < 4; ++r) acc[r] = _mm256_setzero_ps(), summs[r] = 0.0f;
    for (int64_t i = 0; i < n / QK8_1; ++i) {
        const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs));
        const float yd = half_to_float(y[i].d), ys = half_to_float(y[i].s);
        for (int r = 0; r < 4; ++r) {
            summs[r] += half_to_float(x[r][i].m) * ys;
            const __m256 d = _mm256_set1_ps(half_to_float(x[r][i].d) * yd);
            acc[r] = _mm256_fmadd_ps(d, mul_sum_us8_pairs_float(unpack(x[r][i]), qy), acc[r]);
        }
    }
    for (int r = 0; r < 4; ++r) out[r] = hsum_float_8(acc[r]) + summs[r];
}

void vec_dot_rows4_q4_1_q8_1_avx2(int64_t n, const void* w, size_t stride, const void* act, float* out) {
    vec_dot_rows4_unsigned_q8_1<block_q4_1>(n, w, stride, act, out,
                                            [](const block_q4_1& b) { return bytes_from_nibbles_32(b.qs); });
}

void vec_dot_rows4_q5_1_q8_1_avx2(int64_t n, const void* w, size_t stride, const void* act, float* out) {
    const __m256i b4 = _mm256_set1_epi8(0x10);
    vec_dot_rows4_unsigned_q8_1<block_q5_1>(n, w, stride, act, out, [b4](const block_q5_1& b) {
        return _mm256_or_si256(bytes_from_nibbles_32(b.qs), _mm256_and_si256(bytes_from_bits_32(b.qh), b4));
    });
}

// ---- four activation rows at once (prefill) ---------------------------------------------------
// Each column repeats its single-row kernel's operations in the same order (the same accumulators,
// the same pairing of blocks), so every result has the single kernel's bits; what the four share is
// the weight block's load, unpacking, sign and scale.


// The signed x signed pair sum of mul_sum_i8_pairs_float with x's |x| computed once by the caller.
inline __m256 mul_sum_i8_pairs_float_ax(__m256i ax, __m256i x, __m256i y) {
    return mul_sum_us8_pairs_float(ax, _mm256_sign_epi8(y, x));
}

// The four columns' scale products xd * yd[c] for one weight block, as the single dot forms each
// (one float multiply), then column c's broadcast to eight lanes: the activation scales come as floats
// (act_d, four a block), so a column costs one permute instead of a conversion, a multiply and a
// broadcast.
struct ScaleQuad {
    __m256i idx[4] = {_mm256_set1_epi32(0), _mm256_set1_epi32(1), _mm256_set1_epi32(2), _mm256_set1_epi32(3)};
    static __m256 products(float xd, const float* yd4) {
        return _mm256_castps128_ps256(_mm_mul_ps(_mm_set1_ps(xd), _mm_loadu_ps(yd4)));
    }
    __m256 column(__m256 d4, int c) const { return _mm256_permutevar8x32_ps(d4, idx[c]); }
};

// Q8_0 and Q4_0 (signed levels against Q8_0): blocks in pairs over two accumulators, as the single kernels.
template <typename Unpack>
void vec_dot4_signed_q8_0(int64_t n, const void* act, size_t stride, const float* act_d, float* out, Unpack unpack) {
    MF_ASSERT(n % QK8_0 == 0 && act_d);
    const block_q8_0* y[4];
    for (int c = 0; c < 4; ++c) y[c] = row_at<block_q8_0>(act, stride, c);
    const ScaleQuad sq;
    __m256 acc0[4], acc1[4];
    for (int c = 0; c < 4; ++c) acc0[c] = acc1[c] = _mm256_setzero_ps();
    const int64_t nb = n / QK8_0;
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        float xd0, xd1;
        const __m256i qx0 = unpack(i, &xd0), qx1 = unpack(i + 1, &xd1);
        const __m256i ax0 = _mm256_sign_epi8(qx0, qx0), ax1 = _mm256_sign_epi8(qx1, qx1);
        const __m256 d40 = ScaleQuad::products(xd0, act_d + 4 * i), d41 = ScaleQuad::products(xd1, act_d + 4 * i + 4);
        for (int c = 0; c < 4; ++c) {
            const __m256i qy0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[c][i].qs));
            const __m256i qy1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[c][i + 1].qs));
            acc0[c] = _mm256_fmadd_ps(sq.column(d40, c), mul_sum_i8_pairs_float_ax(ax0, qx0, qy0), acc0[c]);
            acc1[c] = _mm256_fmadd_ps(sq.column(d41, c), mul_sum_i8_pairs_float_ax(ax1, qx1, qy1), acc1[c]);
        }
    }
    for (; i < nb; ++i) {
        float xd;
        const __m256i qx = unpack(i, &xd);
        const __m256i ax = _mm256_sign_epi8(qx, qx);
        const __m256 d4 = ScaleQuad::products(xd, act_d + 4 * i);
        for (int c = 0; c < 4; ++c) {
            const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[c][i].qs));
            acc0[c] = _mm256_fmadd_ps(sq.column(d4, c), mul_sum_i8_pairs_float_ax(ax, qx, qy), acc0[c]);
        }
    }
    for (int c = 0; c < 4; ++c) out[c] = hsum_float_8(_mm256_add_ps(acc0[c], acc1[c]));
}

void vec_dot4_q8_0_q8_0_avx2(int64_t n, const void* w, const void* act, size_t stride, const float* act_d,
                             float* out) {
    const block_q8_0* x = static_cast<const block_q8_0*>(w);
    vec_dot4_signed_q8_0(n, act, stride, act_d, out, [x](int64_t i, float* xd) {
        *xd = half_to_float(x[i].d);
        return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs));
    });
}

void vec_dot4_q4_0_q8_0_avx2(int64_t n, const void* w, const void* act, size_t stride, const float* act_d,
                             float* out) {
    const block_q4_0* x = static_cast<const block_q4_0*>(w);
    const __m256i off = _mm256_set1_epi8(8);
    vec_dot4_signed_q8_0(n, act, stride, act_d, out, [x, off](int64_t i, float* xd) {
        *xd = half_to_float(x[i].d);
        return _mm256_sub_epi8(bytes_from_nibbles_32(x[i].qs), off);
    });
}

// Q5_0 (signed levels against Q8_0) has one accumulator, as its single kernel.
void vec_dot4_q5_0_q8_0_avx2(int64_t n, const void* w, const void* act, size_t stride, const float* act_d,
                             float* out) {
    MF_ASSERT(n % QK8_0 == 0 && act_d);
    const block_q5_0* x = static_cast<const block_q5_0*>(w);
    const block_q8_0* y[4];
    for (int c = 0; c < 4; ++c) y[c] = row_at<block_q8_0>(act, stride, c);
    const ScaleQuad sq;
    const __m256i f0 = _mm256_set1_epi8(int8_t(0xF0));
    __m256 acc[4];
    for (int c = 0; c < 4; ++c) acc[c] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK8_0; ++i) {
        const __m256 d4 = ScaleQuad::products(half_to_float(x[i].d), act_d + 4 * i);
        const __m256i hi = _mm256_andnot_si256(bytes_from_bits_32(x[i].qh), f0);
        const __m256i qx = _mm256_or_si256(bytes_from_nibbles_32(x[i].qs), hi);
        const __m256i ax = _mm256_sign_epi8(qx, qx);
        for (int c = 0; c < 4; ++c) {
            const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[c][i].qs));
            acc[c] = _mm256_fmadd_ps(sq.column(d4, c), mul_sum_i8_pairs_float_ax(ax, qx, qy), acc[c]);
        }
    }
    for (int c = 0; c < 4; ++c) out[c] = hsum_float_8(acc[c]);
}

// Q4_1 and Q5_1 (unsigned levels against Q8_1, the min through y.s). With the scales as floats the
// four columns' min terms xm * s (the single dot's fused multiply-add into its running sum) are one
// vector FMA a block.
template <typename Block, typename Unpack>
void vec_dot4_unsigned_q8_1(int64_t n, const Block* x, const void* act, size_t stride, const float* act_d,
                            float* out, Unpack unpack) {
    MF_ASSERT(n % QK8_1 == 0 && act_d);
    const block_q8_1* y[4];
    for (int c = 0; c < 4; ++c) y[c] = row_at<block_q8_1>(act, stride, c);
    const ScaleQuad sq;
    __m256 acc[4];
    for (int c = 0; c < 4; ++c) acc[c] = _mm256_setzero_ps();
    __m128 summs = _mm_setzero_ps();
    for (int64_t i = 0; i < n / QK8_1; ++i) {
        const float* s = act_d + 8 * i;
        summs = _mm_fmadd_ps(_mm_set1_ps(half_to_float(x[i].m)), _mm_loadu_ps(s + 4), summs);
        const __m256 d4 = ScaleQuad::products(half_to_float(x[i].d), s);
        const __m256i qx = unpack(x[i]);
        for (int c = 0; c < 4; ++c) {
            const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[c][i].qs));
            acc[c] = _mm256_fmadd_ps(sq.column(d4, c), mul_sum_us8_pairs_float(qx, qy), acc[c]);
        }
    }
    float m[4];
    _mm_storeu_ps(m, summs);
    for (int c = 0; c < 4; ++c) out[c] = hsum_float_8(acc[c]) + m[c];
}

void vec_dot4_q4_1_q8_1_avx2(int64_t n, const void* w, const void* act, size_t stride, const float* act_d,
                             float* out) {
    vec_dot4_unsigned_q8_1(n, static_cast<const block_q4_1*>(w), act, stride, act_d, out,
                           [](const block_q4_1& b) { return bytes_from_nibbles_32(b.qs); });
}

void vec_dot4_q5_1_q8_1_avx2(int64_t n, const void* w, const void* act, size_t stride, const float* act_d,
                             float* out) {
    const __m256i b4 = _mm256_set1_epi8(0x10);
    vec_dot4_unsigned_q8_1(n, static_cast<const block_q5_1*>(w), act, stride, act_d, out, [b4](const block_q5_1& b) {
        return _mm256_or_si256(bytes_from_nibbles_32(b.qs), _mm256_and_si256(bytes_from_bits_32(b.qh), b4));
    });
}

// Q4_1 / Q5_1 levels are unsigned, so they feed maddubs directly; the min enters through y.s.
float vec_dot_q4_1_q8_1_avx2(int64_t n, const void* w, const void* act) {
    MF_ASSERT(n % QK8_1 == 0);
    const block_q4_1* x = static_cast<const block_q4_1*>(w);
    const block_q8_1* y = static_cast<const block_q8_1*>(act);
    __m256 acc = _mm256_setzero_ps();
    float summs = 0;
    for (int64_t i = 0; i < n / QK8_1; ++i) {
        summs += half_to_float(x[i].m) * half_to_float(y[i].s);
        const __m256i qx = bytes_from_nibbles_32(x[i].qs);
        const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs));
        const __m256 d = _mm256_set1_ps(half_to_float(x[i].d) * half_to_float(y[i].d));
        acc = _mm256_fmadd_ps(d, mul_sum_us8_pairs_float(qx, qy), acc);
    }
    return hsum_float_8(acc) + summs;
}

// q - 16 as a signed byte: nibble | 0xF0 when the fifth bit is clear, plain nibble when it is set.
float vec_dot_q5_0_q8_0_avx2(int64_t n, const void* w, const void* act) {
    MF_ASSERT(n % QK8_0 == 0);
    const block_q5_0* x = static_cast<const block_q5_0*>(w);
    const block_q8_0* y = static_cast<const block_q8_0*>(act);
    const __m256i f0 = _mm256_set1_epi8(int8_t(0xF0));
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK8_0; ++i) {
        const __m256i hi = _mm256_andnot_si256(bytes_from_bits_32(x[i].qh), f0);
        const __m256i qx = _mm256_or_si256(bytes_from_nibbles_32(x[i].qs), hi);
        const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs));
        const __m256 d = _mm256_set1_ps(half_to_float(x[i].d) * half_to_float(y[i].d));
        acc = _mm256_fmadd_ps(d, mul_sum_i8_pairs_float(qx, qy), acc);
    }
    return hsum_float_8(acc);
}

float vec_dot_q5_1_q8_1_avx2(int64_t n, const void* w, const void* act) {
    MF_ASSERT(n % QK8_1 == 0);
    const block_q5_1* x = static_cast<const block_q5_1*>(w);
    const block_q8_1* y = static_cast<const block_q8_1*>(act);
    const __m256i b4 = _mm256_set1_epi8(0x10);
    __m256 acc = _mm256_setzero_ps();
    float summs = 0;
    for (int64_t i = 0; i < n / QK8_1; ++i) {
        summs += half_to_float(x[i].m) * half_to_float(y[i].s);
        const __m256i hi = _mm256_and_si256(bytes_from_bits_32(x[i].qh), b4);
        const __m256i qx = _mm256_or_si256(bytes_from_nibbles_32(x[i].qs), hi);
        const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs));
        const __m256 d = _mm256_set1_ps(half_to_float(x[i].d) * half_to_float(y[i].d));
        acc = _mm256_fmadd_ps(d, mul_sum_us8_pairs_float(qx, qy), acc);
    }
    return hsum_float_8(acc) + summs;
}

// ---- K-quants --------------------------------------------------------------------------------
// Per block: integer dot per 32-element sub-block via maddubs, weighted by its 6-bit (or int8) scale
// via madd, accumulated in int32 lanes; one float FMA per block.

float vec_dot_q4_K_q8_K_avx2(int64_t n, const void* w, const void* act) {
    MF_ASSERT(n % QK_K == 0);
    const block_q4_K* x = static_cast<const block_q4_K*>(w);
    const block_q8_K* y = static_cast<const block_q8_K*>(act);
    const __m256i m4 = _mm256_set1_epi8(0xF);
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_m = _mm_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = y[i].d * half_to_float(x[i].d);
        const float dmin = -y[i].d * half_to_float(x[i].dmin);
        // lanes 0-7: scales as int16, lanes 8-15: mins as int16
        const __m256i mins_and_scales = _mm256_cvtepu8_epi16(unpack_scales_mins_k4(x[i].scales));
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(mins_dot_bsums(mins_and_scales, y[i].bsums)), acc_m);
        const __m128i sc128 = _mm256_castsi256_si128(mins_and_scales);
        const __m256i scales = _mm256_insertf128_si256(_mm256_castsi128_si256(sc128), sc128, 1);

        const uint8_t* q4 = x[i].qs;
        const int8_t* q8 = y[i].qs;
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < QK_K / 64; ++j) {
            const __m256i scale_l = _mm256_shuffle_epi8(scales, broadcast_i16_mask(2 * j));
            const __m256i scale_h = _mm256_shuffle_epi8(scales, broadcast_i16_mask(2 * j + 1));
            const __m256i q4bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q4));
            q4 += 32;
            const __m256i q4l = _mm256_and_si256(q4bits, m4);
            const __m256i q4h = _mm256_and_si256(_mm256_srli_epi16(q4bits, 4), m4);
            const __m256i q8l = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8));
            const __m256i q8h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8 + 32));
            q8 += 64;
            const __m256i p16l = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(q4l, q8l));
            const __m256i p16h = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(q4h, q8h));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16l, p16h));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum_float_8(acc) + hsum_float_4(acc_m);
}

float vec_dot_q5_K_q8_K_avx2(int64_t n, const void* w, const void* act) {
    MF_ASSERT(n % QK_K == 0);
    const block_q5_K* x = static_cast<const block_q5_K*>(w);
    const block_q8_K* y = static_cast<const block_q8_K*>(act);
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const __m256i b4 = _mm256_set1_epi8(0x10);
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_m = _mm_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = y[i].d * half_to_float(x[i].d);
        const float dmin = -y[i].d * half_to_float(x[i].dmin);
        const __m256i mins_and_scales = _mm256_cvtepu8_epi16(unpack_scales_mins_k4(x[i].scales));
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(mins_dot_bsums(mins_and_scales, y[i].bsums)), acc_m);
        const __m128i sc128 = _mm256_castsi256_si128(mins_and_scales);
        const __m256i scales = _mm256_insertf128_si256(_mm256_castsi128_si256(sc128), sc128, 1);

        const uint8_t* q5 = x[i].qs;
        const int8_t* q8 = y[i].qs;
        const __m256i hbits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qh));
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < QK_K / 64; ++j) {
            const __m256i scale_l = _mm256_shuffle_epi8(scales, broadcast_i16_mask(2 * j));
            const __m256i scale_h = _mm256_shuffle_epi8(scales, broadcast_i16_mask(2 * j + 1));
            const __m256i bit_l = _mm256_set1_epi8(int8_t(1 << (2 * j)));
            const __m256i bit_h = _mm256_set1_epi8(int8_t(1 << (2 * j + 1)));
            const __m256i hi_l = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, bit_l), bit_l), b4);
            const __m256i hi_h = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, bit_h), bit_h), b4);
            const __m256i q5bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q5));
            q5 += 32;
            const __m256i q5l = _mm256_or_si256(_mm256_and_si256(q5bits, m4), hi_l);
            const __m256i q5h = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q5bits, 4), m4), hi_h);
            const __m256i q8l = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8));
            const __m256i q8h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8 + 32));
            q8 += 64;
            const __m256i p16l = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(q5l, q8l));
            const __m256i p16h = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(q5h, q8h));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16l, p16h));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum_float_8(acc) + hsum_float_4(acc_m);
}

// Q6_K levels q in [0, 63] go to maddubs unsigned; the -32 offset is subtracted as 32 * q8 afterwards.
// Each 32-element group spans two 16-element scales: int16 lanes 0-7 take the first, 8-15 the second.
float vec_dot_q6_K_q8_K_avx2(int64_t n, const void* w, const void* act) {
    MF_ASSERT(n % QK_K == 0);
    const block_q6_K* x = static_cast<const block_q6_K*>(w);
    const block_q8_K* y = static_cast<const block_q8_K*>(act);
    const __m256i m32s = _mm256_set1_epi8(32);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = y[i].d * half_to_float(x[i].d);
        const uint8_t* ql = x[i].ql;
        const uint8_t* qh = x[i].qh;
        const int8_t* q8 = y[i].qs;
        const __m128i scales = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales));
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < QK_K / 128; ++h) {
            __m256i q6[4];
            unpack_q6_K_half(ql, qh, q6);
            ql += 64;
            qh += 32;
            for (int k = 0; k < 4; ++k) {
                const __m256i q8k = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8 + 32 * k));
                const __m256i p16 = _mm256_sub_epi16(_mm256_maddubs_epi16(q6[k], q8k), _mm256_maddubs_epi16(m32s, q8k));
                const int s0 = 8 * h + 2 * k;
                const __m128i pick = _mm_set_epi64x(0x0101010101010101LL * (s0 + 1), 0x0101010101010101LL * s0);
                const __m256i scale = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, pick));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(scale, p16));
            }
            q8 += 128;
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum_float_8(acc);
}

// ---- activation quantizers -------------------------------------------------------------------

inline float hmax_float_8(__m256 x) {
    __m128 m = _mm_max_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

// roundf semantics (halves away from zero), which _mm256_round_ps has no mode for: truncate, then step
// one away from zero where the exact remainder is at least one half.
inline __m256 round_half_away(__m256 v) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
    const __m256 away = _mm256_or_ps(_mm256_and_ps(v, sign), _mm256_set1_ps(1.0f));
    return _mm256_add_ps(t, _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ), away));
}

// Four vectors of 8 int32 (each within int8 range) -> 32 int8 in element order.
inline __m256i pack_i32_to_i8(__m256i i0, __m256i i1, __m256i i2, __m256i i3) {
    const __m256i a = _mm256_packs_epi32(i0, i1);
    const __m256i b = _mm256_packs_epi32(i2, i3);
    // The packs work within 128-bit lanes; the permute restores element order.
    return _mm256_permutevar8x32_epi32(_mm256_packs_epi16(a, b), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// Shared by Q8_0 and Q8_1: quantizes 32 floats like quantize_row_q8_0_ref; returns d and the level sum.
inline float quantize_block_q8(const float* x, int8_t* qs, int* sum) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int k = 0; k < 4; ++k) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[k]));
    }
    const float d = hmax_float_8(amax) / 127;
    const __m256 id = _mm256_set1_ps(d ? 1.0f / d : 0.0f);
    __m256i q[4];
    for (int k = 0; k < 4; ++k) q[k] = _mm256_cvtps_epi32(round_half_away(_mm256_mul_ps(v[k], id)));
    if (sum) *sum = hsum_i32_8(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs), pack_i32_to_i8(q[0], q[1], q[2], q[3]));
    return d;
}

void quantize_row_q8_0_avx2(const float* src, void* dst, int64_t n) {
    MF_ASSERT(n % QK8_0 == 0);
    block_q8_0* y = static_cast<block_q8_0*>(dst);
    for (int64_t i = 0; i < n / QK8_0; ++i) y[i].d = fp32_to_fp16(quantize_block_q8(src + i * QK8_0, y[i].qs, nullptr));
}

void quantize_row_q8_1_avx2(const float* src, void* dst, int64_t n) {
    MF_ASSERT(n % QK8_1 == 0);
    block_q8_1* y = static_cast<block_q8_1*>(dst);
    for (int64_t i = 0; i < n / QK8_1; ++i) {
        int sum = 0;
        const float d = quantize_block_q8(src + i * QK8_1, y[i].qs, &sum);
        y[i].d = fp32_to_fp16(d);
        y[i].s = fp32_to_fp16(float(sum) * d);
    }
}

// Like quantize_row_q8_K_ref, including its choice of the first element of largest magnitude as the
// one that maps to -127, and its ties-to-even rounding.
void quantize_row_q8_K_avx2(const float* src, void* dst, int64_t n) {
    MF_ASSERT(n % QK_K == 0);
    block_q8_K* y = static_cast<block_q8_K*>(dst);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float* x = src + i * QK_K;
        __m256 vmax = _mm256_setzero_ps();
        for (int j = 0; j < QK_K; j += 8) vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
        const float amax = hmax_float_8(vmax);
        if (!amax) {
            std::memset(&y[i], 0, sizeof(block_q8_K));
            continue;
        }
        const __m256 vamax = _mm256_set1_ps(amax);
        float max = 0;
        for (int j = 0; j < QK_K; j += 8) {
            const __m256 v = _mm256_loadu_ps(x + j);
            const int hits = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, v), vamax, _CMP_EQ_OQ));
            if (hits) {
                max = x[j + __builtin_ctz(unsigned(hits))];
                break;
            }
        }
        const float iscale = -127.f / max;
        const __m256 vis = _mm256_set1_ps(iscale);
        for (int j = 0; j < QK_K; j += 32) {
            __m256i q[4];
            for (int k = 0; k < 4; ++k) {
                const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + j + 8 * k), vis);
                q[k] = _mm256_cvtps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            }
            y[i].bsums[j / 16] = int16_t(hsum_i32_8(_mm256_add_epi32(q[0], q[1])));
            y[i].bsums[j / 16 + 1] = int16_t(hsum_i32_8(_mm256_add_epi32(q[2], q[3])));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[i].qs + j), pack_i32_to_i8(q[0], q[1], q[2], q[3]));
        }
        y[i].d = 1 / iscale;
    }
}

}  // namespace

VecDotFn vec_dot_avx2(DType t) {
    switch (t) {
        case DType::F32: return vec_dot_f32_avx2;
#if defined(__F16C__)
        case DType::F16: return vec_dot_f16_f32_avx2;
#endif
        case DType::BF16: return vec_dot_bf16_f32_avx2;
        case DType::Q4_0: return vec_dot_q4_0_q8_0_avx2;
        case DType::Q4_1: return vec_dot_q4_1_q8_1_avx2;
        case DType::Q5_0: return vec_dot_q5_0_q8_0_avx2;
        case DType::Q5_1: return vec_dot_q5_1_q8_1_avx2;
        case DType::Q8_0: return vec_dot_q8_0_q8_0_avx2;
        case DType::Q4_K: return vec_dot_q4_K_q8_K_avx2;
        case DType::Q5_K: return vec_dot_q5_K_q8_K_avx2;
        case DType::Q6_K: return vec_dot_q6_K_q8_K_avx2;
        default: return nullptr;
    }
}

// Q4_K and Q6_K: the super-block's scales and unpacked quants serve the four columns; the integer
// sums are exact in any order, and each column's float steps are its single kernel's.
void vec_dot4_q4_K_q8_K_avx2(int64_t n, const void* w, const void* act, size_t stride, const float*, float* out) {
    MF_ASSERT(n % QK_K == 0);
    const block_q4_K* x = static_cast<const block_q4_K*>(w);
    const block_q8_K* y[4];
    for (int c = 0; c < 4; ++c) y[c] = row_at<block_q8_K>(act, stride, c);
    const __m256i m4 = _mm256_set1_epi8(0xF);
    __m256 acc[4];
    __m128 acc_m[4];
    for (int c = 0; c < 4; ++c) acc[c] = _mm256_setzero_ps(), acc_m[c] = _mm_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float xd = half_to_float(x[i].d), xdmin = half_to_float(x[i].dmin);
        const __m256i mins_and_scales = _mm256_cvtepu8_epi16(unpack_scales_mins_k4(x[i].scales));
        const __m128i sc128 = _mm256_castsi256_si128(mins_and_scales);
        const __m256i scales = _mm256_insertf128_si256(_mm256_castsi128_si256(sc128), sc128, 1);
        __m256i sumi[4];
        for (int c = 0; c < 4; ++c) {
            const float dmin = -y[c][i].d * xdmin;
            acc_m[c] = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(mins_dot_bsums(mins_and_scales, y[c][i].bsums)),
                                    acc_m[c]);
            sumi[c] = _mm256_setzero_si256();
        }
        for (int j = 0; j < QK_K / 64; ++j) {
            const __m256i scale_l = _mm256_shuffle_epi8(scales, broadcast_i16_mask(2 * j));
            const __m256i scale_h = _mm256_shuffle_epi8(scales, broadcast_i16_mask(2 * j + 1));
            const __m256i q4bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs + 32 * j));
            const __m256i q4l = _mm256_and_si256(q4bits, m4);
            const __m256i q4h = _mm256_and_si256(_mm256_srli_epi16(q4bits, 4), m4);
            for (int c = 0; c < 4; ++c) {
                const int8_t* q8 = y[c][i].qs + 64 * j;
                const __m256i q8l = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8));
                const __m256i q8h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8 + 32));
                const __m256i p16l = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(q4l, q8l));
                const __m256i p16h = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(q4h, q8h));
                sumi[c] = _mm256_add_epi32(sumi[c], _mm256_add_epi32(p16l, p16h));
            }
        }
        for (int c = 0; c < 4; ++c) {
            const float d = y[c][i].d * xd;
            acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[c]), acc[c]);
        }
    }
    for (int c = 0; c < 4; ++c) out[c] = hsum_float_8(acc[c]) + hsum_float_4(acc_m[c]);
}

void vec_dot4_q6_K_q8_K_avx2(int64_t n, const void* w, const void* act, size_t stride, const float*, float* out) {
    MF_ASSERT(n % QK_K == 0);
    const block_q6_K* x = static_cast<const block_q6_K*>(w);
    const block_q8_K* y[4];
    for (int c = 0; c < 4; ++c) y[c] = row_at<block_q8_K>(act, stride, c);
    const __m256i m32s = _mm256_set1_epi8(32);
    __m256 acc[4];
    for (int c = 0; c < 4; ++c) acc[c] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float xd = half_to_float(x[i].d);
        const uint8_t* ql = x[i].ql;
        const uint8_t* qh = x[i].qh;
        const __m128i scales = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales));
        __m256i sumi[4];
        for (int c = 0; c < 4; ++c) sumi[c] = _mm256_setzero_si256();
        for (int h = 0; h < QK_K / 128; ++h) {
            __m256i q6[4];
            unpack_q6_K_half(ql, qh, q6);
            ql += 64;
            qh += 32;
            for (int k = 0; k < 4; ++k) {
                const int s0 = 8 * h + 2 * k;
                const __m128i pick = _mm_set_epi64x(0x0101010101010101LL * (s0 + 1), 0x0101010101010101LL * s0);
                const __m256i scale = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, pick));
                for (int c = 0; c < 4; ++c) {
                    const __m256i q8k =
                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[c][i].qs + 128 * h + 32 * k));
                    const __m256i p16 =
                        _mm256_sub_epi16(_mm256_maddubs_epi16(q6[k], q8k), _mm256_maddubs_epi16(m32s, q8k));
                    sumi[c] = _mm256_add_epi32(sumi[c], _mm256_madd_epi16(scale, p16));
                }
            }
        }
        for (int c = 0; c < 4; ++c) {
            const float d = y[c][i].d * xd;
            acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[c]), acc[c]);
        }
    }
    for (int c = 0; c < 4; ++c) out[c] = hsum_float_8(acc[c]);
}

VecDotRows4Fn vec_dot_rows4_avx2(DType t) {
    switch (t) {
        case DType::Q4_0: return vec_dot_rows4_q4_0_q8_0_avx2;
        case DType::Q4_1: return vec_dot_rows4_q4_1_q8_1_avx2;
        case DType::Q5_0: return vec_dot_rows4_q5_0_q8_0_avx2;
        case DType::Q5_1: return vec_dot_rows4_q5_1_q8_1_avx2;
        default: return nullptr;
    }
}

VecDot4Fn vec_dot4_avx2(DType t) {
    switch (t) {
        case DType::Q4_0: return vec_dot4_q4_0_q8_0_avx2;
        case DType::Q4_1: return vec_dot4_q4_1_q8_1_avx2;
        case DType::Q5_0: return vec_dot4_q5_0_q8_0_avx2;
        case DType::Q5_1: return vec_dot4_q5_1_q8_1_avx2;
        case DType::Q8_0: return vec_dot4_q8_0_q8_0_avx2;
        case DType::Q4_K: return vec_dot4_q4_K_q8_K_avx2;
        case DType::Q6_K: return vec_dot4_q6_K_q8_K_avx2;
        default: return nullptr;
    }
}

FromFloatFn from_float_avx2(DType t) {
    switch (t) {
        case DType::Q8_0: return quantize_row_q8_0_avx2;
        case DType::Q8_1: return quantize_row_q8_1_avx2;
        case DType::Q8_K: return quantize_row_q8_K_avx2;
        default: return nullptr;
    }
}

}  // namespace mf

#else  // no AVX2/FMA in this build: the scalar kernels serve everywhere

namespace mf {

VecDotFn vec_dot_avx2(DType) { return nullptr; }
VecDot4Fn vec_dot4_avx2(DType) { return nullptr; }
VecDotRows4Fn vec_dot_rows4_avx2(DType) { return nullptr; }
FromFloatFn from_float_avx2(DType) { return nullptr; }

}  // namespace mf

#endif
