// CPU row-wise kernels on f32: RMS_NORM, ROPE (normal and NeoX pairing) and SOFT_MAX with an optional
// broadcast mask. Each row is reduced by one thread, so results do not depend on the thread count.
#include <cmath>
#include <cstring>

#include "core/common.h"
#include "core/cpu/cpu_ops.h"

namespace mf {

namespace {

bool is_f32(const Tensor* t) { return t && t->type == DType::F32; }

// Runs fn(i1, i2, i3, thread) for every row of dst, rows spread over the pool.
template <class Fn>
void for_each_row(CpuContext& ctx, const Tensor* dst, Fn&& fn) {
    ctx.pool.parallel_for(dst->nrows(), [&](int64_t begin, int64_t end, int thread) {
        for (int64_t r = begin; r < end; ++r) {
            int64_t i1, i2, i3;
            unravel_row(dst->ne, r, &i1, &i2, &i3);
            fn(i1, i2, i3, thread);
        }
    }, min_rows_per_chunk(dst->ne[0]));
}

// ---- RMS_NORM ------------------------------------------------------------------------------------

void compute_rms_norm(CpuContext& ctx, Tensor* dst) {
    const Tensor* a = dst->src[0];
    const int64_t ne0 = dst->ne[0];
    const float eps = dst->op_param_f(0);
    ctx.reserve_per_thread(size_t(ne0) * sizeof(float));
    for_each_row(ctx, dst, [&](int64_t i1, int64_t i2, int64_t i3, int thread) {
        float* x = reinterpret_cast<float*>(ctx.per_thread_scratch(thread));
        load_row_f32(DType::F32, tensor_at(a, 0, i1, i2, i3), a->nb[0], ne0, x);
        // The sum of squares in double, as ggml does: rows of 4096+ squares lose bits in f32.
        double sum = 0.0;
        for (int64_t i = 0; i < ne0; ++i) sum += double(x[i]) * double(x[i]);
        const float scale = 1.0f / std::sqrt(float(sum / double(ne0)) + eps);
        for (int64_t i = 0; i < ne0; ++i) x[i] *= scale;
        store_row_f32(DType::F32, x, tensor_at(dst, 0, i1, i2, i3), dst->nb[0], ne0);
    });
}

// ---- ROPE ----------------------------------------------------------------------------------------

// theta_i = pos * freq_scale * freq_base^(-2i / n_dims) for pair i. The inverse frequencies are
// computed once per op in double, and each token's angles in double, rather than ggml's running f32
// product, whose error grows with i and with the position.
void compute_rope(CpuContext& ctx, Tensor* dst) {
    const Tensor* a = dst->src[0];
    const Tensor* pos = dst->src[1];
    const Tensor* factors = dst->src[2];
    const int64_t ne0 = dst->ne[0];
    const int n_dims = dst->op_param_i(0);
    const bool neox = dst->op_param_i(1) == ROPE_NEOX;
    const double freq_base = dst->op_param_f(2);
    const double freq_scale = dst->op_param_f(3);
    const int n_pairs = n_dims / 2;

    double* inv_freq = static_cast<double*>(ctx.shared_scratch(size_t(n_pairs) * sizeof(double)));
    for (int i = 0; i < n_pairs; ++i) {
        inv_freq[i] = std::pow(freq_base, -2.0 * i / n_dims);
        if (factors) inv_freq[i] /= double(*reinterpret_cast<const float*>(tensor_at(factors, i, 0, 0, 0)));
    }

    // Per thread: cos and sin of the current token's angles, then one row in f32.
    ctx.reserve_per_thread(size_t(2 * n_pairs + ne0) * sizeof(float));
    ctx.pool.parallel_for(dst->nrows(), [&](int64_t begin, int64_t end, int thread) {
        float* cos_t = reinterpret_cast<float*>(ctx.per_thread_scratch(thread));
        float* sin_t = cos_t + n_pairs;
        float* x = sin_t + n_pairs;
        int64_t cached_token = -1;
        for (int64_t r = begin; r < end; ++r) {
            int64_t i1, i2, i3;
            unravel_row(dst->ne, r, &i1, &i2, &i3);
            if (i2 != cached_token) {
                int32_t p;
                std::memcpy(&p, tensor_at(pos, i2, 0, 0, 0), sizeof p);
                for (int i = 0; i < n_pairs; ++i) {
                    const double theta = double(p) * freq_scale * inv_freq[i];
                    cos_t[i] = float(std::cos(theta));
                    sin_t[i] = float(std::sin(theta));
                }
                cached_token = i2;
            }
            load_row_f32(DType::F32, tensor_at(a, 0, i1, i2, i3), a->nb[0], ne0, x);
            // Normal mode rotates adjacent pairs (2i, 2i+1); NeoX rotates (i, i + n_dims/2).
            const int stride = neox ? 1 : 2;
            const int partner = neox ? n_pairs : 1;
            for (int i = 0; i < n_pairs; ++i) {
                const int j = i * stride;
                const float x0 = x[j], x1 = x[j + partner];
                x[j] = x0 * cos_t[i] - x1 * sin_t[i];
                x[j + partner] = x0 * sin_t[i] + x1 * cos_t[i];
            }
            // Dimensions past n_dims pass through unchanged.
            store_row_f32(DType::F32, x, tensor_at(dst, 0, i1, i2, i3), dst->nb[0], ne0);
        }
    }, min_rows_per_chunk(ne0));
}

bool supports_rope(const Tensor* dst) {
    const Tensor* a = dst->src[0];
    const Tensor* pos = dst->src[1];
    if (!is_f32(a) || !is_f32(dst) || !same_shape(a, dst) || !pos || pos->type != DType::I32) return false;
    if (pos->ne[0] != a->ne[2] || pos->ne[1] != 1 || pos->ne[2] != 1 || pos->ne[3] != 1) return false;
    const int n_dims = dst->op_param_i(0);
    const int mode = dst->op_param_i(1);
    const Tensor* factors = dst->src[2];
    if (factors && (!is_f32(factors) || factors->ne[0] < n_dims / 2)) return false;
    return n_dims > 0 && n_dims % 2 == 0 && n_dims <= a->ne[0] && (mode == ROPE_NORMAL || mode == ROPE_NEOX);
}

// ---- SOFT_MAX ------------------------------------------------------------------------------------

// A row whose every entry is masked to -inf has no finite maximum; ggml returns NaN there. minfer
// returns zeros instead: such a row attends to nothing, and zeros keep NaN out of what follows.
void compute_soft_max(CpuContext& ctx, Tensor* dst) {
    const Tensor* a = dst->src[0];
    const Tensor* mask = dst->src[1];
    const int64_t ne0 = dst->ne[0];
    const float scale = dst->op_param_f(0);
    ctx.reserve_per_thread(size_t(2 * ne0) * sizeof(float));
    for_each_row(ctx, dst, [&](int64_t i1, int64_t i2, int64_t i3, int thread) {
        float* x = reinterpret_cast<float*>(ctx.per_thread_scratch(thread));
        load_row_f32(DType::F32, tensor_at(a, 0, i1, i2, i3), a->nb[0], ne0, x);
        if (mask) {
            float* m = x + ne0;
            load_row_f32(DType::F32, tensor_at(mask, 0, i1, i2 % mask->ne[2], i3 % mask->ne[3]), mask->nb[0], ne0, m);
            for (int64_t i = 0; i < ne0; ++i) x[i] = x[i] * scale + m[i];
        } else {
            for (int64_t i = 0; i < ne0; ++i) x[i] *= scale;
        }
        float max = -INFINITY;
        for (int64_t i = 0; i < ne0; ++i) max = x[i] > max ? x[i] : max;
        if (max == -INFINITY) {
            for (int64_t i = 0; i < ne0; ++i) x[i] = 0.0f;
        } else {
            double sum = 0.0;
            for (int64_t i = 0; i < ne0; ++i) {
                x[i] = std::exp(x[i] - max);
                sum += x[i];
            }
            const float inv_sum = float(1.0 / sum);
            for (int64_t i = 0; i < ne0; ++i) x[i] *= inv_sum;
        }
        store_row_f32(DType::F32, x, tensor_at(dst, 0, i1, i2, i3), dst->nb[0], ne0);
    });
}

bool supports_soft_max(const Tensor* dst) {
    const Tensor* a = dst->src[0];
    const Tensor* mask = dst->src[1];
    if (!is_f32(a) || !is_f32(dst) || !same_shape(a, dst)) return false;
    if (!mask) return true;
    return is_f32(mask) && mask->ne[0] == a->ne[0] && mask->ne[1] >= a->ne[1] && mask->ne[2] > 0 &&
           mask->ne[3] > 0 && a->ne[2] % mask->ne[2] == 0 && a->ne[3] % mask->ne[3] == 0;
}

}  // namespace

bool supports_norm_rope(const Tensor* dst) {
    switch (dst->op) {
        case Op::RMS_NORM: return is_f32(dst->src[0]) && is_f32(dst) && same_shape(dst->src[0], dst);
        case Op::ROPE: return supports_rope(dst);
        case Op::SOFT_MAX: return supports_soft_max(dst);
        default: return false;
    }
}

void compute_norm_rope(CpuContext& ctx, Tensor* dst) {
    switch (dst->op) {
        case Op::RMS_NORM: compute_rms_norm(ctx, dst); break;
        case Op::ROPE: compute_rope(ctx, dst); break;
        case Op::SOFT_MAX: compute_soft_max(ctx, dst); break;
        default: MF_ASSERT_MSG(false, "compute_norm_rope: not a norm/rope/softmax op");
    }
}

}  // namespace mf
