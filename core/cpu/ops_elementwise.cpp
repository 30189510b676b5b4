// CPU element-wise kernels on f32: ADD and MUL with broadcasting, SCALE, SILU, GELU, the gated
// SWIGLU / GEGLU, and CONCAT. Any byte strides are accepted; packed rows take a vectorizable loop.
#include <cmath>
#include <cstring>
#include <type_traits>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define MF_ELEMENTWISE_AVX2 1
#endif

#include "core/common.h"
#include "core/cpu/cpu_ops.h"

namespace mf {

namespace {

constexpr float kSqrt2OverPi = 0.79788456080286535587989211986876f;
constexpr float kGeluCoefA = 0.044715f;

inline float silu_f32(float x) { return x / (1.0f + std::exp(-x)); }

// ggml's tanh approximation of GELU, 0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3),
// computed directly (not through ggml's f16 lookup table) in the equal form x / (1 + exp(-2u)),
// which has no cancellation in 1 + tanh(u) for negative x and shares the exponential with SiLU.
inline float gelu_f32(float x) {
    const float u = kSqrt2OverPi * x * (1.0f + kGeluCoefA * x * x);
    return x / (1.0f + std::exp(-2.0f * u));
}

// Element-wise kernels with no vector form pass this as their vector functor.
struct NoVec {};

#if MF_ELEMENTWISE_AVX2
// exp of 8 floats (Cephes' expf: n = round(x log2 e), a degree-6 polynomial on the remainder, then
// 2^n in the exponent bits), within 2 ulp of libm's over the clamped range; arguments are clamped to
// [-87.3, 88.3] (2^n stays a normal float), so the result is finite (callers only divide by 1 + exp).
inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    const __m256 y = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// x / (1 + exp(-z)): SiLU for z = x, GELU for z = 2u. A NaN x stays NaN (the clamp inside exp8 does
// not reach the numerator).
inline __m256 x_sigmoid8(__m256 x, __m256 z) {
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(x, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), z))));
}
inline __m256 silu8(__m256 x) { return x_sigmoid8(x, x); }
inline __m256 gelu8(__m256 x) {
    const __m256 x2 = _mm256_mul_ps(x, x);
    const __m256 u = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(kSqrt2OverPi), x),
                                   _mm256_fmadd_ps(_mm256_set1_ps(kGeluCoefA), x2, _mm256_set1_ps(1.0f)));
    return x_sigmoid8(x, _mm256_add_ps(u, u));
}
#endif

inline float load_f32(const char* p) {
    float v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

inline void store_f32(char* p, float v) { std::memcpy(p, &v, sizeof v); }

bool is_f32(const Tensor* t) { return t && t->type == DType::F32; }

// Runs fn(i1, i2, i3) for every row of dst, rows spread over the pool.
template <class Fn>
void for_each_row(CpuContext& ctx, const Tensor* dst, Fn&& fn) {
    ctx.pool.parallel_for(dst->nrows(), [&](int64_t begin, int64_t end, int) {
        for (int64_t r = begin; r < end; ++r) {
            int64_t i1, i2, i3;
            unravel_row(dst->ne, r, &i1, &i2, &i3);
            fn(i1, i2, i3);
        }
    }, min_rows_per_chunk(dst->ne[0]));
}

// dst = f(src0) element by element; packed rows 8 at a time through v where it has a vector form.
template <class F, class V = NoVec>
void unary_rows(CpuContext& ctx, Tensor* dst, F f, V v = {}) {
    const Tensor* a = dst->src[0];
    const int64_t ne0 = dst->ne[0];
    const bool packed = a->nb[0] == sizeof(float) && dst->nb[0] == sizeof(float);
    for_each_row(ctx, dst, [&](int64_t i1, int64_t i2, int64_t i3) {
        const char* x = tensor_at(a, 0, i1, i2, i3);
        char* y = tensor_at(dst, 0, i1, i2, i3);
        if (packed) {
            const float* xf = reinterpret_cast<const float*>(x);
            float* yf = reinterpret_cast<float*>(y);
            int64_t i = 0;
#if MF_ELEMENTWISE_AVX2
            if constexpr (!std::is_same_v<V, NoVec>)
                for (; i + 8 <= ne0; i += 8) _mm256_storeu_ps(yf + i, v(_mm256_loadu_ps(xf + i)));
#endif
            for (; i < ne0; ++i) yf[i] = f(xf[i]);
        } else {
            for (int64_t i = 0; i < ne0; ++i) store_f32(y + i * dst->nb[0], f(load_f32(x + i * a->nb[0])));
        }
    });
}

// dst = f(src0, src1) element by element, src1 repeated along every dim where it is smaller; rows of
// equal packed shape 8 at a time through v where it has a vector form.
template <class F, class V = NoVec>
void binary_rows(CpuContext& ctx, Tensor* dst, F f, V v = {}) {
    const Tensor* a = dst->src[0];
    const Tensor* b = dst->src[1];
    const int64_t ne0 = dst->ne[0];
    const int64_t b_ne0 = b->ne[0];
    const bool packed = a->nb[0] == sizeof(float) && b->nb[0] == sizeof(float) && dst->nb[0] == sizeof(float);
    for_each_row(ctx, dst, [&](int64_t i1, int64_t i2, int64_t i3) {
        const char* x = tensor_at(a, 0, i1, i2, i3);
        const char* y = tensor_at(b, 0, i1 % b->ne[1], i2 % b->ne[2], i3 % b->ne[3]);
        char* z = tensor_at(dst, 0, i1, i2, i3);
        if (packed && b_ne0 == ne0) {
            const float* xf = reinterpret_cast<const float*>(x);
            const float* yf = reinterpret_cast<const float*>(y);
            float* zf = reinterpret_cast<float*>(z);
            int64_t i = 0;
#if MF_ELEMENTWISE_AVX2
            if constexpr (!std::is_same_v<V, NoVec>)
                for (; i + 8 <= ne0; i += 8)
                    _mm256_storeu_ps(zf + i, v(_mm256_loadu_ps(xf + i), _mm256_loadu_ps(yf + i)));
#endif
            for (; i < ne0; ++i) zf[i] = f(xf[i], yf[i]);
        } else if (packed && b_ne0 == 1) {
            const float* xf = reinterpret_cast<const float*>(x);
            const float yv = load_f32(y);
            float* zf = reinterpret_cast<float*>(z);
            for (int64_t i = 0; i < ne0; ++i) zf[i] = f(xf[i], yv);
        } else {
            for (int64_t i = 0; i < ne0; ++i) {
                const float yv = load_f32(y + (i % b_ne0) * b->nb[0]);
                store_f32(z + i * dst->nb[0], f(load_f32(x + i * a->nb[0]), yv));
            }
        }
    });
}

void compute_concat(CpuContext& ctx, Tensor* dst) {
    const Tensor* a = dst->src[0];
    const Tensor* b = dst->src[1];
    const int dim = dst->op_param_i(0);
    const int64_t ne0 = dst->ne[0];
    // Copies n f32 values between rows of any element stride.
    auto copy = [](const char* src, size_t src_nb0, char* out, size_t out_nb0, int64_t n) {
        if (src_nb0 == sizeof(float) && out_nb0 == sizeof(float)) {
            std::memcpy(out, src, size_t(n) * sizeof(float));
            return;
        }
        for (int64_t i = 0; i < n; ++i) std::memcpy(out + i * out_nb0, src + i * src_nb0, sizeof(float));
    };
    for_each_row(ctx, dst, [&](int64_t i1, int64_t i2, int64_t i3) {
        char* out = tensor_at(dst, 0, i1, i2, i3);
        if (dim == 0) {
            copy(tensor_at(a, 0, i1, i2, i3), a->nb[0], out, dst->nb[0], a->ne[0]);
            copy(tensor_at(b, 0, i1, i2, i3), b->nb[0], out + a->ne[0] * dst->nb[0], dst->nb[0], b->ne[0]);
            return;
        }
        // Joined along an outer dim, a whole row comes from one source.
        int64_t idx[4] = {0, i1, i2, i3};
        const Tensor* src = a;
        if (idx[dim] >= a->ne[dim]) {
            idx[dim] -= a->ne[dim];
            src = b;
        }
        copy(tensor_at(src, 0, idx[1], idx[2], idx[3]), src->nb[0], out, dst->nb[0], ne0);
    });
}

bool supports_concat(const Tensor* dst) {
    const Tensor* a = dst->src[0];
    const Tensor* b = dst->src[1];
    if (!is_f32(a) || !is_f32(b) || !is_f32(dst)) return false;
    const int dim = dst->op_param_i(0);
    if (dim < 0 || dim >= MAX_DIMS) return false;
    for (int i = 0; i < MAX_DIMS; ++i) {
        const int64_t want = i == dim ? a->ne[i] + b->ne[i] : a->ne[i];
        if (dst->ne[i] != want || (i != dim && a->ne[i] != b->ne[i])) return false;
    }
    return true;
}

}  // namespace

bool supports_elementwise(const Tensor* dst) {
    const Tensor* a = dst->src[0];
    const Tensor* b = dst->src[1];
    switch (dst->op) {
        case Op::SCALE:
        case Op::SILU:
        case Op::GELU: return is_f32(a) && is_f32(dst) && same_shape(a, dst);
        case Op::ADD:
        case Op::MUL:
            if (!is_f32(a) || !is_f32(b) || !is_f32(dst) || !same_shape(a, dst)) return false;
            for (int i = 0; i < MAX_DIMS; ++i)
                if (b->ne[i] == 0 || a->ne[i] % b->ne[i] != 0) return false;
            return true;
        case Op::SWIGLU:
        case Op::GEGLU:
            return is_f32(a) && is_f32(b) && is_f32(dst) && same_shape(a, dst) && same_shape(b, dst);
        case Op::CONCAT: return supports_concat(dst);
        default: return false;
    }
}

void compute_elementwise(CpuContext& ctx, Tensor* dst) {
    switch (dst->op) {
        case Op::ADD: binary_rows(ctx, dst, [](float x, float y) { return x + y; }); break;
        case Op::MUL: binary_rows(ctx, dst, [](float x, float y) { return x * y; }); break;
#if MF_ELEMENTWISE_AVX2
        case Op::SWIGLU:
            binary_rows(ctx, dst, [](float x, float y) { return silu_f32(x) * y; },
                        [](__m256 x, __m256 y) { return _mm256_mul_ps(silu8(x), y); });
            break;
        case Op::GEGLU:
            binary_rows(ctx, dst, [](float x, float y) { return gelu_f32(x) * y; },
                        [](__m256 x, __m256 y) { return _mm256_mul_ps(gelu8(x), y); });
            break;
        case Op::SILU: unary_rows(ctx, dst, silu_f32, silu8); break;
        case Op::GELU: unary_rows(ctx, dst, gelu_f32, gelu8); break;
#else
        case Op::SWIGLU: binary_rows(ctx, dst, [](float x, float y) { return silu_f32(x) * y; }); break;
        case Op::GEGLU: binary_rows(ctx, dst, [](float x, float y) { return gelu_f32(x) * y; }); break;
        case Op::SILU: unary_rows(ctx, dst, silu_f32); break;
        case Op::GELU: unary_rows(ctx, dst, gelu_f32); break;
#endif
        case Op::SCALE: {
            const float s = dst->op_param_f(0);
            unary_rows(ctx, dst, [s](float x) { return x * s; });
            break;
        }
        case Op::CONCAT: compute_concat(ctx, dst); break;
        default: MF_ASSERT_MSG(false, "compute_elementwise: not an element-wise op");
    }
}

}  // namespace mf
