// CPU element-wise kernels on f32: ADD and MUL with broadcasting, SCALE, SILU, GELU, the gated
// SWIGLU / GEGLU, and CONCAT. Any byte strides are accepted; packed rows take a vectorizable loop.
#include <cmath>
#include <cstring>

#include "core/common.h"
#include "core/cpu/cpu_ops.h"

namespace mf {

namespace {

inline float silu_f32(float x) { return x / (1.0f + std::exp(-x)); }

// ggml's tanh approximation of GELU, computed directly rather than through ggml's f16 lookup table.
inline float gelu_f32(float x) {
    constexpr float sqrt_2_over_pi = 0.79788456080286535587989211986876f;
    constexpr float coef_a = 0.044715f;
    return 0.5f * x * (1.0f + std::tanh(sqrt_2_over_pi * x * (1.0f + coef_a * x * x)));
}

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

// dst = f(src0) element by element.
template <class F>
void unary_rows(CpuContext& ctx, Tensor* dst, F f) {
    const Tensor* a = dst->src[0];
    const int64_t ne0 = dst->ne[0];
    const bool packed = a->nb[0] == sizeof(float) && dst->nb[0] == sizeof(float);
    for_each_row(ctx, dst, [&](int64_t i1, int64_t i2, int64_t i3) {
        const char* x = tensor_at(a, 0, i1, i2, i3);
        char* y = tensor_at(dst, 0, i1, i2, i3);
        if (packed) {
            const float* xf = reinterpret_cast<const float*>(x);
            float* yf = reinterpret_cast<float*>(y);
            for (int64_t i = 0; i < ne0; ++i) yf[i] = f(xf[i]);
        } else {
            for (int64_t i = 0; i < ne0; ++i) store_f32(y + i * dst->nb[0], f(load_f32(x + i * a->nb[0])));
        }
    });
}

// dst = f(src0, src1) element by element, src1 repeated along every dim where it is smaller.
template <class F>
void binary_rows(CpuContext& ctx, Tensor* dst, F f) {
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
            for (int64_t i = 0; i < ne0; ++i) zf[i] = f(xf[i], yf[i]);
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
        case Op::SWIGLU: binary_rows(ctx, dst, [](float x, float y) { return silu_f32(x) * y; }); break;
        case Op::GEGLU: binary_rows(ctx, dst, [](float x, float y) { return gelu_f32(x) * y; }); break;
        case Op::SCALE: {
            const float s = dst->op_param_f(0);
            unary_rows(ctx, dst, [s](float x) { return x * s; });
            break;
        }
        case Op::SILU: unary_rows(ctx, dst, silu_f32); break;
        case Op::GELU: unary_rows(ctx, dst, gelu_f32); break;
        case Op::CONCAT: compute_concat(ctx, dst); break;
        default: MF_ASSERT_MSG(false, "compute_elementwise: not an element-wise op");
    }
}

}  // namespace mf
