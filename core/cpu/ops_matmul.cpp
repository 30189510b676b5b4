// CPU MUL_MAT: weight rows of any computable type dotted with f32 activation rows, through the dtype
// table's vec_dot (vec_dot4, four activation rows a weight-row pass, where the type has one).
// Activations are converted to the weight type's vec_dot_type once, then tiled.
#include <algorithm>
#include <vector>

#include "core/common.h"
#include "core/cpu/cpu_ops.h"
#include "core/quants.h"

namespace mf {

namespace {

// Tile of the output handled as one task: kTileRows weight rows against up to kTileCols activation
// rows. 16 rows of a 4096-wide Q4_0 matrix are ~37 KB and 16 Q8_0 activation rows ~70 KB, so a
// tile's operands stay in L2 while every pairing is dotted; at N = 1 the tile is a strip of rows.
constexpr int64_t kTileRows = 16;
constexpr int64_t kTileCols = 16;

struct MatmulShape {
    int64_t K, M, N;       // inner size, weight rows, activation rows
    int64_t C2, C3;        // batch dims of the result (= activations')
    int64_t r2, r3;        // broadcast ratios: weight batch = result batch / r
};

MatmulShape shape_of(const Tensor* dst) {
    const Tensor* w = dst->src[0];
    const Tensor* x = dst->src[1];
    return {w->ne[0], w->ne[1], x->ne[1], x->ne[2], x->ne[3], x->ne[2] / w->ne[2], x->ne[3] / w->ne[3]};
}

}  // namespace

bool supports_mul_mat(const Tensor* dst) {
    const Tensor* w = dst->src[0];
    const Tensor* x = dst->src[1];
    if (!w || !x || x->type != DType::F32 || dst->type != DType::F32) return false;
    if (!dtype_is_known(uint32_t(w->type))) return false;
    const auto& wt = dtype_traits(w->type);
    if (!wt.vec_dot || !w->rows_contiguous()) return false;
    const DType vt = wt.vec_dot_type;
    if (vt != DType::F32 && (!dtype_is_known(uint32_t(vt)) || !dtype_traits(vt).from_float)) return false;
    if (w->ne[0] != x->ne[0] || w->ne[0] % dtype_traits(vt).block_size != 0) return false;
    if (w->ne[2] == 0 || w->ne[3] == 0 || x->ne[2] % w->ne[2] != 0 || x->ne[3] % w->ne[3] != 0) return false;
    return dst->ne[0] == w->ne[1] && dst->ne[1] == x->ne[1] && dst->ne[2] == x->ne[2] && dst->ne[3] == x->ne[3];
}

const float* act_scales4(DType vt, const char* a, size_t stride, int64_t K) {
    if (vt != DType::Q8_0 && vt != DType::Q8_1) return nullptr;
    thread_local std::vector<float> scales;
    scales.resize(size_t(K / QK8_0) * (vt == DType::Q8_1 ? 8 : 4));
    (vt == DType::Q8_1 ? q8_1_scales4 : q8_0_scales4)(a, stride, K, scales.data());
    return scales.data();
}

void compute_mul_mat(CpuContext& ctx, Tensor* dst) {
    const Tensor* w = dst->src[0];
    const Tensor* x = dst->src[1];
    const MatmulShape s = shape_of(dst);
    if (s.M == 0 || s.N == 0 || s.C2 == 0 || s.C3 == 0) return;
    const auto& wt = dtype_traits(w->type);
    const DType vt = wt.vec_dot_type;
    const VecDotFn vec_dot = wt.vec_dot;
    const VecDot4Fn vec_dot4 = wt.vec_dot4;
    const VecDotRows4Fn vec_dot_rows4 = wt.vec_dot_rows4;

    // Phase 1: every activation row in vec_dot_type, once, shared by all threads. An f32 vec_dot
    // type with packed rows reads the activations in place.
    const bool in_place = vt == DType::F32 && x->nb[0] == sizeof(float);
    const size_t act_row_size = dtype_row_size(vt, s.K);
    const size_t vt_nb0 = dtype_traits(vt).type_size;
    const int64_t n_act_rows = s.N * s.C2 * s.C3;
    char* act = nullptr;
    if (!in_place) {
        act = static_cast<char*>(ctx.shared_scratch(act_row_size * size_t(n_act_rows)));
        const bool gather = x->nb[0] != sizeof(float) && vt != DType::F32;
        if (gather) ctx.reserve_per_thread(size_t(s.K) * sizeof(float));
        ctx.pool.parallel_for(n_act_rows, [&](int64_t begin, int64_t end, int thread) {
            for (int64_t r = begin; r < end; ++r) {
                int64_t n, c2, c3;
                unravel_row(x->ne, r, &n, &c2, &c3);
                const char* src = tensor_at(x, 0, n, c2, c3);
                char* out = act + size_t(r) * act_row_size;
                if (vt == DType::F32) {
                    load_row_f32(DType::F32, src, x->nb[0], s.K, reinterpret_cast<float*>(out));
                } else if (gather) {
                    float* tmp = reinterpret_cast<float*>(ctx.per_thread_scratch(thread));
                    load_row_f32(DType::F32, src, x->nb[0], s.K, tmp);
                    store_row_f32(vt, tmp, out, vt_nb0, s.K);
                } else {
                    store_row_f32(vt, reinterpret_cast<const float*>(src), out, vt_nb0, s.K);
                }
            }
        }, min_rows_per_chunk(s.K));
    }
    auto act_row = [&](int64_t n, int64_t c2, int64_t c3) -> const char* {
        if (in_place) return tensor_at(x, 0, n, c2, c3);
        return act + size_t((c3 * s.C2 + c2) * s.N + n) * act_row_size;
    };

    // Phase 2: tiles ordered batch, row tile, column tile, so the consecutive tasks a thread claims
    // share their weight rows and those stay in cache while the activation tiles stream past.
    const int64_t n_row_tiles = (s.M + kTileRows - 1) / kTileRows;
    const int64_t n_col_tiles = (s.N + kTileCols - 1) / kTileCols;
    const int64_t n_tasks = s.C2 * s.C3 * n_row_tiles * n_col_tiles;
    ctx.pool.parallel_for(n_tasks, [&](int64_t begin, int64_t end, int) {
        for (int64_t task = begin; task < end; ++task) {
            const int64_t col_tile = task % n_col_tiles;
            const int64_t row_tile = task / n_col_tiles % n_row_tiles;
            const int64_t batch = task / (n_col_tiles * n_row_tiles);
            const int64_t c2 = batch % s.C2, c3 = batch / s.C2;
            const int64_t m0 = row_tile * kTileRows, m1 = std::min(s.M, m0 + kTileRows);
            const int64_t n0 = col_tile * kTileCols, n1 = std::min(s.N, n0 + kTileCols);
            const char* w_batch = tensor_at(w, 0, 0, c2 / s.r2, c3 / s.r3);
            int64_t n = n0;
            if (vec_dot4 && !in_place) {
                // Four activation rows (adjacent in act) per weight row: its blocks unpacked once.
                for (; n + 4 <= n1; n += 4) {
                    const char* a = act_row(n, c2, c3);
                    const float* a_d = act_scales4(vt, a, act_row_size, s.K);  // once for the tile's rows
                    for (int64_t m = m0; m < m1; ++m) {
                        float v[4];
                        vec_dot4(s.K, w_batch + m * w->nb[1], a, act_row_size, a_d, v);
                        for (int c = 0; c < 4; ++c)
                            *reinterpret_cast<float*>(tensor_at(dst, 0, n + c, c2, c3) + m * dst->nb[0]) = v[c];
                    }
                }
            }
            for (; n < n1; ++n) {
                const char* a = act_row(n, c2, c3);
                char* out = tensor_at(dst, 0, n, c2, c3);
                int64_t m = m0;
                if (vec_dot_rows4) {
                    // Four weight rows a pass: the activation block loaded once for the four.
                    for (; m + 4 <= m1; m += 4) {
                        float v[4];
                        vec_dot_rows4(s.K, w_batch + m * w->nb[1], w->nb[1], a, v);
                        for (int r = 0; r < 4; ++r) *reinterpret_cast<float*>(out + (m + r) * dst->nb[0]) = v[r];
                    }
                }
                for (; m < m1; ++m) {
                    const float v = vec_dot(s.K, w_batch + m * w->nb[1], a);
                    *reinterpret_cast<float*>(out + m * dst->nb[0]) = v;
                }
            }
        }
    });
}

}  // namespace mf
