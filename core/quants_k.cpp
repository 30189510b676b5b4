// Scalar kernels for the 256-element K-quants: Q4_K, Q5_K, Q6_K (quantize, dequantize, dot with Q8_K),
// the Q8_K activation format, and dequantization of Q2_K / Q3_K so their files can be read.

// Dequantization must round exactly as llama.cpp's C reference does (one rounding per multiply and per
// add), so stop the compiler from fusing them into FMAs here; -march=native would otherwise do it.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/common.h"
#include "core/quants.h"

namespace mf {

namespace {

constexpr float GROUP_MAX_EPS = 1e-15f;

// Round to nearest, ties to even, by the float magic-number trick llama.cpp uses (|fval| < 2^22);
// using the same trick keeps quantized bytes identical to llama.cpp's.
inline int nearest_int(float fval) {
    const float val = fval + 12582912.f;
    int i;
    std::memcpy(&i, &val, sizeof(int));
    return (i & 0x007fffff) - 0x00400000;
}

// Fits x[0..n) ~ scale * (L - nmax) for a symmetric type with levels [-nmax, nmax - 1], searching 19
// candidate scales around -nmax / max and keeping the one with the least error weighted by qw
// (or by x^2 when qw is null, rmse_type 1). Returns the scale; L gets the offset levels [0, 2 nmax).
float make_qx_quants(int n, int nmax, const float* x, int8_t* L, const float* qw) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        const float ax = std::fabs(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        const int l = std::max(-nmax, std::min(nmax - 1, nearest_int(iscale * x[i])));
        L[i] = int8_t(l + nmax);
        const float w = qw ? qw[i] : x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            const int l = std::max(-nmax, std::min(nmax - 1, nearest_int(iscale * x[i])));
            const float w = qw ? qw[i] : x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) {
                L[i] = int8_t(nmax + std::max(-nmax, std::min(nmax - 1, nearest_int(iscale * x[i]))));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

// Fits x[0..n) ~ scale * L - the_min with L in [0, nmax] (an asymmetric type), trying nstep + 1 scales
// from (nmax + rmin) / range in rdelta steps and solving the weighted least squares for scale and min
// at each. Returns the scale; *the_min gets the (non-negative) offset.
float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                       uint8_t* Laux, float rmin, float rdelta, int nstep, bool use_mad) {
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        const float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        const int l = nearest_int(iscale * (x[i] - min));
        L[i] = uint8_t(std::max(0, std::min(nmax, l)));
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            const int l = std::max(0, std::min(nmax, nearest_int(iscale * (x[i] - min))));
            Laux[i] = uint8_t(l);
            const float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? std::fabs(diff) : diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                for (int i = 0; i < n; ++i) L[i] = Laux[i];
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

// Q4_K / Q5_K scale packing: sub-blocks 0-3 keep scale and min in the low 6 bits of bytes j and j + 4;
// sub-blocks 4-7 keep their low 4 bits in the nibbles of byte j + 4 and their top 2 bits in the spare
// top bits of bytes j - 4 (scale) and j (min).
inline void get_scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = uint8_t((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

inline void set_scale_min_k4(int j, uint8_t ls, uint8_t lm, uint8_t* q) {
    if (j < 4) {
        q[j] = ls;
        q[j + 4] = lm;
    } else {
        q[j + 4] = uint8_t((ls & 0xF) | ((lm & 0xF) << 4));
        q[j - 4] |= uint8_t((ls >> 4) << 6);
        q[j] |= uint8_t((lm >> 4) << 6);
    }
}

// Shared by Q4_K (nmax 15) and Q5_K (nmax 31): per-sub-block scale and min by make_qkx2_quants,
// both re-quantized to 6 bits against the block's largest, then the levels recomputed against the
// rounded scales. Writes d, dmin, scales and the 256 levels into L.
template <typename Block>
void quantize_scales_mins_k(const float* x, Block* y, uint8_t* L, int nmax, float rmin, int nstep) {
    uint8_t Laux[32];
    float weights[32], mins[QK_K / 32], scales[QK_K / 32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 32; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = std::sqrt(sum_x2 / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
        scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f,
                                     nstep, false);
        max_scale = std::max(max_scale, scales[j]);
        max_min = std::max(max_min, mins[j]);
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    std::memset(y->scales, 0, K_SCALE_SIZE);
    for (int j = 0; j < QK_K / 32; ++j) {
        const uint8_t ls = uint8_t(std::min(63, nearest_int(inv_scale * scales[j])));
        const uint8_t lm = uint8_t(std::min(63, nearest_int(inv_min * mins[j])));
        set_scale_min_k4(j, ls, lm, y->scales);
    }
    y->d = fp32_to_fp16(max_scale / 63.f);
    y->dmin = fp32_to_fp16(max_min / 63.f);
    for (int j = 0; j < QK_K / 32; ++j) {
        uint8_t sc, m;
        get_scale_min_k4(j, y->scales, &sc, &m);
        const float d = fp16_to_fp32(y->d) * sc;
        if (!d) continue;
        const float dm = fp16_to_fp32(y->dmin) * m;
        for (int ii = 0; ii < 32; ++ii) {
            const int l = nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = uint8_t(std::max(0, std::min(nmax, l)));
        }
    }
}

}  // namespace

// ---- Q4_K ------------------------------------------------------------------------------------

void quantize_row_q4_K_ref(const float* src, void* dst, int64_t n) {
    MF_ASSERT(n % QK_K == 0);
    block_q4_K* y = static_cast<block_q4_K*>(dst);
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float* x = src + i * QK_K;
        quantize_scales_mins_k(x, &y[i], L, 15, -1.f, 20);
        uint8_t* q = y[i].qs;
        for (int j = 0; j < QK_K; j += 64) {
            for (int l = 0; l < 32; ++l) q[l] = uint8_t(L[j + l] | (L[j + l + 32] << 4));
            q += 32;
        }
    }
}

void dequantize_row_q4_K(const void* src, float* dst, int64_t n) {
    MF_ASSERT(n % QK_K == 0);
    const block_q4_K* x = static_cast<const block_q4_K*>(src);
    float* y = dst;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const uint8_t* q = x[i].qs;
        const float d = fp16_to_fp32(x[i].d);
        const float min = fp16_to_fp32(x[i].dmin);
        for (int is = 0; is < QK_K / 32; is += 2) {
            uint8_t sc, m;
            get_scale_min_k4(is, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; ++l) *y++ = d1 * float(q[l] & 0xF) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * float(q[l] >> 4) - m2;
            q += 32;
        }
    }
}

// The min term needs only the Q8_K group sums: sum_l m * q8[l] = m * (bsums[2j] + bsums[2j + 1]).
float vec_dot_q4_K_q8_K_ref(int64_t n, const void* w, const void* act) {
    MF_ASSERT(n % QK_K == 0);
    const block_q4_K* x = static_cast<const block_q4_K*>(w);
    const block_q8_K* y = static_cast<const block_q8_K*>(act);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        int sumi = 0, summ = 0;
        for (int j = 0; j < QK_K / 32; ++j) {
            uint8_t sc, m;
            get_scale_min_k4(j, x[i].scales, &sc, &m);
            summ += m * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
            const uint8_t* q4 = x[i].qs + 32 * (j / 2);
            const int8_t* q8 = y[i].qs + 32 * j;
            const int shift = 4 * (j % 2);
            int isum = 0;
            for (int l = 0; l < 32; ++l) isum += ((q4[l] >> shift) & 0xF) * q8[l];
            sumi += sc * isum;
        }
        const float d = y[i].d * fp16_to_fp32(x[i].d);
        const float dmin = y[i].d * fp16_to_fp32(x[i].dmin);
        sum += d * float(sumi) - dmin * float(summ);
    }
    return sum;
}

// ---- Q5_K ------------------------------------------------------------------------------------

void quantize_row_q5_K_ref(const float* src, void* dst, int64_t n) {
    MF_ASSERT(n % QK_K == 0);
    block_q5_K* y = static_cast<block_q5_K*>(dst);
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float* x = src + i * QK_K;
        quantize_scales_mins_k(x, &y[i], L, 31, -0.5f, 15);
        uint8_t* qh = y[i].qh;
        uint8_t* ql = y[i].qs;
        std::memset(qh, 0, QK_K / 8);
        uint8_t m1 = 1, m2 = 2;
        for (int j = 0; j < QK_K; j += 64) {
            for (int l = 0; l < 32; ++l) {
                int l1 = L[j + l];
                if (l1 > 15) {
                    l1 -= 16;
                    qh[l] |= m1;
                }
                int l2 = L[j + l + 32];
                if (l2 > 15) {
                    l2 -= 16;
                    qh[l] |= m2;
                }
                ql[l] = uint8_t(l1 | (l2 << 4));
            }
            m1 <<= 2;
            m2 <<= 2;
            ql += 32;
        }
    }
}

void dequantize_row_q5_K(const void* src, float* dst, int64_t n) {
    MF_ASSERT(n % QK_K == 0);
    const block_q5_K* x = static_cast<const block_q5_K*>(src);
    float* y = dst;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const uint8_t* ql = x[i].qs;
        const uint8_t* qh = x[i].qh;
        const float d = fp16_to_fp32(x[i].d);
        const float min = fp16_to_fp32(x[i].dmin);
        uint8_t u1 = 1, u2 = 2;
        for (int is = 0; is < QK_K / 32; is += 2) {
            uint8_t sc, m;
            get_scale_min_k4(is, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; ++l) *y++ = d1 * float((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * float((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
            ql += 32;
            u1 <<= 2;
            u2 <<= 2;
        }
    }
}

float vec_dot_q5_K_q8_K_ref(int64_t n, const void* w, const void* act) {
    MF_ASSERT(n % QK_K == 0);
    const block_q5_K* x = static_cast<const block_q5_K*>(w);
    const block_q8_K* y = static_cast<const block_q8_K*>(act);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        int sumi = 0, summ = 0;
        for (int j = 0; j < QK_K / 32; ++j) {
            uint8_t sc, m;
            get_scale_min_k4(j, x[i].scales, &sc, &m);
            summ += m * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
            const uint8_t* ql = x[i].qs + 32 * (j / 2);
            const int8_t* q8 = y[i].qs + 32 * j;
            const int shift = 4 * (j % 2);
            int isum = 0;
            for (int l = 0; l < 32; ++l) {
                const int q = ((ql[l] >> shift) & 0xF) | (((x[i].qh[l] >> j) & 1) << 4);
                isum += q * q8[l];
            }
            sumi += sc * isum;
        }
        const float d = y[i].d * fp16_to_fp32(x[i].d);
        const float dmin = y[i].d * fp16_to_fp32(x[i].dmin);
        sum += d * float(sumi) - dmin * float(summ);
    }
    return sum;
}

// ---- Q6_K ------------------------------------------------------------------------------------

void quantize_row_q6_K_ref(const float* src, void* dst, int64_t n) {
    MF_ASSERT(n % QK_K == 0);
    block_q6_K* y = static_cast<block_q6_K*>(dst);
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float* x = src + i * QK_K;
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < QK_K / 16; ++ib) {
            scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, nullptr);
            if (std::fabs(scales[ib]) > max_abs_scale) {
                max_abs_scale = std::fabs(scales[ib]);
                max_scale = scales[ib];
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            std::memset(&y[i], 0, sizeof(block_q6_K));
            continue;
        }
        const float iscale = -128.f / max_scale;
        y[i].d = fp32_to_fp16(1 / iscale);
        for (int ib = 0; ib < QK_K / 16; ++ib) y[i].scales[ib] = int8_t(std::min(127, nearest_int(iscale * scales[ib])));
        for (int j = 0; j < QK_K / 16; ++j) {
            const float d = fp16_to_fp32(y[i].d) * y[i].scales[j];
            if (!d) continue;
            for (int ii = 0; ii < 16; ++ii) {
                const int l = nearest_int(x[16 * j + ii] / d);
                L[16 * j + ii] = int8_t(std::max(-32, std::min(31, l)) + 32);
            }
        }
        uint8_t* ql = y[i].ql;
        uint8_t* qh = y[i].qh;
        for (int j = 0; j < QK_K; j += 128) {
            for (int l = 0; l < 32; ++l) {
                const uint8_t q1 = L[j + l] & 0xF;
                const uint8_t q2 = L[j + l + 32] & 0xF;
                const uint8_t q3 = L[j + l + 64] & 0xF;
                const uint8_t q4 = L[j + l + 96] & 0xF;
                ql[l] = uint8_t(q1 | (q3 << 4));
                ql[l + 32] = uint8_t(q2 | (q4 << 4));
                qh[l] = uint8_t((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                ((L[j + l + 96] >> 4) << 6));
            }
            ql += 64;
            qh += 32;
        }
    }
}

void dequantize_row_q6_K(const void* src, float* dst, int64_t n) {
    MF_ASSERT(n % QK_K == 0);
    const block_q6_K* x = static_cast<const block_q6_K*>(src);
    float* y = dst;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = fp16_to_fp32(x[i].d);
        const uint8_t* ql = x[i].ql;
        const uint8_t* qh = x[i].qh;
        const int8_t* sc = x[i].scales;
        for (int h = 0; h < QK_K / 128; ++h) {
            for (int l = 0; l < 32; ++l) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * sc[is + 0] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
            y += 128;
            ql += 64;
            qh += 32;
            sc += 8;
        }
    }
}

float vec_dot_q6_K_q8_K_ref(int64_t n, const void* w, const void* act) {
    MF_ASSERT(n % QK_K == 0);
    const block_q6_K* x = static_cast<const block_q6_K*>(w);
    const block_q8_K* y = static_cast<const block_q8_K*>(act);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        int sumi = 0;
        for (int h = 0; h < QK_K / 128; ++h) {
            const uint8_t* ql = x[i].ql + 64 * h;
            const uint8_t* qh = x[i].qh + 32 * h;
            const int8_t* sc = x[i].scales + 8 * h;
            const int8_t* q8 = y[i].qs + 128 * h;
            for (int l = 0; l < 32; ++l) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                sumi += sc[is + 0] * q1 * q8[l] + sc[is + 2] * q2 * q8[l + 32] + sc[is + 4] * q3 * q8[l + 64] +
                        sc[is + 6] * q4 * q8[l + 96];
            }
        }
        sum += fp16_to_fp32(x[i].d) * y[i].d * float(sumi);
    }
    return sum;
}

// ---- Q8_K ------------------------------------------------------------------------------------

void quantize_row_q8_K_ref(const float* src, void* dst, int64_t n) {
    MF_ASSERT(n % QK_K == 0);
    block_q8_K* y = static_cast<block_q8_K*>(dst);
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float* x = src + i * QK_K;
        float max = 0, amax = 0;
        for (int j = 0; j < QK_K; ++j) {
            const float ax = std::fabs(x[j]);
            if (ax > amax) {
                amax = ax;
                max = x[j];
            }
        }
        if (!amax) {
            std::memset(&y[i], 0, sizeof(block_q8_K));
            continue;
        }
        // -127 rather than -128 keeps every level in [-127, 127], as llama.cpp's AVX dots require.
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; ++j) y[i].qs[j] = int8_t(std::min(127, nearest_int(iscale * x[j])));
        for (int j = 0; j < QK_K / 16; ++j) {
            int sum = 0;
            for (int ii = 0; ii < 16; ++ii) sum += y[i].qs[j * 16 + ii];
            y[i].bsums[j] = int16_t(sum);
        }
        y[i].d = 1 / iscale;
    }
}

void dequantize_row_q8_K(const void* src, float* dst, int64_t n) {
    MF_ASSERT(n % QK_K == 0);
    const block_q8_K* x = static_cast<const block_q8_K*>(src);
    for (int64_t i = 0; i < n / QK_K; ++i) {
        for (int j = 0; j < QK_K; ++j) dst[i * QK_K + j] = x[i].d * x[i].qs[j];
    }
}

// ---- Q2_K, Q3_K: read-only (dequantize), their layouts are private to this file ----------------

namespace {

struct block_q2_K {
    uint8_t scales[QK_K / 16];  // low nibble scale, high nibble min, per 16 elements
    uint8_t qs[QK_K / 4];       // 2-bit levels
    uint16_t d;
    uint16_t dmin;
};
static_assert(sizeof(block_q2_K) == 84, "block_q2_K layout");

struct block_q3_K {
    uint8_t hmask[QK_K / 8];  // high (third) bit of each level
    uint8_t qs[QK_K / 4];     // low 2 bits
    uint8_t scales[12];       // 16 six-bit signed scales (offset 32)
    uint16_t d;
};
static_assert(sizeof(block_q3_K) == 110, "block_q3_K layout");

}  // namespace

void dequantize_row_q2_K(const void* src, float* dst, int64_t n) {
    MF_ASSERT(n % QK_K == 0);
    const block_q2_K* x = static_cast<const block_q2_K*>(src);
    float* y = dst;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = fp16_to_fp32(x[i].d);
        const float min = fp16_to_fp32(x[i].dmin);
        const uint8_t* q = x[i].qs;
        int is = 0;
        for (int h = 0; h < QK_K / 128; ++h) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int half = 0; half < 2; ++half) {
                    const uint8_t sc = x[i].scales[is++];
                    const float dl = d * (sc & 0xF), ml = min * (sc >> 4);
                    for (int l = 0; l < 16; ++l) *y++ = dl * float((q[l + 16 * half] >> shift) & 3) - ml;
                }
            }
            q += 32;
        }
    }
}

void dequantize_row_q3_K(const void* src, float* dst, int64_t n) {
    MF_ASSERT(n % QK_K == 0);
    const block_q3_K* x = static_cast<const block_q3_K*>(src);
    const uint32_t kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
    float* y = dst;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d_all = fp16_to_fp32(x[i].d);
        const uint8_t* q = x[i].qs;
        const uint8_t* hm = x[i].hmask;
        // Unpack the 16 six-bit scales: low nibbles from bytes 0-7, top 2 bits from bytes 8-11.
        uint32_t aux[4];
        std::memcpy(aux, x[i].scales, 12);
        const uint32_t tmp = aux[2];
        aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
        aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
        aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4);
        aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
        int8_t scales[16];
        std::memcpy(scales, aux, 16);
        int is = 0;
        uint8_t m = 1;
        for (int h = 0; h < QK_K / 128; ++h) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int half = 0; half < 2; ++half) {
                    const float dl = d_all * float(scales[is++] - 32);
                    for (int l = 16 * half; l < 16 * half + 16; ++l) {
                        *y++ = dl * float(((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4));
                    }
                }
                m <<= 1;
            }
            q += 32;
        }
    }
}

}  // namespace mf
